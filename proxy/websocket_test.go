package proxy_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/spillway/spillway/proxy/proxytest"
)

// echoWebSocket is a backend that accepts WebSockets and echoes every message; each
// connection's end (the error that ended it) is sent on ended.
func echoWebSocket(t *testing.T, ended chan<- error) string {
	b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		for {
			typ, msg, err := c.Read(r.Context())
			if err == nil {
				err = c.Write(r.Context(), typ, msg)
			}
			if err != nil {
				ended <- err
				return
			}
		}
	})
	return b.URL
}

// dialWS opens a WebSocket through the proxy with a real client.
func dialWS(t *testing.T, e *env, path string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), proxytest.Liveness)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+e.addr+path, &websocket.DialOptions{HTTPClient: e.client})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake status %d", resp.StatusCode)
	}
	t.Cleanup(func() { c.CloseNow() })
	c.SetReadLimit(1 << 20)
	return c
}

// echo sends msg and reads it back.
func echo(ctx context.Context, c *websocket.Conn, msg string) error {
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		return err
	}
	_, got, err := c.Read(ctx)
	if err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// waitInflight waits until the site's in-flight count is n. The Handler releases its
// lease just after the tunnel closes, on its own goroutine, so this polls; the bound is
// proxytest.Liveness.
func waitInflight(t *testing.T, e *env, n int64) {
	t.Helper()
	deadline := time.Now().Add(proxytest.Liveness)
	for e.table.Sites()[0].Inflight() != n {
		if time.Now().After(deadline) {
			t.Fatalf("site in-flight %d, want %d", e.table.Sites()[0].Inflight(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWebSocketEndToEnd opens WebSockets through the proxy with a real client and server:
// messages pass both ways, and each open WebSocket counts as a request in flight until it
// closes.
func TestWebSocketEndToEnd(t *testing.T) {
	ended := make(chan error, 2)
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{echoWebSocket(t, ended)}}}, ""))
	ctx, cancel := context.WithTimeout(context.Background(), proxytest.Liveness)
	defer cancel()

	a, b := dialWS(t, e, "/a"), dialWS(t, e, "/b")
	for i := range 3 {
		if err := echo(ctx, a, fmt.Sprint("a", i)); err != nil {
			t.Fatal(err)
		}
		if err := echo(ctx, b, strings.Repeat("b", 100<<10)); err != nil { // bigger than a buffer
			t.Fatal(err)
		}
	}
	if n := e.table.Sites()[0].Inflight(); n != 2 {
		t.Errorf("in-flight %d with two WebSockets open, want 2", n)
	}
	a.Close(websocket.StatusNormalClosure, "bye")
	proxytest.Receive(t, ended, "the backend to see the first WebSocket close")
	waitInflight(t, e, 1)
	b.CloseNow()
	proxytest.Receive(t, ended, "the backend to see the second WebSocket close")
	waitInflight(t, e, 0)
}

// TestWebSocketIdleLimit checks that a tunnel with no traffic either way is closed after
// websocket.idle, and that traffic keeps it open.
func TestWebSocketIdleLimit(t *testing.T) {
	const idle = 300 * time.Millisecond
	ended := make(chan error, 1)
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{echoWebSocket(t, ended)}}},
		fmt.Sprintf("websocket: {idle: %s}\n", idle)))
	ctx, cancel := context.WithTimeout(context.Background(), proxytest.Liveness)
	defer cancel()
	c := dialWS(t, e, "/")

	// Busy for three idle periods: never closed.
	start := time.Now()
	var last time.Time
	for {
		if err := echo(ctx, c, "tick"); err != nil {
			t.Fatalf("closed while busy, after %v: %v", time.Since(start), err)
		}
		last = time.Now()
		if last.Sub(start) > 3*idle {
			break
		}
		time.Sleep(idle / 10)
	}
	// Quiet: closed no sooner than idle after the last message.
	_, _, err := c.Read(ctx)
	if err == nil {
		t.Fatal("read a message from an idle echo")
	}
	if quiet := time.Since(last); quiet < idle || ctx.Err() != nil {
		t.Fatalf("closed after %v quiet (%v), want >= %v and within %v", quiet, err, idle, proxytest.Liveness)
	}
	proxytest.Receive(t, ended, "the backend's side to close")
	waitInflight(t, e, 0)
}

// TestWebSocketLifetimeLimit checks that a busy tunnel is closed after
// websocket.max_lifetime.
func TestWebSocketLifetimeLimit(t *testing.T) {
	const lifetime = 400 * time.Millisecond
	ended := make(chan error, 1)
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{echoWebSocket(t, ended)}}},
		fmt.Sprintf("websocket: {idle: 1m, max_lifetime: %s}\n", lifetime)))
	ctx, cancel := context.WithTimeout(context.Background(), proxytest.Liveness)
	defer cancel()
	start := time.Now()
	c := dialWS(t, e, "/")
	n := 0
	var err error
	for err == nil {
		if err = echo(ctx, c, "tick"); err == nil {
			n++
			time.Sleep(lifetime / 20)
		}
	}
	if open := time.Since(start); open < lifetime || ctx.Err() != nil {
		t.Fatalf("closed after %v (%v), want >= %v and within %v", open, err, lifetime, proxytest.Liveness)
	}
	if n < 5 {
		t.Errorf("only %d messages before the close; the tunnel was not busy", n)
	}
	proxytest.Receive(t, ended, "the backend's side to close")
	waitInflight(t, e, 0)
}

// TestWebSocketOverTLS opens a WebSocket through the proxy's TLS listener (wss://), where
// the client asks for HTTP/1.1 by ALPN as WebSocket clients do.
func TestWebSocketOverTLS(t *testing.T) {
	ended := make(chan error, 1)
	b := echoWebSocket(t, ended)
	ca := proxytest.NewCA(t, "ws-ca")
	e := startLoggedProxy(t, frontYAML(b, ""), proxytest.FrontTLS(ca.Issue(t, "bank.example", false, "bank.example")), ca.Pool())
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "bank.example", NextProtos: []string{"http/1.1"}}}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), proxytest.Liveness)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "wss://"+e.addr+"/secure", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatalf("dial wss: %v", err)
	}
	defer c.CloseNow()
	if err := echo(ctx, c, "over tls"); err != nil {
		t.Fatal(err)
	}
	if n := e.table.Sites()[0].Inflight(); n != 1 {
		t.Errorf("in-flight %d with a WebSocket open, want 1", n)
	}
	c.Close(websocket.StatusNormalClosure, "")
	proxytest.Receive(t, ended, "the backend to see the WebSocket close")
	waitInflight(t, e.env, 0)
}
