package proxy_test

// Shared fixtures for the proxy's integration tests: real sockets on both sides. Backends are
// httptest servers on 127.0.0.1 that play back scripted behaviour; the proxy is the real
// Handler behind the real server from frontend.NewServer, on its own 127.0.0.1 listener.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/frontend"
	"github.com/spillway/spillway/proxy/proxytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// liveness bounds every wait in these tests. It is a generous bound so that a broken proxy
// fails instead of hanging, never a way to order events: ordering is done with channels.
const liveness = 10 * time.Second

// site is one site of a generated config.
type site struct {
	name     string
	weight   int
	backends []string
}

// configYAML writes a config for sites, followed by extra top-level YAML (e.g. a timeouts
// block). listen.http is never bound: tests serve the proxy on their own listener.
func configYAML(sites []site, extra string) string {
	var b strings.Builder
	b.WriteString("listen:\n  http: \"127.0.0.1:0\"\nsites:\n")
	for _, s := range sites {
		fmt.Fprintf(&b, "  - name: %s\n    weight: %d\n    backends: [", s.name, s.weight)
		for i, u := range s.backends {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%q", u)
		}
		b.WriteString("]\n")
	}
	b.WriteString(extra)
	return b.String()
}

func mustConfig(t *testing.T, yaml string) *configs.Config {
	t.Helper()
	cfg, err := configs.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("configs.Parse:\n%v\nconfig:\n%s", err, yaml)
	}
	return cfg
}

// env is one running proxy: its Registry, first Table, Handler and server, and a client.
type env struct {
	cfg     *configs.Config
	reg     *balancer.Registry
	table   *proxy.Table
	handler *proxy.Handler
	srv     *http.Server
	addr    string // host:port of the proxy's listener
	url     string // http://addr
	client  *http.Client
	tr      *http.Transport

	shutdownOnce sync.Once
}

// startProxy builds the config, serves it on 127.0.0.1 and registers cleanups that stop the
// server, close the Table and the client's idle connections. Create backends before calling
// it, so that they close after the proxy.
func startProxy(t *testing.T, yaml string) *env {
	t.Helper()
	cfg := mustConfig(t, yaml)
	reg := balancer.NewRegistry()
	tbl, err := proxy.Build(cfg, proxy.Deps{Registry: reg})
	if err != nil {
		t.Fatalf("proxy.Build: %v", err)
	}
	t.Cleanup(tbl.Close)
	h := proxy.NewHandler(tbl, nil)
	srv, addr := serveOn(t, cfg, h)
	client, tr := newClient(t)
	return &env{
		cfg: cfg, reg: reg, table: tbl, handler: h, srv: srv,
		addr: addr, url: "http://" + addr, client: client, tr: tr,
	}
}

// serveOn serves h on a new 127.0.0.1 listener with the server frontend.NewServer makes for
// cfg, until the test ends, and returns the server and the listener's address.
func serveOn(t *testing.T, cfg *configs.Config, h http.Handler) (*http.Server, string) {
	t.Helper()
	srv := frontend.NewServer(cfg, h, nil)
	return srv, serve(t, srv)
}

// serve runs srv on a new 127.0.0.1 listener through frontend.Serve (with TLS when srv has a TLSConfig)
// until the test ends, and returns the listener's address.
func serve(t *testing.T, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		served <- frontend.Serve(srv, ln) // a server with a TLSConfig terminates TLS there
	}()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// newClient is an HTTP client for the tests' proxies, whose idle connections close when
// the test ends.
func newClient(t *testing.T) (*http.Client, *http.Transport) {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: liveness}, tr
}

// drain shuts the proxy's server down gracefully: it returns once every request the proxy
// accepted has left the Handler (and so released its lease). Later requests are refused.
func (e *env) drain(t *testing.T) {
	t.Helper()
	e.tr.CloseIdleConnections()
	e.shutdownOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), liveness)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Fatalf("proxy did not drain within %v: %v", liveness, err)
		}
	})
}

// checkIdle drains the proxy and checks that every site and backend of the config is back
// to zero in-flight, through the Table's sites and the Registry.
func (e *env) checkIdle(t *testing.T) {
	t.Helper()
	e.drain(t)
	// Shutdown returns once the connections are closed; an HTTP/2 stream the client reset is
	// closed at once, while its handler may still be on its way out (its slot released by
	// its deferred finish). Wait for that, within the liveness bound, then check.
	deadline := time.Now().Add(liveness)
	for e.busy() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for _, s := range e.table.Sites() {
		if n := s.Inflight(); n != 0 {
			t.Errorf("site %s: in-flight %d after drain, want 0", s.Name, n)
		}
	}
	for _, s := range e.cfg.Sites {
		for _, addr := range s.Backends {
			if n := e.reg.Backend(balancer.BackendID{Site: s.Name, Addr: addr}).Inflight(); n != 0 {
				t.Errorf("backend %s/%s: in-flight %d after drain, want 0", s.Name, addr, n)
			}
		}
	}
	for _, s := range e.table.Status() { // discovered members too
		for _, b := range s.Backends {
			if b.Inflight != 0 {
				t.Errorf("backend %s/%s: in-flight %d after drain, want 0", s.Name, b.Addr, b.Inflight)
			}
		}
	}
}

// busy reports whether any site or backend of the Table has a request in flight.
func (e *env) busy() bool {
	for _, s := range e.table.Status() {
		if s.Inflight != 0 {
			return true
		}
		for _, b := range s.Backends {
			if b.Inflight != 0 {
				return true
			}
		}
	}
	return false
}

// get sends a GET through the proxy and returns the status and body.
func (e *env) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := e.client.Get(e.url + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// newBackend starts an httptest server on 127.0.0.1 running h and closes it at cleanup.
// Handlers that block must also watch r.Context() or a channel released at cleanup, since
// Close waits for them.
func newBackend(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // hijacked resets are expected noise
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// counter counts the requests that reach a backend.
type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) inc() {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

func (c *counter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// countingBackend is newBackend running h, counting each request in c.
func countingBackend(t *testing.T, c *counter, h http.HandlerFunc) *httptest.Server {
	return newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		c.inc()
		h(w, r)
	})
}

// nameBackend answers every request with name.
func nameBackend(t *testing.T, name string) *httptest.Server {
	return newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, name)
	})
}

// gate is a channel that blocked backends wait on; the test opens it. It also opens at
// cleanup: a test whose backends wait on a gate made before them registers g.open again
// after creating them, so that it runs before their Close, which waits for every handler.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

func newGate(t *testing.T) *gate {
	g := &gate{ch: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// wait blocks until the gate opens or ctx ends; it reports whether the gate opened.
func (g *gate) wait(ctx context.Context) bool {
	select {
	case <-g.ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// waitFor polls cond, a reading of the proxy's state, until it holds or liveness passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	proxytest.Eventually(t, liveness, what, cond)
}

// await waits for a value on ch for at most liveness.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	return proxytest.Await(t, ch, liveness, what)
}

// refusedURL is the address of a listener that has been closed: connecting is refused.
func refusedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// hijack takes over the backend's connection; the request has been read.
func hijack(w http.ResponseWriter) net.Conn {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(fmt.Sprintf("hijack: %v", err))
	}
	return conn
}

// resetConn closes c with SO_LINGER 0, so the peer gets a TCP RST.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// rawExchange writes req as bytes on a new connection to addr and reads one response.
func rawExchange(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	resp, body, err := rawRoundTrip(t, addr, req)
	if err != nil {
		t.Fatalf("read response body: %v", err)
	}
	return resp, body
}

// rawRoundTrip is rawExchange that returns an error reading the body instead of failing:
// net/http closes at once after answering a malformed request, and a reset may then cut the
// body short on the client's side.
func rawRoundTrip(t *testing.T, addr, req string) (*http.Response, string, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(liveness))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}
