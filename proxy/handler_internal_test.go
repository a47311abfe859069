package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy/frontend"
)

// serveInternal serves h on a loopback listener until the test ends.
func serveInternal(t *testing.T, cfg *configs.Config, h http.Handler) string {
	url, _ := serveInternalSrv(t, cfg, h)
	return url
}

// serveInternalSrv is serveInternal that also returns the server, for tests that shut it
// down (Shutdown waits for every handler to return) before they check in-flight counts.
func serveInternalSrv(t *testing.T, cfg *configs.Config, h http.Handler) (string, *frontend.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := frontend.NewServer(cfg, h, nil)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return "http://" + ln.Addr().String(), srv
}

// mustParse parses a test config.
func mustParse(t *testing.T, name string, yaml []byte) *configs.Config {
	t.Helper()
	cfg, err := configs.Parse(name, yaml)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// mustBuild builds a Table for cfg, closed when the test ends.
func mustBuild(t *testing.T, cfg *configs.Config, d Deps) *Table {
	t.Helper()
	table, err := Build(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(table.Close)
	return table
}

type panickingForwarder struct{}

func (panickingForwarder) ServeHTTP(http.ResponseWriter, *http.Request) { panic("bug in a forwarder") }

// A panic on the request path must still release the lease (Handler.finish), and must not
// take the proxy down: net/http recovers it and closes that one connection.
func TestPanicInForwarderReleasesLease(t *testing.T) {
	cfg := mustParse(t, "t.yaml", []byte("sites:\n- {name: a, weight: 1, backends: [\"http://127.0.0.1:9\"]}\n"))
	reg := balancer.NewRegistry()
	table := mustBuild(t, cfg, Deps{Registry: reg})
	table.sites[0].proxy = panickingForwarder{}
	core, logs := observer.New(zap.WarnLevel)
	url := serveInternal(t, cfg, NewHandler(table, zap.New(core)))

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	for range 3 {
		if res, err := (&http.Client{Transport: tr}).Get(url); err == nil {
			res.Body.Close()
			t.Fatalf("got %d, want the connection cut", res.StatusCode)
		}
	}
	if n := table.Sites()[0].Inflight(); n != 0 {
		t.Fatalf("site in-flight %d after 3 panics, want 0", n)
	}
	if n := reg.Backend(balancer.BackendID{Site: "a", Addr: "http://127.0.0.1:9"}).Inflight(); n != 0 {
		t.Fatalf("backend in-flight %d after 3 panics, want 0", n)
	}
	if got := logs.FilterMessage("response aborted").Len(); got != 3 {
		t.Fatalf("%d 'response aborted' entries, want 3", got)
	}
}

// Each failed request is logged exactly once, with its request ID, site, backend and reason.
func TestFailureLoggedOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	cfg := mustParse(t, "t.yaml", fmt.Appendf(nil, "sites:\n- {name: idc1, weight: 1, backends: [%q]}\n", refused))
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	table := mustBuild(t, cfg, Deps{Registry: balancer.NewRegistry(), Log: log})
	url := serveInternal(t, cfg, NewHandler(table, log))

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", url+"/pay", nil)
	req.Header.Set("X-Request-Id", "req-42")
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway || string(body) != "Bad Gateway\nrequest_id: req-42\n" {
		t.Fatalf("got %d %q, want 502 \"Bad Gateway\\n\"", res.StatusCode, body)
	}
	entries := logs.All()
	if len(entries) != 1 {
		t.Fatalf("%d log entries, want exactly 1: %v", len(entries), entries)
	}
	f := entries[0].ContextMap()
	want := map[string]any{"request_id": "req-42", "site": "idc1", "backend": refused, "reason": "connect", "status": int64(502), "path": "/pay"}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("log field %s = %v, want %v", k, f[k], v)
		}
	}
}

// zeros is an endless body of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// Regression: net/http starts the response-header clock only after the whole request is
// sent, so a backend that stopped reading a large upload held it until the client gave up.
// The write-stall guard turns that into a 504 after timeouts.response_header.
func TestBackendThatStopsReadingUploadGets504(t *testing.T) {
	release := make(chan struct{})
	backend := newStallingBackend(t, release)
	defer close(release)
	cfg, err := configs.Parse("t.yaml", fmt.Appendf(nil,
		"sites:\n- {name: idc1, weight: 1, backends: [%q]}\ntimeouts: {response_header: 300ms}\n", backend))
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	reg := balancer.NewRegistry()
	table := mustBuild(t, cfg, Deps{Registry: reg, Log: zap.New(core)})
	url := serveInternal(t, cfg, NewHandler(table, zap.New(core)))

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // liveness only
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/upload", io.LimitReader(zeros{}, 1<<30))
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("POST: %v (want a 504 response)", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", res.StatusCode)
	}
	if got := logs.FilterField(zap.String("reason", reasonTimeout.String())).Len(); got != 1 {
		t.Fatalf("%d timeout log entries, want 1: %v", got, logs.All())
	}
	if n := table.Sites()[0].Inflight(); n != 0 {
		t.Fatalf("in-flight %d after the 504, want 0", n)
	}
}

// newStallingBackend accepts a request and never reads its body until release closes.
func newStallingBackend(t *testing.T, release chan struct{}) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(s.Close)
	return s.URL
}

// A TLS backend whose certificate the proxy does not trust fails in the handshake: 502
// with reason "backend_tls", so the log tells a TLS problem from a refused connection.
func TestTLSHandshakeFailureIsBackendTLS(t *testing.T) {
	backend := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the request reached a backend whose certificate is not trusted")
	}))
	defer backend.Close()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer plain.Close()
	for _, tc := range []struct{ name, backend string }{
		{"untrusted certificate", backend.URL},
		{"plain HTTP behind an https URL", "https://" + strings.TrimPrefix(plain.URL, "http://")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustParse(t, "t.yaml", fmt.Appendf(nil, "sites:\n- {name: idc1, weight: 1, backends: [%q]}\n", tc.backend))
			core, logs := observer.New(zap.WarnLevel)
			table := mustBuild(t, cfg, Deps{Registry: balancer.NewRegistry(), Log: zap.New(core)})
			url := serveInternal(t, cfg, NewHandler(table, zap.New(core)))
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			res, err := (&http.Client{Transport: tr}).Get(url)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusBadGateway {
				t.Fatalf("status %d, want 502", res.StatusCode)
			}
			if got := logs.FilterField(zap.String("reason", reasonBackendTLS.String())).Len(); got != 1 {
				t.Fatalf("want one entry with reason backend_tls, got %v", logs.All())
			}
		})
	}
}
