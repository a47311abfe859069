package frontend

import (
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Spillway's own HTTP/1.1 engine, for plain client connections. It does what net/http's
// server does for a proxy, with less per request and much less per idle connection:
//
//   - An idle keep-alive connection holds no buffer: it waits for its socket to become
//     readable (a non-blocking peek, then the poller), and only then takes a read buffer
//     and a write buffer from a pool; both go back when the connection is idle again.
//   - It waits on a goroutine with a small stack, and serves on a worker whose stack has
//     grown to what serving takes (workers.go): an idle connection costs a small stack,
//     not the deepest its handler reached, and a request does not pay for growing one.
//   - The edge's framing rules (package framing) are its parser: a head is checked whole
//     before anything of it is used, and a body is decoded from the same checks.
//   - One allocation holds a request's strings (its head), one its exchange state.
//   - Whether the client is still there is watched only for requests that last (see
//     watch.go), not with a read and a goroutine per request, and with no timer per
//     request.
//
// HTTP/2 with prior knowledge is recognised by its preface and handed to net/http; TLS
// connections are net/http's from the start (see Server).

// h1Server serves plain HTTP/1.1 connections for a Server.
type h1Server struct {
	http     *http.Server // handler, limits and timeouts; h2c connections go to it
	handler  http.Handler
	h2c      bool
	maxHead  int
	header   time.Duration // timeouts.read_header: from a head's first byte to its end
	idle     time.Duration // timeouts.idle: a keep-alive connection's silence
	log      *log.Logger
	shutting atomic.Bool
	// ctx is the parent of requests' contexts. It holds the server (http.ServerContextKey)
	// as net/http's do: httputil.ReverseProxy aborts a response whose copy fails (the
	// client sees it cut, not ended) only for requests served by a server.
	ctx context.Context

	workers workers
	sweeper sweeper // starts the client watches of requests that last (watch.go)

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*h1conn]struct{}
	gone      chan struct{} // closed once shutting down with no connection left
	closing   chan struct{} // closed by close: a lingering connection stops waiting
	closeOnce sync.Once
}

func newH1Server(srv *http.Server, h2c bool) *h1Server {
	return &h1Server{http: srv, ctx: context.WithValue(context.Background(), http.ServerContextKey, srv), handler: srv.Handler, h2c: h2c, maxHead: maxHeadBytes(srv),
		header: srv.ReadHeaderTimeout, idle: srv.IdleTimeout, log: srv.ErrorLog,
		listeners: map[net.Listener]struct{}{}, conns: map[*h1conn]struct{}{}, closing: make(chan struct{}),
		workers: workers{ready: make(chan *h1conn), quit: make(chan struct{})}}
}

// serve accepts connections on ln and serves each on its own goroutine, until ln fails or
// the server shuts down. With h2c, net/http serves the connections that start with the
// HTTP/2 preface, handed to it through a listener of its own while this one runs.
func (s *h1Server) serve(ln net.Listener) error {
	if !s.track(ln) {
		return http.ErrServerClosed
	}
	defer s.untrack(ln)
	var h2 *handoff
	if s.h2c {
		h2 = newHandoff(ln.Addr())
		served := make(chan struct{})
		go func() {
			defer close(served)
			s.http.Serve(&edgeListener{Listener: h2, maxHead: s.maxHead, h2: true, log: s.log})
		}()
		defer func() { h2.Close(); <-served }()
	}
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.shutting.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors, and the like: wait and accept again, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := newH1Conn(s, nc, h2)
		if !s.add(c) {
			nc.Close()
			continue
		}
		go c.wait()
	}
}

func (s *h1Server) track(ln net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Load() {
		return false
	}
	s.listeners[ln] = struct{}{}
	return true
}

func (s *h1Server) untrack(ln net.Listener) {
	s.mu.Lock()
	delete(s.listeners, ln)
	s.mu.Unlock()
}

// add tracks a new connection; false once the server shuts down.
func (s *h1Server) add(c *h1conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// remove stops tracking a connection that closed, or that was handed over (hijacked, or
// to net/http).
func (s *h1Server) remove(c *h1conn) {
	s.mu.Lock()
	delete(s.conns, c)
	if len(s.conns) == 0 && s.gone != nil {
		close(s.gone)
		s.gone = nil
	}
	s.mu.Unlock()
}

// beginShutdown stops the accepting and closes the idle connections; the busy ones close
// after their request (they check shutting once it is answered).
func (s *h1Server) beginShutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.shutting.Swap(true) {
		close(s.workers.quit)
		s.gone = make(chan struct{})
		if len(s.conns) == 0 {
			close(s.gone)
			s.gone = nil
		}
	}
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.closeIfIdle()
	}
}

// wait returns once every connection is closed, or ctx ends.
func (s *h1Server) wait(ctx context.Context) error {
	s.mu.Lock()
	gone := s.gone
	s.mu.Unlock()
	if gone == nil {
		return nil
	}
	select {
	case <-gone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close stops the accepting and closes every connection.
func (s *h1Server) close() {
	s.closeOnce.Do(func() { close(s.closing) })
	s.beginShutdown()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.nc.Close()
	}
}

// handoff is the listener net/http serves h2c connections from: the HTTP/1.1 engine
// accepts them, reads their preface and hands them over with it.
type handoff struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newHandoff(addr net.Addr) *handoff {
	return &handoff{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (h *handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

// give hands c to net/http; false (c closed) once the listener is.
func (h *handoff) give(c net.Conn) bool {
	select {
	case h.conns <- c:
		return true
	case <-h.done:
		c.Close()
		return false
	}
}

func (h *handoff) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

func (h *handoff) Addr() net.Addr { return h.addr }

// prefixConn is a connection whose first bytes were already read: Read returns them
// first.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
