package proxy_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/frontend"
)

// frontYAML is a config with a TLS listener for one site; the listener addresses are never
// bound (the tests serve on their own), and the certificate files are not read by Build.
func frontYAML(backend, extraTLS string) string {
	return fmt.Sprintf(`listen: {http: "127.0.0.1:0", https: "127.0.0.1:0"}
tls: {cert_file: c.pem, key_file: k.pem%s}
sites:
  - name: idc1
    weight: 1
    backends: [%q]
`, extraTLS, backend)
}

// handshake connects to addr with TLS, trusting roots, and returns the connection state.
func handshake(t *testing.T, addr string, c *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: liveness}, "tcp", addr, c)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.ConnectionState(), nil
}

// TestFrontTLS serves the proxy over TLS from static files: HTTP/2 by ALPN, HTTP/1.1 for
// clients that ask for it, TLS 1.2 at least, only AEAD suites, HSTS; and the certificate is
// reloaded when its files are swapped, with no restart.
func TestFrontTLS(t *testing.T) {
	b := nameBackend(t, "idc1")
	ca := newTestCA(t, "front-ca")
	dir := t.TempDir()
	certFile, keyFile := ca.issueFiles(t, dir, "first", false, "bank.example")
	core, logs := observer.New(zap.InfoLevel)
	reloader, err := frontend.NewCertReloader(certFile, keyFile, 0, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	e := startLoggedProxy(t, frontYAML(b.URL, ", hsts: {max_age: 8760h, include_subdomains: true}"),
		frontend.ServerTLSConfig(reloader.GetCertificate), ca.pool())

	t.Run("HTTP/2 with HSTS", func(t *testing.T) {
		resp, err := e.client.Get(e.url + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || string(body) != "idc1" {
			t.Fatalf("%s %d %q, want HTTP/2 200 idc1", resp.Proto, resp.StatusCode, body)
		}
		if v := resp.Header.Get("Strict-Transport-Security"); v != "max-age=31536000; includeSubDomains" {
			t.Errorf("Strict-Transport-Security %q", v)
		}
	})
	t.Run("HTTP/1.1 by ALPN", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool(), NextProtos: []string{"http/1.1"}}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: liveness}).Get(e.url + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 1 || resp.StatusCode != 200 {
			t.Fatalf("%s %d, want HTTP/1.1 200", resp.Proto, resp.StatusCode)
		}
	})
	t.Run("TLS 1.1 refused", func(t *testing.T) {
		_, err := handshake(t, e.addr, &tls.Config{RootCAs: ca.pool(), ServerName: "bank.example", MaxVersion: tls.VersionTLS11})
		if err == nil {
			t.Fatal("a TLS 1.1 handshake succeeded")
		}
	})
	t.Run("TLS 1.2 with a CBC suite refused", func(t *testing.T) {
		_, err := handshake(t, e.addr, &tls.Config{RootCAs: ca.pool(), ServerName: "bank.example",
			MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}})
		if err == nil {
			t.Fatal("a CBC suite was accepted")
		}
	})
	t.Run("TLS 1.2 with an AEAD suite", func(t *testing.T) {
		st, err := handshake(t, e.addr, &tls.Config{RootCAs: ca.pool(), ServerName: "bank.example", MaxVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		if st.Version != tls.VersionTLS12 || st.NegotiatedProtocol != "h2" {
			t.Errorf("version %x protocol %q", st.Version, st.NegotiatedProtocol)
		}
	})

	subject := func() string {
		t.Helper()
		st, err := handshake(t, e.addr, &tls.Config{RootCAs: ca.pool(), ServerName: "bank.example"})
		if err != nil {
			t.Fatal(err)
		}
		return st.PeerCertificates[0].Subject.CommonName
	}
	t.Run("reload when the files are swapped", func(t *testing.T) {
		if got := subject(); got != "first" {
			t.Fatalf("certificate %q, want first", got)
		}
		ca.issueFiles(t, dir, "second", false, "bank.example")
		if got := subject(); got != "second" {
			t.Fatalf("after the swap: certificate %q, want second", got)
		}
		if logs.FilterMessage("certificate reloaded").Len() != 1 {
			t.Errorf("want one 'certificate reloaded' line: %v", logs.All())
		}
	})
	t.Run("a broken pair keeps the previous certificate", func(t *testing.T) {
		other, _ := ca.issuePEM(t, "mismatch", false, "bank.example")
		if err := os.WriteFile(certFile, other, 0o600); err != nil { // key no longer matches
			t.Fatal(err)
		}
		if got := subject(); got != "second" {
			t.Fatalf("after a broken swap: certificate %q, want second", got)
		}
		if logs.FilterMessageSnippet("do not load").Len() != 1 {
			t.Errorf("want one error line for the broken pair: %v", logs.All())
		}
		ca.issueFiles(t, dir, "third", false, "bank.example")
		if got := subject(); got != "third" {
			t.Fatalf("after a good swap: certificate %q, want third", got)
		}
	})
}

// TestCertReloaderInterval checks that the files are looked at no more than once per
// interval.
func TestCertReloaderInterval(t *testing.T) {
	ca := newTestCA(t, "ca")
	dir := t.TempDir()
	certFile, keyFile := ca.issueFiles(t, dir, "first", false)
	r, err := frontend.NewCertReloader(certFile, keyFile, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	ca.issueFiles(t, dir, "second", false)
	c, _ := r.GetCertificate(nil)
	if c.Leaf.Subject.CommonName != "first" {
		t.Errorf("reloaded within the interval: %q", c.Leaf.Subject.CommonName)
	}
	if _, err := frontend.NewCertReloader(filepath.Join(dir, "nope.pem"), keyFile, 0, nil); err == nil {
		t.Error("NewCertReloader accepted a missing file")
	}
}

func TestCheckTLSFiles(t *testing.T) {
	ca := newTestCA(t, "ca")
	certFile, keyFile := ca.issueFiles(t, t.TempDir(), "x", false)
	src := func(tls string) string {
		return "listen: {https: \":8443\"}\nsites:\n  - {name: a, weight: 1, backends: [\"http://127.0.0.1:1\"]}\ntls: " + tls + "\n"
	}
	for _, tc := range []struct {
		name, tls, wantPath, wantMsg string
	}{
		{"good pair", fmt.Sprintf("{cert_file: %q, key_file: %q}", certFile, keyFile), "", ""},
		{"missing cert", fmt.Sprintf("{cert_file: /nonexistent.pem, key_file: %q}", keyFile), "tls.cert_file", "no such file"},
		{"key is not the cert's", fmt.Sprintf("{cert_file: %q, key_file: %q}", certFile, ca.file(t)), "tls.cert_file", "private key"},
		{"acme root not PEM", fmt.Sprintf("{acme: {domains: [a.example], storage: st, ca_root: %q}}", keyFile), "tls.acme.ca_root", "no PEM certificate"},
		{"acme root good", fmt.Sprintf("{acme: {domains: [a.example], storage: st, ca_root: %q}}", ca.file(t)), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := configs.Parse("t.yaml", []byte(src(tc.tls)), proxy.CheckTLSFiles)
			if tc.wantPath == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "t.yaml:4:") || !strings.Contains(err.Error(), tc.wantPath+": ") || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %v, want t.yaml:4 %s ... %s", err, tc.wantPath, tc.wantMsg)
			}
		})
	}
}
