package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// issueTestCert makes a self-signed CA and a server certificate from it for names and
// 127.0.0.1, written as PEM files in dir: ca.pem, cert.pem, key.pem.
func issueTestCert(t *testing.T, dir string, names ...string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: names, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for path, b := range map[string]*pem.Block{
		caFile: {Type: "CERTIFICATE", Bytes: caDER}, certFile: {Type: "CERTIFICATE", Bytes: der},
		keyFile: {Type: "EC PRIVATE KEY", Bytes: kder},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

func certPool(t *testing.T, pemData []byte) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pemData) {
		t.Fatalf("no certificate in %q", pemData)
	}
	return p
}

// clientTo is an HTTP client that reaches every host name at addr (a test has no DNS),
// trusting roots.
func clientTo(addr string, roots *x509.CertPool) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
	}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// TestRunServesHTTPSWithStaticCert runs the command with a static certificate: HTTPS with
// HTTP/2 and HSTS, and the plain listener redirecting to it.
func TestRunServesHTTPSWithStaticCert(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "ok ", r.URL.Path, " ", r.Header.Get("X-Forwarded-Proto"))
	}))
	defer backend.Close()
	caFile, certFile, keyFile := issueTestCert(t, t.TempDir(), "bank.example")
	cfg := writeFile(t, "tls.yaml", fmt.Sprintf(`listen: {http: "127.0.0.1:0", https: "127.0.0.1:0"}
tls: {cert_file: %q, key_file: %q, redirect_http: true, hsts: {max_age: 1h}}
sites:
  - {name: idc1, weight: 1, backends: [%q]}
`, certFile, keyFile, backend.URL))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := newLogLines()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run", "-config", cfg}, io.Discard, logs) }()
	addrs := map[string]string{}
	for len(addrs) < 2 {
		e := logs.waitFor(t, "listening")
		addrs[e["scheme"].(string)] = e["addr"].(string)
	}
	caPEM, _ := os.ReadFile(caFile)

	c := clientTo(addrs["https"], certPool(t, caPEM))
	defer c.CloseIdleConnections()
	res, err := c.Get("https://bank.example/hello")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(body) != "ok /hello https" || res.ProtoMajor != 2 {
		t.Fatalf("%s %q, want HTTP/2 and ok /hello https", res.Proto, body)
	}
	if v := res.Header.Get("Strict-Transport-Security"); v != "max-age=3600" {
		t.Errorf("Strict-Transport-Security %q", v)
	}

	plain := clientTo(addrs["http"], nil)
	defer plain.CloseIdleConnections()
	res, err = plain.Get("http://bank.example/pay?x=1")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	_, port, _ := net.SplitHostPort(addrs["https"])
	if want := "https://bank.example:" + port + "/pay?x=1"; res.StatusCode != http.StatusPermanentRedirect || res.Header.Get("Location") != want {
		t.Errorf("plain listener: %d Location %q, want 308 %q", res.StatusCode, res.Header.Get("Location"), want)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestValidateTLSFiles checks that validate reads the TLS files and reports a broken one
// at its line, without any network.
func TestValidateTLSFiles(t *testing.T) {
	_, certFile, _ := issueTestCert(t, t.TempDir(), "bank.example")
	cfg := writeFile(t, "bad-tls.yaml", fmt.Sprintf(`listen: {https: "127.0.0.1:0"}
tls: {cert_file: %q, key_file: /nonexistent/key.pem}
sites:
  - {name: idc1, weight: 1, backends: ["https://127.0.0.1:1"], tls: {ca_file: /nonexistent/ca.pem}}
`, certFile))
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"validate", cfg}, &stdout, &stderr)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("validate: %v, want exit 1; stderr:\n%s", err, &stderr)
	}
	for _, want := range []string{cfg + ":2:18: tls.cert_file: open /nonexistent/key.pem", cfg + ":4:79: sites[0].tls.ca_file: open /nonexistent/ca.pem"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, &stderr)
		}
	}
}

// pebble runs the ACME test CA, github.com/letsencrypt/pebble/v2 (a Go tool of this
// module, built by the go command), as a child process on loopback. Its validation
// authority resolves every name through dnsAddr and validates HTTP-01 on httpPort and
// TLS-ALPN-01 on tlsPort, so it checks challenges against the proxy's real listeners.
type pebble struct {
	dir   string // the ACME directory URL
	root  []byte // PEM of the root that signs the certificates it issues
	tlsCA string // file of the CA of pebble's own HTTPS certificate (tls.acme.ca_root)
}

func startPebble(t *testing.T, dnsAddr string, httpPort, tlsPort int) *pebble {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go command to build pebble")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "tool", "-n", "pebble").Output()
	if err != nil {
		t.Fatalf("build pebble (go tool -n pebble): %v", err)
	}
	bin := strings.TrimSpace(string(out))

	dir := t.TempDir()
	caFile, certFile, keyFile := issueTestCert(t, dir, "pebble.test")
	listen, mgmt := freePort(t), freePort(t)
	conf, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt,
		"certificate": certFile, "privateKey": keyFile,
		"httpPort": httpPort, "tlsPort": tlsPort,
	}})
	confFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confFile, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", confFile, "-dnsserver", dnsAddr)
	// No random sleeps before validating, and no deliberately rejected nonces: the test is
	// about our side of the protocol.
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	var output lockedBuffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("pebble's output:\n%s", output.String())
		}
	})

	caPEM, _ := os.ReadFile(caFile)
	c := clientTo(mgmt, certPool(t, caPEM))
	defer c.CloseIdleConnections()
	// Pebble says nothing when it is ready; poll its management API, within a bound.
	deadline := time.Now().Add(time.Minute)
	for {
		res, err := c.Get("https://" + mgmt + "/roots/0")
		if err == nil {
			root, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return &pebble{dir: "https://" + listen + "/dir", root: root, tlsCA: caFile}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble not ready after a minute: %v\n%s", err, output.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freePort returns a loopback address nothing listens on (for pebble, which needs its
// addresses in its config).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startDNS serves DNS on 127.0.0.1, over TCP (which pebble's validation uses) and UDP on
// the same port, answering every A query with 127.0.0.1 and every other query with no
// records: all names are this machine.
func startDNS(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		for _, qq := range q.Question {
			if qq.Qtype == dns.TypeA {
				r.Answer = append(r.Answer, &dns.A{A: net.IPv4(127, 0, 0, 1),
					Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET}})
			}
		}
		w.WriteMsg(r)
	})
	for _, srv := range []*dns.Server{{Listener: ln, Handler: handler}, {PacketConn: pc, Handler: handler}} {
		started, served := make(chan struct{}), make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { defer close(served); srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { srv.Shutdown(); <-served })
	}
	return ln.Addr().String()
}

// messageHook is a zap core that signals each entry's message on a channel.
func messageHook(msgs chan<- string) zapcore.Core {
	enabled := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.DebugLevel)
	return zapcore.RegisterHooks(enabled, func(e zapcore.Entry) error {
		select {
		case msgs <- e.Message:
		default:
		}
		return nil
	})
}

// TestACMEWithPebble has the proxy obtain its certificate from a real ACME server
// (pebble), which validates the challenge against the proxy's own listeners over loopback:
// HTTP-01 on the plain listener (with the redirect to HTTPS on, which must not catch the
// challenge) and TLS-ALPN-01 on the TLS listener. A client that trusts only pebble's root
// then completes a handshake and a request through the proxy.
func TestACMEWithPebble(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs pebble")
	}
	const domain = "bank.spillway.test"
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "ok ", r.Host, " ", r.Header.Get("X-Forwarded-Proto"))
	}))
	defer backend.Close()
	dnsAddr := startDNS(t)

	for _, challenge := range []string{"http-01", "tls-alpn-01"} {
		t.Run(challenge, func(t *testing.T) {
			var ls listeners
			var err error
			if ls.http, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
				t.Fatal(err)
			}
			if ls.https, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
				t.Fatal(err)
			}
			_, httpPort := hostPort(ls.http.Addr())
			_, tlsPort := hostPort(ls.https.Addr())
			p := startPebble(t, dnsAddr, httpPort, tlsPort)

			path := writeFile(t, "acme.yaml", fmt.Sprintf(`listen: {http: "127.0.0.1:0", https: "127.0.0.1:0"}
tls:
  acme:
    domains: [%s]
    email: ops@spillway.test
    ca: %q
    ca_root: %q
    storage: %q
    challenges: [%s]
  redirect_http: true
sites:
  - {name: idc1, weight: 1, backends: [%q]}
`, domain, p.dir, p.tlsCA, t.TempDir(), challenge, backend.URL))
			msgs := make(chan string, 1000)
			log := zap.New(zapcore.NewTee(messageHook(msgs), zapcore.NewCore(
				zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&testLog{t: t}), zap.InfoLevel)))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			in, err := startInstance(ctx, instanceOptions{path: path, log: log, listen: listenTCP, ls: &ls})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- in.serve(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("serve: %v", err)
				}
			}()

			timeout := time.After(2 * time.Minute)
		wait:
			for {
				select {
				case m := <-msgs:
					switch m {
					case "certificates ready":
						break wait
					case "could not obtain certificates; retrying":
						t.Fatal("ACME failed (see the log)")
					}
				case <-timeout:
					t.Fatal("no certificate from pebble within 2 minutes")
				}
			}

			c := clientTo(ls.https.Addr().String(), certPool(t, p.root))
			defer c.CloseIdleConnections()
			res, err := c.Get("https://" + domain + "/hello")
			if err != nil {
				t.Fatalf("request over the ACME certificate: %v", err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if want := "ok " + domain + " https"; string(body) != want || res.ProtoMajor != 2 {
				t.Fatalf("%s %q, want HTTP/2 and %q", res.Proto, body, want)
			}
			if names := res.TLS.PeerCertificates[0].DNSNames; len(names) != 1 || names[0] != domain {
				t.Errorf("certificate for %v, want [%s]", names, domain)
			}
			// The plain listener still redirects everything else.
			plain := clientTo(ls.http.Addr().String(), nil)
			defer plain.CloseIdleConnections()
			res, err = plain.Get("http://" + domain + "/hello")
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusPermanentRedirect {
				t.Errorf("plain listener answered %d, want 308", res.StatusCode)
			}
		})
	}
}

// testLog writes log lines to the test's log while it runs.
type testLog struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// hostPort splits a listener's address into its host and port number (the ACME front's own
// moved to proxy/frontend with it).
func hostPort(a net.Addr) (string, int) {
	host, port, _ := net.SplitHostPort(a.String())
	n, _ := strconv.Atoi(port)
	return host, n
}
