package proxytest

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// NewBackend starts an httptest server on 127.0.0.1 running h and closes it at cleanup.
// Handlers that block must also watch r.Context() or a channel released at cleanup, since
// Close waits for them. The server's error log is discarded: hijacked resets are expected
// noise.
func NewBackend(t testing.TB, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// NameBackend is a backend that reads the request's body and answers every request with
// name (so that a test sees which site or backend answered).
func NameBackend(t testing.TB, name string) *httptest.Server {
	t.Helper()
	return NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, name)
	})
}

// Counter counts the requests that reach a backend. Its zero value is ready to use.
type Counter struct {
	mu sync.Mutex
	n  int
}

// Inc counts one request.
func (c *Counter) Inc() {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

// Get returns the count.
func (c *Counter) Get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// CountingBackend is NewBackend running h, counting each request in c.
func CountingBackend(t testing.TB, c *Counter, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	return NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		c.Inc()
		h(w, r)
	})
}

// Hijack takes over a backend's connection, once the request has been read; it panics if
// the ResponseWriter cannot be hijacked (it runs in a handler, not in the test).
func Hijack(w http.ResponseWriter) net.Conn {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(fmt.Sprintf("hijack: %v", err))
	}
	return conn
}

// RefusedURL is the http:// address of a listener that has been closed: connecting to it
// is refused.
func RefusedURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}
