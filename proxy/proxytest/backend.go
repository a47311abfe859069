package proxytest

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
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

// CapBackend is a capacity-limited scripted backend: it records its highest concurrency and,
// if Hold, holds each request until the test releases it (one token on Release per request)
// or the request ends. Every answer names the site, in the body and in X-Site.
type CapBackend struct {
	Site     string
	URL      string
	Cur, Max atomic.Int64  // requests in the handler now, and the most at once
	Served   atomic.Int64  // requests answered
	Arrived  chan string   // the path of each request as it arrives
	Release  chan struct{} // one token releases one held request
	Hold     bool
}

// NewCapBackend starts a CapBackend answering site. Held requests are let go at cleanup,
// before the server closes.
func NewCapBackend(t testing.TB, site string, hold bool) *CapBackend {
	t.Helper()
	b := &CapBackend{Site: site, Arrived: make(chan string, 1000), Release: make(chan struct{}, 1000), Hold: hold}
	stop := make(chan struct{})
	srv := NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		n := b.Cur.Add(1)
		defer b.Cur.Add(-1)
		for m := b.Max.Load(); n > m && !b.Max.CompareAndSwap(m, n); m = b.Max.Load() {
		}
		b.Arrived <- r.URL.Path
		if b.Hold {
			select {
			case <-b.Release:
			case <-stop:
			case <-r.Context().Done():
				return
			}
		}
		b.Served.Add(1)
		w.Header().Set("X-Site", b.Site)
		io.WriteString(w, b.Site)
	})
	b.URL = srv.URL
	t.Cleanup(func() { close(stop) }) // runs before srv.Close, registered after it
	return b
}
