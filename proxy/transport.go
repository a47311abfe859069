package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy/framing"
	"github.com/spillway/spillway/proxy/sockio"
	"github.com/spillway/spillway/proxy/upstream"
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

// backendTransport is a site's transport to its backends.
type backendTransport interface {
	http.RoundTripper
	CloseIdleConnections()
}

// http1Transport is an HTTP/1.1 site's transport. A request without a body (GET, HEAD,
// OPTIONS, a WebSocket upgrade: most channel traffic) goes through upstream.Transport,
// which writes it and reads the answer on the request's goroutine. A request with a body
// goes through net/http's Transport, whose writer and reader run apart, so that a
// backend's early answer to an upload (401, 413) reaches the client while the upload is
// still being sent, even from a backend that stops reading it and keeps the connection
// open (on one goroutine the answer would wait for the write limit). Both dial
// backendConns; each keeps its own pool of idle connections.
type http1Transport struct {
	plain  *upstream.Transport
	bodies *http.Transport
}

func (t *http1Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	if sendsBody(r) {
		return t.bodies.RoundTrip(r)
	}
	return t.plain.RoundTrip(r)
}

func (t *http1Transport) CloseIdleConnections() {
	t.plain.CloseIdleConnections()
	t.bodies.CloseIdleConnections()
}

// setTLS makes tc the client TLS config of https backends (read at each dial).
func (t *http1Transport) setTLS(tc *tls.Config) {
	t.plain.TLSClientConfig, t.bodies.TLSClientConfig = tc, tc
}

// sendsBody reports whether r goes out with a body: not the empty body that
// fenceTransportReplay gives bodyless requests.
func sendsBody(r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody {
		return false
	}
	_, empty := r.Body.(emptyBody)
	return !empty
}

// newHTTP1Transport is an HTTP/1.1 site's transport (http1Transport) over backendConns.
// TLS to https backends is done by the dial hooks rather than by the transports, so that
// the framing check sees the plaintext.
func newHTTP1Transport(t configs.Timeouts) *http1Transport {
	tr := &http1Transport{}
	d := backendDialer{timeouts: t, http1: true, tls: func() *tls.Config { return tr.plain.TLSClientConfig }}
	tr.plain = &upstream.Transport{
		DialContext:           d.dial,
		DialTLSContext:        d.dialTLS,
		MaxIdleConnsPerHost:   maxIdlePerBackend,
		IdleConnTimeout:       t.Idle,
		ResponseHeaderTimeout: t.ResponseHeader,
		ExpectContinueTimeout: expectContinue,
		WriteBufferSize:       ioBufferSize,
		ReadBufferSize:        ioBufferSize,
	}
	tr.bodies = newNetHTTPTransport(t, d)
	tr.bodies.DialTLSContext = d.dialTLS
	var p http.Protocols
	p.SetHTTP1(true)
	tr.bodies.Protocols = &p
	return tr
}

// newH2Transport is an HTTP/2 site's transport (newSiteTransport sets its Protocols).
func newH2Transport(t configs.Timeouts) *http.Transport {
	return newNetHTTPTransport(t, backendDialer{timeouts: t})
}

// newNetHTTPTransport is net/http's Transport tuned for backends, dialling with d.
func newNetHTTPTransport(t configs.Timeouts, d backendDialer) *http.Transport {
	return &http.Transport{
		// Never the environment's HTTP_PROXY: backends are reached directly.
		Proxy:                 nil,
		DialContext:           d.dial,
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

// backendDialer dials backends and wraps each connection in a backendConn.
type backendDialer struct {
	timeouts configs.Timeouts
	http1    bool               // the connection carries HTTP/1 messages: check their framing
	tls      func() *tls.Config // the site's client TLS settings, read at each dial; nil: none
}

func (d backendDialer) dialer() *net.Dialer {
	return &net.Dialer{Timeout: d.timeouts.Connect, KeepAlive: dialKeepAlive}
}

func (d backendDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.dialer().DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return newBackendConn(sockio.Wrap(c), d.timeouts.ResponseHeader, d.http1), nil
}

// dialTLS dials an https backend of an HTTP/1.1 site: TLS with ALPN http/1.1, the
// handshake bounded by timeouts.connect.
func (d backendDialer) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	raw, err := d.dialer().DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if site := d.tls(); site != nil {
		tc = site.Clone()
	}
	if tc.ServerName == "" {
		tc.ServerName, _, _ = net.SplitHostPort(addr)
	}
	tc.NextProtos = []string{"http/1.1"}
	conn := tls.Client(sockio.Wrap(raw), tc)
	hctx, cancel := context.WithTimeout(ctx, d.timeouts.Connect)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, err
	}
	return newBackendConn(conn, d.timeouts.ResponseHeader, true), nil
}

// backendTarget splits a backend's address (scheme://host:port, as Build and discovery list
// them) into the scheme and host of the URL a try goes to, without parsing or allocating.
func backendTarget(addr string) (scheme, host string) {
	scheme, rest, ok := strings.Cut(addr, "://")
	if !ok {
		return "", ""
	}
	host, _, _ = strings.Cut(rest, "/")
	return scheme, host
}

// newForwarder returns the ReverseProxy of one site: each try goes to the backend of its
// exchange's lease. The inbound Host header is kept (backends see the name the client asked
// for) and X-Forwarded-Host/-Proto are set; X-Forwarded-For gets the client's address
// appended to what the request carried.
func newForwarder(tr http.RoundTripper, t *Table, d Deps) forwarder {
	// HTTP/2's client resends on its own only what the protocol proves was never processed
	// (a stream refused, or above a GOAWAY's last one): a resend that is safe, and that the
	// fence would turn into a 502 on every graceful restart of an h2 backend.
	// HTTP/1.1 sites are fenced: their requests with a body go through net/http's
	// Transport, and the fence's empty body is what sends a bodyless one to upstream's.
	ht, _ := tr.(*http.Transport)
	fence := ht == nil || ht.Protocols == nil || ht.Protocols.HTTP1()
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			if ex := exchangeOf(pr.In); ex != nil && ex.lease.Backend != nil {
				pr.Out.URL.Scheme, pr.Out.URL.Host = backendTarget(ex.lease.Backend.ID.Addr)
			} else {
				pr.Out.URL.Scheme, pr.Out.URL.Host = "", "" // fails in the transport: no try without a lease
			}
			// ReverseProxy has dropped the client's X-Forwarded-* and every header its
			// Connection names. Bring back X-Forwarded-For to append to, unless it was
			// named there (then it is hop-by-hop, and the backend sees only our entry).
			if !hasToken(pr.In.Header["Connection"], "X-Forwarded-For") {
				pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			}
			pr.SetXForwarded()
			t.headers.addVia(pr.Out.Header, pr.In.ProtoMajor, pr.In.ProtoMinor)
			// The request ID is ours, set by Handler: "Connection: X-Request-Id" must not
			// strip it on the way to the backend.
			pr.Out.Header[headerRequestID] = pr.In.Header[headerRequestID]
			if fence {
				fenceTransportReplay(pr.Out)
			}
			if hasToken(pr.Out.Header["Expect"], "100-continue") {
				if sendsBody(pr.Out) {
					// A backend that answers at once without 100 Continue (401, 413, 417)
					// gets no body, and its connection closes after the answer: otherwise
					// net/http sends the body anyway, to keep the connection in step, and
					// so pulls it from a client that is waiting for that very answer.
					pr.Out.Close = true
				} else {
					// Nothing to continue with (RFC 9110 section 10.1.1: not to be sent
					// without content). Passed on, it would make the transport wait for a
					// 100 before an empty body, and close a kept-alive connection for it.
					delete(pr.Out.Header, "Expect")
				}
			}
			// Request trailers (gRPC-web, chunked uploads with a checksum): Clone copied
			// the map before the body was read, so its values are still empty; share the
			// inbound one, which the server fills when the body ends, before the
			// transport reads it to send the trailers on.
			if pr.In.Trailer != nil {
				pr.Out.Trailer = pr.In.Trailer
			}
		},
		Transport: tr,
		// Streams (no Content-Length, server-sent events) are flushed after every write by
		// ReverseProxy itself; any other body by the Handler (responseWriter.flushEach),
		// without ReverseProxy's timer and writer per response.
		FlushInterval:  0,
		BufferPool:     d.Buffers,
		ModifyResponse: t.modifyResponse,
		ErrorHandler:   recordError,
		// The Handler logs each failure once, with the request's context; ReverseProxy's own
		// lines would repeat them without it.
		ErrorLog: discardLog,
	}
}

// backendConn is a connection to a backend. It bounds how long one write may block: net/http
// starts the response-header clock only once the whole request is sent, so without it a
// backend that stops reading a large upload would hold the request (and its in-flight
// slot) until the client gave up; with it, the write fails after limit and the client gets
// 504. And it checks the framing of every response it reads (package framing) before net/http
// sees a byte: a response whose end is ambiguous fails the read, so it never reaches the
// client as a well-formed answer, and the Transport discards the connection.
type backendConn struct {
	net.Conn
	limit time.Duration
	// written counts the bytes written (see exchange.reached).
	written atomic.Int64
	// Read side, used by the Transport's one reader goroutine.
	f       framing.Framer
	head    []byte
	scan    framing.HeadScan
	ready   framing.Ready // checked bytes not yet handed over
	refused error
	// isHEAD is whether the request being answered is a HEAD (a response to it has no
	// body whatever its headers say). The exchange sets it when the Transport hands it
	// this connection for a HEAD (exchange.gotConn), and the reader clears it once the
	// answer's head has been read. (Guessing from the bytes written would not do: a
	// backend may answer before the request's body is all written, and the rest of the
	// body, which the client chose, would pass for the start of the next request.)
	isHEAD atomic.Bool
	// awaiting is set when a request is written and cleared when its final answer has been
	// read whole: bytes that come while it is clear answer no request (a second response,
	// the start of one that the next request's answer would be spliced into) and are
	// refused. final is set (reader side) while a final answer's body is being read.
	awaiting atomic.Bool
	final    bool
	// justAnswered is set (reader side) when a final answer has just been read whole;
	// last, once the connection was found to hold bytes after it (see Read): the answer's
	// last bytes then come with io.EOF, so that the Transport does not keep the connection.
	justAnswered bool
	last         bool
}

func newBackendConn(c net.Conn, limit time.Duration, check bool) *backendConn {
	bc := &backendConn{Conn: c, limit: limit, f: framing.Framer{Response: true, MaxHead: maxResponseHead}}
	if !check {
		bc.f.Pass()
	}
	return bc
}

// maxResponseHead bounds a response head held for checking; net/http's Transport allows
// 1 MiB (MaxResponseHeaderBytes' default) beside the status line.
const maxResponseHead = 1<<20 + 4096

// NetConn is the connection c wraps (upstream.Transport probes an idle one's socket).
func (c *backendConn) NetConn() net.Conn { return c.Conn }

// Pending reports whether c holds bytes the backend sent that nobody has read: checked
// bytes not yet handed over, the start of a head being gathered, a refusal, or what the
// connection under it holds (upstream.Pending). The upstream client asks before it pools
// c: after a whole response, any of them is a response nobody asked for, which the next
// request would read as its answer. Call it only from the reader's goroutine.
func (c *backendConn) Pending() bool {
	return c.ready.Len() > 0 || len(c.head) > 0 || c.refused != nil || c.last || upstream.Pending(c.Conn)
}

func (c *backendConn) Write(p []byte) (int, error) {
	if !c.awaiting.Load() {
		c.awaiting.Store(true)
	}
	var n int
	var err error
	if w, ok := c.Conn.(*sockio.Conn); ok {
		n, err = w.WriteWithin(p, c.limit) // (no timer touched when the socket takes it at once)
	} else if err = c.Conn.SetWriteDeadline(time.Now().Add(c.limit)); err == nil {
		n, err = c.Conn.Write(p)
	}
	c.written.Add(int64(n))
	return n, err
}

// Read hands over what the backend sent once it is checked. A final answer read whole is
// followed by a look at what the connection already holds after it (a stray response, in
// the same read or in crypto/tls's buffer): with anything there, the answer's last bytes
// come with io.EOF, which net/http's Transport takes for a connection that ended, and does
// not put back in its pool. Its own reader would find the stray bytes on its next read,
// but a request handed the pooled connection before that read (under load) would take
// them for its answer.
func (c *backendConn) Read(p []byte) (int, error) {
	for {
		if n, err, ok := c.ready.Pop(p); ok {
			if err == nil && c.last && c.ready.Len() == 0 {
				err = io.EOF
			}
			return n, err
		}
		if c.last {
			return 0, io.EOF
		}
		if c.refused != nil {
			return 0, c.refused
		}
		if c.f.Passing() && len(c.head) == 0 {
			return c.Conn.Read(p)
		}
		n, err := c.Conn.Read(p)
		k := c.take(p[:n])
		if c.justAnswered {
			c.justAnswered = false
			c.last = err == nil && (c.refused != nil || upstream.Pending(c.Conn))
			if c.last && c.ready.Len() == 0 {
				return k, io.EOF
			}
		}
		if n, err, ok := c.ready.After(k, err); ok {
			return n, err
		}
	}
}

// take checks b and returns how many of its first bytes may be handed over at once.
func (c *backendConn) take(b []byte) (handed int) {
	if len(c.head) == 0 {
		k, err := c.f.Advance(b)
		c.answered()
		if err != nil || k == len(b) {
			c.refused = err
			return k
		}
		handed, b = k, b[k:] // b[:k] goes at once; the rest is held and checked below
	}
	c.head = append(c.head, b...)
	for len(c.head) > 0 && c.refused == nil {
		if !c.f.AtHead() {
			k, err := c.f.Advance(c.head)
			c.answered()
			c.ready.Push(c.head[:k])
			c.head = append(c.head[:0], c.head[k:]...)
			c.refused = err
			if err == nil && !c.f.AtHead() && !c.f.Passing() && len(c.head) > 0 {
				return handed // a chunk-size or trailer line not yet whole
			}
			continue
		}
		if !c.awaiting.Load() {
			c.refused = errUnsolicited
			break
		}
		end, next, err := framing.HeadEnd(c.head, c.scan)
		switch {
		case err != nil:
			c.refused = err
		case end == 0 && len(c.head) > maxResponseHead:
			c.refused = &framing.Error{Status: http.StatusBadRequest, Msg: "response head too large"}
		case end == 0:
			c.scan = next
			return handed
		default:
			c.scan = framing.HeadScan{}
			status, err := c.f.CheckHead(c.head[:end], c.isHEAD.Load())
			if err != nil {
				c.refused = err
				break
			}
			if status >= 200 {
				c.isHEAD.Store(false) // answered; the next request sets it again
			}
			c.final = status >= 200 || status == http.StatusSwitchingProtocols
			c.answered() // (a final answer without a body is whole now)
			c.ready.Push(c.head[:end])
			c.head = append(c.head[:0], c.head[end:]...)
		}
	}
	return handed
}

// answered notes that a final answer has been read whole (its head and body checked, the
// framer back at a head): the request is answered, and the next bytes need a new one.
func (c *backendConn) answered() {
	if c.final && c.f.AtHead() {
		c.final = false
		c.justAnswered = true
		c.awaiting.Store(false)
	}
}

// errUnsolicited refuses bytes a backend sent when no request of this connection was
// waiting for an answer.
var errUnsolicited = &framing.Error{Status: http.StatusBadGateway, Msg: "response bytes that answer no request"}

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
