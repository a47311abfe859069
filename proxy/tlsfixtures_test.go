package proxy_test

// Fixtures for the TLS tests: a throwaway certificate authority that issues server and
// client certificates for loopback, written as PEM files; and a proxy with an observed
// logger, served on plain and TLS listeners.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/frontend"
)

// testCA is a certificate authority for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	dir  string
}

var serial atomic.Int64

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), dir: t.TempDir()}
}

// pool is a CertPool holding only the CA.
func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// file writes the CA's certificate as PEM and returns its path.
func (ca *testCA) file(t *testing.T) string {
	t.Helper()
	p := filepath.Join(ca.dir, "ca-"+ca.cert.Subject.CommonName+".pem")
	if err := os.WriteFile(p, ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// issue makes a leaf certificate for cn, valid for the DNS names and 127.0.0.1, for
// servers (client false) or clients.
func (ca *testCA) issue(t *testing.T, cn string, client bool, names ...string) tls.Certificate {
	t.Helper()
	certPEM, keyPEM := ca.issuePEM(t, cn, client, names...)
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (ca *testCA) issuePEM(t *testing.T, cn string, client bool, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	usage := x509.ExtKeyUsageServerAuth
	if client {
		usage = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     names,
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// issueFiles writes a new leaf certificate and key into dir as cert.pem and key.pem
// (replacing what is there, through a rename each) and returns their paths.
func (ca *testCA) issueFiles(t *testing.T, dir, cn string, client bool, names ...string) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM := ca.issuePEM(t, cn, client, names...)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, f := range []struct {
		path string
		data []byte
	}{{keyFile, keyPEM}, {certFile, certPEM}} {
		tmp := f.path + ".tmp"
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

func discardLogger() *log.Logger { return log.New(io.Discard, "", 0) }

// loggedEnv is a running proxy whose log lines the test can read.
type loggedEnv struct {
	*env
	logs *observer.ObservedLogs
}

// startLoggedProxy is startProxy with an observed logger (level debug and up) given to
// Build and the Handler, and optionally a TLS listener too (tc non-nil): then url is the
// https:// one and client trusts roots.
func startLoggedProxy(t *testing.T, yaml string, tc *tls.Config, roots *x509.CertPool) *loggedEnv {
	t.Helper()
	cfg := mustConfig(t, yaml)
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	reg := balancer.NewRegistry()
	tbl, err := proxy.Build(cfg, proxy.Deps{Registry: reg, Log: log})
	if err != nil {
		t.Fatalf("proxy.Build: %v", err)
	}
	t.Cleanup(tbl.Close)
	h := proxy.NewHandler(tbl, log)
	var srv *http.Server
	if tc != nil {
		var hsts *configs.HSTS
		if cfg.TLS != nil {
			hsts = cfg.TLS.HSTS
		}
		srv = frontend.NewTLSServer(cfg, frontend.WithHSTS(h, hsts), tc, log)
	} else {
		srv = frontend.NewServer(cfg, h, log)
	}
	addr := serve(t, srv)
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	scheme := "http://"
	if tc != nil {
		scheme = "https://"
		tr.TLSClientConfig = &tls.Config{RootCAs: roots}
		tr.ForceAttemptHTTP2 = true
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &loggedEnv{env: &env{
		cfg: cfg, reg: reg, table: tbl, handler: h, srv: srv,
		addr:   addr,
		url:    scheme + addr,
		client: &http.Client{Transport: tr, Timeout: liveness},
		tr:     tr,
	}, logs: logs}
}
