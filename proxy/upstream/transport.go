// Package upstream is an HTTP/1.1 client for a reverse proxy's backends: a RoundTripper that
// writes each request and reads its response on the caller's goroutine, over pooled
// keep-alive connections.
//
// Unlike net/http's Transport it starts no goroutine per connection, hands nothing over a
// channel per request, and reads nothing from a connection while it is idle in the pool:
// an idle connection holds no buffer, and one the backend closed is found when it is taken
// for reuse (a non-blocking check where the platform allows, else a write error or an end
// of stream before any response byte). It never sends a request a second time on its own:
// whether a request that may have been sent can go again is the caller's to decide.
package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"time"
)

// Transport is an http.RoundTripper for HTTP/1.1 backends, http:// and https://. Its
// fields mirror those of net/http's Transport that a reverse proxy sets; set them before
// the first request and do not change them after. The zero value is usable: it dials with
// a plain net.Dialer and keeps 2 idle connections per backend, for ever. Safe for
// concurrent use.
type Transport struct {
	// DialContext dials a backend's TCP connection (network "tcp", addr host:port); nil
	// means a net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// DialTLSContext dials an https:// backend and returns the connection after its
	// TLS handshake. When nil, the connection from DialContext is wrapped in TLS with
	// TLSClientConfig.
	DialTLSContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLSClientConfig is the TLS configuration when DialTLSContext is nil; its ServerName
	// defaults to the backend's host.
	TLSClientConfig *tls.Config
	// MaxIdleConnsPerHost is how many idle connections are kept per backend; zero means
	// 2 (net/http's default), a negative value none.
	MaxIdleConnsPerHost int
	// IdleConnTimeout closes a connection idle for this long; zero means never. One timer
	// per Transport does it.
	IdleConnTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the response head once the request is
	// written; zero means no limit.
	ResponseHeaderTimeout time.Duration
	// ExpectContinueTimeout is how long a request with "Expect: 100-continue" waits for the
	// backend's answer before its body is sent anyway; zero sends the body at once.
	ExpectContinueTimeout time.Duration
	// WriteBufferSize and ReadBufferSize size the buffers a connection uses while it
	// serves a request (taken from a pool, given back when it goes idle); zero means 4 KiB.
	WriteBufferSize, ReadBufferSize int

	pool pool
}

var _ http.RoundTripper = (*Transport)(nil)

const (
	defaultIdlePerHost = 2
	defaultBufferSize  = 4 << 10
	// maxResponseHead bounds a response head (status line and headers, each 1xx's too
	// unless the caller examines them); net/http's default is 10 MiB beside the buffer.
	maxResponseHead = 1<<20 + 4096
	// max1xx is how many informational responses may precede the final one (net/http's
	// limit).
	max1xx = 5
	// earlyAnswerWait is how long a request whose body could not be written looks for an
	// answer the backend sent before it stopped reading (a 413 for a large upload): such
	// an answer is already in the socket's buffer when the write fails, so a short wait
	// finds it.
	earlyAnswerWait = 50 * time.Millisecond
)

// errHeaderTimeout is the error of a request whose response head did not come within
// ResponseHeaderTimeout. Like net/http's, it is a net.Error whose Timeout is true and it
// matches context.DeadlineExceeded.
var errHeaderTimeout error = headerTimeout{}

type headerTimeout struct{}

func (headerTimeout) Error() string        { return "upstream: timeout awaiting response headers" }
func (headerTimeout) Timeout() bool        { return true }
func (headerTimeout) Temporary() bool      { return true }
func (headerTimeout) Is(target error) bool { return target == context.DeadlineExceeded }

var (
	errClosedBody   = errors.New("upstream: read on closed response body")
	errHeadTooLarge = errors.New("upstream: response head too large")
	errToo1xx       = errors.New("upstream: too many 1xx informational responses")
)

// RoundTrip sends req to its backend and returns the response head; the body is read from
// the connection as the caller reads res.Body. The connection goes back to the pool once
// the body has been read to its end, unless either side asked to close it; closing the
// body before its end closes the connection. req.Context() ending at any point closes the
// connection, and the error is the context's cause. req.Body is always closed.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	k, err := keyOf(req)
	var p plan
	if err == nil {
		p, err = prepare(req)
	}
	if err != nil {
		closeBody(req)
		return nil, err
	}
	if ctx.Err() != nil {
		closeBody(req)
		return nil, context.Cause(ctx)
	}
	trace := httptrace.ContextClientTrace(ctx)
	c, err := t.getConn(ctx, k, trace)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	res, err := c.roundTrip(ctx, req, p, trace)
	if err != nil {
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		c.close()
		return nil, err
	}
	return res, nil
}

// CloseIdleConnections closes the connections idle in the pool. Connections in use are
// left alone; they close, or come back to the pool, when their requests end.
func (t *Transport) CloseIdleConnections() { t.pool.closeAll() }

// key names a backend: its connections are pooled together.
type key struct {
	scheme string // "http" or "https"
	addr   string // host:port
}

// keyOf is req's backend.
func keyOf(req *http.Request) (key, error) {
	u := req.URL
	if u == nil {
		return key{}, errors.New("upstream: nil Request.URL")
	}
	port := "80"
	switch u.Scheme {
	case "http":
	case "https":
		port = "443"
	default:
		return key{}, fmt.Errorf("upstream: unsupported protocol scheme %q", u.Scheme)
	}
	if u.Host == "" {
		return key{}, errors.New("upstream: no Host in request URL")
	}
	if u.Port() == "" {
		return key{u.Scheme, net.JoinHostPort(u.Hostname(), port)}, nil
	}
	return key{u.Scheme, u.Host}, nil
}

// getConn returns an idle connection to k's backend, or a new one.
func (t *Transport) getConn(ctx context.Context, k key, trace *httptrace.ClientTrace) (*conn, error) {
	if trace != nil && trace.GetConn != nil {
		trace.GetConn(k.addr)
	}
	if c, idle := t.pool.get(k, t.IdleConnTimeout); c != nil {
		if trace != nil && trace.GotConn != nil {
			trace.GotConn(httptrace.GotConnInfo{Conn: c.nc, Reused: true, WasIdle: true, IdleTime: idle})
		}
		return c, nil
	}
	nc, err := t.dial(ctx, k)
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
	c := newConn(t, k, nc)
	if trace != nil && trace.GotConn != nil {
		trace.GotConn(httptrace.GotConnInfo{Conn: nc})
	}
	return c, nil
}

// dial connects to k's backend, through TLS for https.
func (t *Transport) dial(ctx context.Context, k key) (net.Conn, error) {
	if k.scheme == "https" && t.DialTLSContext != nil {
		return t.DialTLSContext(ctx, "tcp", k.addr)
	}
	var nc net.Conn
	var err error
	if t.DialContext != nil {
		nc, err = t.DialContext(ctx, "tcp", k.addr)
	} else {
		var d net.Dialer
		nc, err = d.DialContext(ctx, "tcp", k.addr)
	}
	if err != nil || k.scheme != "https" {
		return nc, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.TLSClientConfig != nil {
		cfg = t.TLSClientConfig.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(k.addr)
	}
	cfg.NextProtos = []string{"http/1.1"}
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return tc, nil
}

func (t *Transport) idlePerHost() int {
	if t.MaxIdleConnsPerHost == 0 {
		return defaultIdlePerHost
	}
	return t.MaxIdleConnsPerHost
}

func bufferSize(n int) int {
	if n <= 0 {
		return defaultBufferSize
	}
	return n
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// watch closes c when ctx ends, until the returned stop is called (context.AfterFunc: no
// goroutine unless ctx ends). A ctx that cannot end is not watched.
func watch(ctx context.Context, c *conn) func() bool {
	if ctx.Done() == nil {
		return nil
	}
	return context.AfterFunc(ctx, c.abortf)
}

// stopWatch stops a watch from watch and reports whether the connection is still open:
// false if the context ended first (its close has run or is running).
func stopWatch(stop func() bool) bool {
	return stop == nil || stop()
}
