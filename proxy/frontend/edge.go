package frontend

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spillway/spillway/proxy/framing"
)

// The edge: every client connection passes through a Conn, which checks the framing of
// each HTTP/1.1 request on the raw bytes (package framing) before net/http reads any of it.
// net/http alone cannot be the check: it quietly drops Content-Length when
// Transfer-Encoding is present, so its handlers never see that conflict. A request the edge
// refuses gets 400 (431 for an oversized head) from the edge itself, and the connection
// closes: nothing after it on that connection is read, so a request hidden behind it never
// reaches a backend. A framing error inside a chunked body, once the request is already
// being forwarded, fails the body read instead: the backend's request is cut, never
// completed, and the client gets 400 from the handler.

// maxHeadBytes is net/http's own bound on a request's head: MaxHeaderBytes plus 4 KiB for
// the request line.
func maxHeadBytes(srv *http.Server) int {
	n := srv.MaxHeaderBytes
	if n <= 0 {
		n = http.DefaultMaxHeaderBytes
	}
	return n + 4096
}

type edgeListener struct {
	net.Listener
	maxHead int
	h2      bool
	log     *log.Logger // the server's ErrorLog: one line per refused request; nil: none
	bufs    sync.Pool   // *[readBufSize]byte, for Conn.readSmall
}

func (l *edgeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: c, f: framing.Framer{MaxHead: l.maxHead}, h2: l.h2, first: true, log: l.log, bufs: &l.bufs}, nil
}

// http2Preface is what an HTTP/2 client sends first (RFC 9113 section 3.4).
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Conn is a client connection accepted through the edge (see Serve): it checks the framing
// of the requests read from it. Its Read is called by one goroutine at a time (net/http's
// reader, then whoever took the connection over); active and pass are set from others.
// A handler finds the Conn its request came in on with ConnOf, and asks it what net/http
// cannot tell (TLSState, MalformedBody); whoever hijacks it marks it a Tunnel.
type Conn struct {
	net.Conn
	f     framing.Framer
	log   *log.Logger
	h2    bool // the connection may start with the HTTP/2 preface
	first bool // no head seen yet
	// head holds bytes not yet checked whole (a head, or a chunk-size or trailer line, and
	// what came after it): none of it is handed to net/http until it has passed.
	head []byte
	scan framing.HeadScan // where HeadEnd resumes in head
	lead int              // bytes of CRLF skipped before the head to come (at most 4, as net/http)
	// bufs lends a read buffer for reads smaller than it (net/http's background read
	// is 1 byte): the edge never reads the socket a byte at a time. nil: a new one.
	bufs  *sync.Pool
	ready framing.Ready // checked bytes not yet handed over
	// refused is a head the edge refuses (answered by the edge); bodyErr a broken body
	// (the read fails, and the handler answers).
	refused  *framing.Error
	bodyErr  error
	answered bool
	// badBody is set with bodyErr, for the handler's goroutine (see MalformedBody).
	badBody atomic.Bool
	// active is set while net/http serves a request of this connection (http.ConnState):
	// a refusal waits until that request is answered, so the two answers never interleave.
	active atomic.Bool
	// pass is set once the connection is a tunnel (a WebSocket handed over): no more HTTP.
	pass atomic.Bool
	tls  atomic.Pointer[tls.ConnectionState]
}

func (c *Conn) Read(p []byte) (int, error) {
	for {
		if n, err, ok := c.ready.Pop(p); ok {
			return n, err
		}
		if c.bodyErr != nil {
			return 0, c.bodyErr
		}
		if c.refused != nil {
			return c.refuse()
		}
		if c.pass.Load() {
			if len(c.head) > 0 {
				c.ready.Push(c.head)
				c.head = nil
				continue
			}
			return c.Conn.Read(p)
		}
		if len(p) < readBufSize {
			if err := c.readSmall(); err != nil {
				return 0, err
			}
			continue
		}
		n, err := c.Conn.Read(p)
		if n, err, ok := c.ready.After(c.take(p[:n]), err); ok {
			return n, err
		}
	}
}

// readBufSize is the read buffer lent to small reads.
const readBufSize = 4096

// readSmall reads from the socket into a lent buffer of readBufSize for a caller that
// asked for less, and checks what came; the caller's Read hands it out from out.
func (c *Conn) readSmall() error {
	var buf *[readBufSize]byte
	if c.bufs != nil {
		buf, _ = c.bufs.Get().(*[readBufSize]byte)
	}
	if buf == nil {
		buf = new([readBufSize]byte)
	}
	n, err := c.Conn.Read(buf[:])
	c.head = append(c.head, buf[:n]...)
	if c.bufs != nil {
		c.bufs.Put(buf)
	}
	c.checkHeads()
	return c.ready.Later(err)
}

// take checks b, just read into the caller's buffer, and returns how many of its first
// bytes may be handed over at once; the rest is kept (in head or out) or refused.
func (c *Conn) take(b []byte) int {
	if len(c.head) == 0 {
		k, err := c.f.Advance(b)
		if err != nil {
			c.failBody(err)
			return k
		}
		if k == len(b) {
			return k
		}
		b = b[k:]
		c.head = append(c.head, b...)
		c.checkHeads()
		return k
	}
	c.head = append(c.head, b...)
	c.checkHeads()
	return 0
}

// checkHeads moves what is whole and checked from head to out.
func (c *Conn) checkHeads() {
	for len(c.head) > 0 {
		if !c.f.AtHead() {
			k, err := c.f.Advance(c.head)
			c.ready.Push(c.head[:k])
			c.head = append(c.head[:0], c.head[k:]...)
			if err != nil {
				c.failBody(err)
				return
			}
			if !c.f.AtHead() && len(c.head) > 0 {
				return // a chunk-size or trailer line not yet whole
			}
			continue
		}
		if c.first && c.h2 {
			n := min(len(c.head), len(http2Preface))
			if string(c.head[:n]) == http2Preface[:n] {
				if n == len(http2Preface) {
					c.pass.Store(true) // HTTP/2 frames its own messages
					c.ready.Push(c.head)
					c.head = nil
				}
				return
			}
		}
		if c.lead < 4 && c.scan == (framing.HeadScan{}) && c.head[0] == '\r' {
			// RFC 9112 section 2.2: an empty line or two before a request (after a POST
			// body, from old clients) is skipped; net/http skips up to 4 CR or LF bytes.
			if len(c.head) < 2 {
				return
			}
			if c.head[1] == '\n' {
				c.lead += 2
				c.ready.Push(c.head[:2])
				c.head = append(c.head[:0], c.head[2:]...)
				continue
			}
		}
		end, next, err := framing.HeadEnd(c.head, c.scan)
		if err != nil {
			c.refused = err.(*framing.Error)
			return
		}
		if end == 0 {
			c.scan = next
			if len(c.head) > c.f.MaxHead {
				c.refused = &framing.Error{Status: http.StatusRequestHeaderFieldsTooLarge, Msg: "request head too large"}
			}
			return
		}
		c.scan, c.lead = framing.HeadScan{}, 0
		if end > c.f.MaxHead {
			c.refused = &framing.Error{Status: http.StatusRequestHeaderFieldsTooLarge, Msg: "request head too large"}
			return
		}
		if _, err := c.f.CheckHead(c.head[:end], false); err != nil {
			c.refused = err.(*framing.Error)
			return
		}
		c.first = false
		c.ready.Push(c.head[:end])
		c.head = append(c.head[:0], c.head[end:]...)
	}
}

// failBody fails the body under way: this and every later read returns err.
func (c *Conn) failBody(err error) {
	c.bodyErr = err
	c.badBody.Store(true)
	c.logRefusal(err)
}

// logRefusal logs a refused request, so that operators see smuggling attempts (and broken
// clients) for what they are. It costs the sender a connection each.
func (c *Conn) logRefusal(err error) {
	if c.log != nil {
		logRefusal(c.log, c.RemoteAddr(), err)
	}
}

// logRefusal logs one refused request (a head, or a body that broke the framing) from
// remote to log, if any: the edge's line, whichever engine refused it.
func logRefusal(log *log.Logger, remote any, err error) {
	if log != nil {
		log.Printf("edge: refused a request from %s: %v", remote, err)
	}
}

// MalformedBody reports whether the edge failed a request body of this connection for its
// framing. net/http reports that to the handler as the body's read error, or not at all
// (a broken trailer section), and cancels the request's context. Safe for concurrent use.
func (c *Conn) MalformedBody() bool { return c.badBody.Load() }

// refuse answers a refused head and ends the connection. While an earlier request of the
// connection is still being served, it only waits, reading nothing net/http will see, until
// net/http stops the read (when that answer is done) or the client goes.
func (c *Conn) refuse() (int, error) {
	if c.active.Load() {
		var scratch [512]byte
		for {
			if _, err := c.Conn.Read(scratch[:]); err != nil {
				return 0, err
			}
		}
	}
	if !c.answered {
		c.answered = true
		c.logRefusal(c.refused)
		c.Conn.SetWriteDeadline(time.Now().Add(refusalWriteTimeout))
		c.Conn.Write(refusal(c.refused))
	}
	return 0, io.EOF
}

// refusalWriteTimeout bounds the write of the edge's own 400 to a client that does not read.
const refusalWriteTimeout = 5 * time.Second

// refusal is the edge's answer to a refused request head.
func refusal(e *framing.Error) []byte {
	body := http.StatusText(e.Status) + ": " + e.Msg + "\n"
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 " + strconv.Itoa(e.Status) + " " + http.StatusText(e.Status) + "\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n")
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	b.WriteString(body)
	return b.Bytes()
}

// Tunnel marks the connection as handed over (a WebSocket): what follows is not HTTP, and
// the edge checks none of it. Safe for concurrent use.
func (c *Conn) Tunnel() { c.pass.Store(true) }

// TLSState is the connection's TLS state, or nil for plain connections. Serve terminates
// TLS below the edge, so net/http sees a plain connection and leaves Request.TLS nil: a
// handler that needs it asks here.
func (c *Conn) TLSState() *tls.ConnectionState {
	if s := c.tls.Load(); s != nil {
		return s
	}
	tc, ok := c.Conn.(*tls.Conn)
	if !ok {
		return nil
	}
	s := tc.ConnectionState()
	if s.HandshakeComplete {
		c.tls.Store(&s)
	}
	return &s
}

type edgeConnKey struct{}

// edgeConnContext puts a client connection's Conn in its requests' contexts
// (http.Server.ConnContext), where ConnOf finds it.
func edgeConnContext(ctx context.Context, c net.Conn) context.Context {
	if ec, ok := c.(*Conn); ok {
		return context.WithValue(ctx, edgeConnKey{}, ec)
	}
	return ctx
}

// edgeConnState follows whether a request of a client connection is being served
// (http.Server.ConnState).
func edgeConnState(c net.Conn, s http.ConnState) {
	if ec, ok := c.(*Conn); ok {
		ec.active.Store(s == http.StateActive)
	}
}

// ConnOf returns the Conn a request came in on, or nil for a request not served through
// the edge (a server not made by NewServer or NewTLSServer, or not served with Serve).
func ConnOf(r *http.Request) *Conn {
	ec, _ := r.Context().Value(edgeConnKey{}).(*Conn)
	return ec
}
