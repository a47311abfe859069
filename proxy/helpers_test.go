package proxy_test

// Shared fixtures for the proxy's integration tests: real sockets on both sides. Backends are
// httptest servers on 127.0.0.1 that play back scripted behaviour; the proxy is the real
// Handler behind the real server from frontend.NewServer, on its own 127.0.0.1 listener.
// What other packages' tests need too (backends, configs, serving, the Reloader env) is in
// proxytest; what is here is the data plane's own: env (one Table behind one server), gate,
// and raw sockets.

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
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

// env is one running proxy: its Registry, first Table, Handler and server, and a client.
type env struct {
	cfg     *configs.Config
	reg     *balancer.Registry
	table   *proxy.Table
	handler *proxy.Handler
	srv     *frontend.Server
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
	cfg := proxytest.MustConfig(t, yaml)
	reg := balancer.NewRegistry()
	tbl, err := proxy.Build(cfg, proxy.Deps{Registry: reg})
	if err != nil {
		t.Fatalf("proxy.Build: %v", err)
	}
	t.Cleanup(tbl.Close)
	h := proxy.NewHandler(tbl, nil)
	srv, addr := proxytest.ServeOn(t, cfg, h)
	client, tr := proxytest.NewClient(t)
	return &env{
		cfg: cfg, reg: reg, table: tbl, handler: h, srv: srv,
		addr: addr, url: "http://" + addr, client: client, tr: tr,
	}
}

// drain shuts the proxy's server down gracefully: it returns once every request the proxy
// accepted has left the Handler (and so released its lease). Later requests are refused.
func (e *env) drain(t *testing.T) {
	t.Helper()
	e.tr.CloseIdleConnections()
	e.shutdownOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), proxytest.Liveness)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Fatalf("proxy did not drain within %v: %v", proxytest.Liveness, err)
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
	// its deferred finish). Wait for that, within the proxytest.Liveness bound, then check.
	deadline := time.Now().Add(proxytest.Liveness)
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
	conn.SetDeadline(time.Now().Add(proxytest.Liveness))
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

// rawBackend is a backend written against the socket: serve handles each request read
// from a connection, writing its answer on w itself. It records the connection of each
// request. Everything it starts ends at cleanup.
func rawBackend(t *testing.T, serve func(w io.Writer, r *http.Request)) (url string, conns func() []string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	addr := serveConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			mu.Lock()
			seen = append(seen, r.URL.Path+" on "+c.RemoteAddr().String())
			mu.Unlock()
			serve(c, r)
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return
			}
		}
	})
	return "http://" + addr, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

// serveConns listens on 127.0.0.1 and runs handle on each connection accepted (which it
// closes after) until the test ends; then it closes the listener and every connection and
// waits for every handle to return. It returns the listener's address.
func serveConns(t *testing.T, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var open []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}
