package proxy_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/runtime"
)

// mtlsBackend is an httptest TLS server on 127.0.0.1 with a certificate from serverCA for
// "app.idc2" that requires a client certificate from clientCA. It answers with the client
// certificate's common name.
func mtlsBackend(t *testing.T, serverCA, clientCA *testCA) *httptest.Server {
	t.Helper()
	b := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	b.TLS = &tls.Config{
		Certificates: []tls.Certificate{serverCA.issue(t, "app.idc2", false, "app.idc2")},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCA.pool(),
	}
	b.Config.ErrorLog = discardLogger() // handshake failures are the point of some tests
	b.StartTLS()
	t.Cleanup(b.Close)
	return b
}

// TestBackendMTLS sends requests through the proxy to an https backend that requires a
// client certificate, with the site's tls settings right and wrong.
func TestBackendMTLS(t *testing.T) {
	serverCA, clientCA, otherCA := newTestCA(t, "idc-ca"), newTestCA(t, "client-ca"), newTestCA(t, "other-ca")
	b := mtlsBackend(t, serverCA, clientCA)
	certFile, keyFile := clientCA.issueFiles(t, t.TempDir(), "spillway-idc2", true)

	for _, tc := range []struct {
		name       string
		tls        string
		wantStatus int
		wantBody   string
		wantError  string // in the "request failed" log line's error
	}{
		{name: "right CA and client certificate",
			tls:        fmt.Sprintf("{ca_file: %q, cert_file: %q, key_file: %q, server_name: app.idc2}", serverCA.file(t), certFile, keyFile),
			wantStatus: 200, wantBody: "hello spillway-idc2"},
		{name: "wrong CA",
			tls:        fmt.Sprintf("{ca_file: %q, cert_file: %q, key_file: %q, server_name: app.idc2}", otherCA.file(t), certFile, keyFile),
			wantStatus: 502, wantError: "certificate signed by unknown authority"},
		{name: "wrong server name",
			tls:        fmt.Sprintf("{ca_file: %q, cert_file: %q, key_file: %q, server_name: app.idc1}", serverCA.file(t), certFile, keyFile),
			wantStatus: 502, wantError: "app.idc1"},
		{name: "no client certificate",
			tls:        fmt.Sprintf("{ca_file: %q, server_name: app.idc2}", serverCA.file(t)),
			wantStatus: 502, wantError: "certificate required"},
		{name: "insecure_skip_verify",
			tls:        fmt.Sprintf("{insecure_skip_verify: true, cert_file: %q, key_file: %q}", certFile, keyFile),
			wantStatus: 200, wantBody: "hello spillway-idc2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml := "listen: {http: \"127.0.0.1:0\"}\nsites:\n  - name: idc2\n    weight: 1\n" +
				fmt.Sprintf("    backends: [%q]\n    tls: %s\nretries: {attempts: 1}\n", b.URL, tc.tls)
			e := startLoggedProxy(t, yaml, nil, nil)
			status, body := e.get(t, "/accounts")
			if status != tc.wantStatus {
				t.Fatalf("status %d (%q), want %d", status, body, tc.wantStatus)
			}
			if tc.wantBody != "" && body != tc.wantBody {
				t.Errorf("body %q, want %q", body, tc.wantBody)
			}
			if tc.wantError != "" {
				lines := e.logs.FilterMessage("request failed").AllUntimed()
				if len(lines) != 1 {
					t.Fatalf("%d 'request failed' lines, want 1: %v", len(lines), lines)
				}
				f := lines[0].ContextMap()
				if f["site"] != "idc2" || f["reason"] != "backend_tls" || !strings.Contains(fmt.Sprint(f["error"]), tc.wantError) {
					t.Errorf("log fields %v: want site idc2, reason backend_tls, an error with %q", f, tc.wantError)
				}
			}
			warned := e.logs.FilterMessageSnippet("not verified").FilterField(zap.String("site", "idc2")).Len()
			if insecure := strings.Contains(tc.tls, "insecure"); (warned == 1) != insecure {
				t.Errorf("%d warnings that certificates are not verified; insecure_skip_verify %v", warned, insecure)
			}
			e.checkIdle(t)
		})
	}
}

// TestBackendTLSFileErrors checks that unreadable TLS files of sites are refused by Build
// with the line of the key that names them, every one at once.
func TestBackendTLSFileErrors(t *testing.T) {
	ca := newTestCA(t, "ca")
	notPEM := writeTemp(t, "not.pem", "hello")
	yaml := fmt.Sprintf(`sites:
  - name: idc1
    weight: 1
    backends: ["https://127.0.0.1:1"]
    tls: {ca_file: %q}
  - name: idc2
    weight: 1
    backends: ["https://127.0.0.1:2"]
    tls: {ca_file: %q, cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem}
`, notPEM, ca.file(t))
	cfg := mustConfig(t, yaml)
	_, err := proxy.Build(cfg, proxy.Deps{Registry: balancer.NewRegistry()})
	var errs configs.Errors
	if !errors.As(err, &errs) || len(errs) != 2 {
		t.Fatalf("Build: %v; want 2 configs.Errors", err)
	}
	if e := errs[0]; e.Line != 5 || e.Path != "sites[0].tls.ca_file" || !strings.Contains(e.Msg, "no PEM certificate") {
		t.Errorf("first error %v", e)
	}
	if e := errs[1]; e.Line != 9 || e.Path != "sites[1].tls.cert_file" || !strings.Contains(e.Msg, "no such file") {
		t.Errorf("second error %v", e)
	}
}

// TestInsecureSkipVerifyWarnsAtBuild checks the warning names the site.
func TestInsecureSkipVerifyWarnsAtBuild(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	cfg := mustConfig(t, "sites:\n  - {name: aws, weight: 1, backends: [\"https://127.0.0.1:1\"], tls: {insecure_skip_verify: true}}\n")
	tbl, err := proxy.Build(cfg, proxy.Deps{Registry: balancer.NewRegistry(), Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	tbl.Close()
	if n := logs.FilterField(zap.String("site", "aws")).FilterMessageSnippet("not verified").Len(); n != 1 {
		t.Errorf("%d warnings naming site aws, want 1: %v", n, logs.All())
	}
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	dir := t.TempDir()
	p := dir + "/" + name
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHealthProbesUseSiteTLS checks that active health probes of an mTLS backend use the
// site's CA and client certificate: a backend that starts down comes up once a probe
// passes, which it cannot without them.
func TestHealthProbesUseSiteTLS(t *testing.T) {
	serverCA, clientCA := newTestCA(t, "idc-ca"), newTestCA(t, "client-ca")
	b := mtlsBackend(t, serverCA, clientCA)
	certFile, keyFile := clientCA.issueFiles(t, t.TempDir(), "spillway-probe", true)
	yaml := fmt.Sprintf(`sites:
  - name: idc2
    weight: 1
    backends: [%q]
    tls: {ca_file: %q, cert_file: %q, key_file: %q, server_name: app.idc2}
    health: {path: /healthz, interval: 50ms, timeout: 50ms, rise: 1, initial: down}
`, b.URL, serverCA.file(t), certFile, keyFile)
	cfg := mustConfig(t, yaml)
	reg := balancer.NewRegistry()
	tbl, err := proxy.Build(cfg, proxy.Deps{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Close()
	backend := reg.Backend(balancer.BackendID{Site: "idc2", Addr: b.URL})
	if backend.Healthy() {
		t.Fatal("backend up before any probe (initial: down)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); runtime.RunTable(ctx, tbl, nil) }()
	defer func() { cancel(); <-ran }()
	deadline := time.Now().Add(liveness)
	for !backend.Healthy() { // probes run on the Monitor's clock; poll within the bound
		if time.Now().After(deadline) {
			t.Fatal("the mTLS backend never came up: probes do not use the site's TLS settings")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
