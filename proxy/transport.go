package proxy

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/spillway/spillway/configs"
)

// Transport tuning that the config does not expose. The idle pool is sized so that a busy
// site reuses connections instead of opening one per request (net/http's default keeps 2
// idle per host, which under load means a connect and a TIME_WAIT per request).
const (
	maxIdlePerBackend = 1024
	dialKeepAlive     = 30 * time.Second
	expectContinue    = 1 * time.Second
	ioBufferSize      = 32 << 10
)

var discardLog = log.New(io.Discard, "", 0)

// newTransport builds one site's transport to its backends.
func newTransport(t configs.Timeouts) *http.Transport {
	dialer := &net.Dialer{Timeout: t.Connect, KeepAlive: dialKeepAlive}
	stall := t.ResponseHeader
	return &http.Transport{
		// Never the environment's HTTP_PROXY: backends are reached directly.
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &writeStallGuard{Conn: c, limit: stall}, nil
		},
		MaxIdleConns:          0, // no global cap; per backend below
		MaxIdleConnsPerHost:   maxIdlePerBackend,
		IdleConnTimeout:       t.Idle,
		ResponseHeaderTimeout: t.ResponseHeader,
		TLSHandshakeTimeout:   t.Connect,
		ExpectContinueTimeout: expectContinue,
		// A proxy must pass bodies through as they are: with compression on, the transport
		// would ask for gzip itself and hand back a decoded body.
		DisableCompression: true,
		WriteBufferSize:    ioBufferSize,
		ReadBufferSize:     ioBufferSize,
	}
}

// newForwarder returns the ReverseProxy for one backend. The inbound Host header is kept
// (backends see the name the client asked for) and X-Forwarded-Host/-Proto are set;
// X-Forwarded-For gets the client's address appended to what the request carried.
func newForwarder(target *url.URL, tr http.RoundTripper, t *Table, d Deps) forwarder {
	scheme, host := target.Scheme, target.Host
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = scheme
			pr.Out.URL.Host = host
			// ReverseProxy has dropped the client's X-Forwarded-* and every header its
			// Connection names. Bring back X-Forwarded-For to append to, unless it was
			// named there (then it is hop-by-hop, and the backend sees only our entry).
			if !hasToken(pr.In.Header["Connection"], "X-Forwarded-For") {
				pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			}
			pr.SetXForwarded()
			// The request ID is ours, set by Handler: "Connection: X-Request-Id" must not
			// strip it on the way to the backend.
			pr.Out.Header[headerRequestID] = pr.In.Header[headerRequestID]
			t.retry.fenceTransportReplay(pr.Out)
			// Request trailers (gRPC-web, chunked uploads with a checksum): Clone copied
			// the map before the body was read, so its values are still empty; share the
			// inbound one, which the server fills when the body ends, before the
			// transport reads it to send the trailers on.
			if pr.In.Trailer != nil {
				pr.Out.Trailer = pr.In.Trailer
			}
		},
		Transport: tr,
		// Flush every write: streamed responses and server-sent events reach the client as
		// the backend sends them.
		FlushInterval:  -1,
		BufferPool:     d.Buffers,
		ModifyResponse: t.modifyResponse,
		ErrorHandler:   recordError,
		// The Handler logs each failure once, with the request's context; ReverseProxy's own
		// lines would repeat them without it.
		ErrorLog: discardLog,
	}
}

// writeStallGuard bounds how long one write to a backend may block. net/http starts the
// response-header clock only once the whole request is sent, so without it a backend that
// stops reading a large upload would hold the request (and its in-flight slot) until the
// client gave up. With it, the write fails after limit and the client gets 504.
type writeStallGuard struct {
	net.Conn
	limit time.Duration
}

func (c *writeStallGuard) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.limit)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// BufferPool is an httputil.BufferPool of 32 KiB buffers, shared by every forwarder.
type BufferPool struct{ p sync.Pool }

// NewBufferPool returns an empty BufferPool.
func NewBufferPool() *BufferPool {
	return &BufferPool{p: sync.Pool{New: func() any { return new([ioBufferSize]byte) }}}
}

// Get returns a buffer of 32 KiB.
func (b *BufferPool) Get() []byte { return b.p.Get().(*[ioBufferSize]byte)[:] }

// Put returns a buffer from Get to the pool; buffers of another size are dropped.
func (b *BufferPool) Put(buf []byte) {
	if cap(buf) == ioBufferSize {
		b.p.Put((*[ioBufferSize]byte)(buf[:ioBufferSize]))
	}
}
