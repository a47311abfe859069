package frontend

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spillway/spillway/proxy/framing"
	"github.com/spillway/spillway/proxy/sockio"
)

// An h1conn's state, for Shutdown: an idle connection may be closed, a busy one finishes
// its request first.
const (
	connIdle    int32 = iota // waiting for the next request, or reading its head
	connBusy                 // serving a request
	connClosing              // closed while idle (by Shutdown)
)

// h1conn is one plain client connection served by the HTTP/1.1 engine. Its serving
// goroutine owns everything but state; the watch (watch.go) and a request body's reader
// (on the handler's side) borrow parts of it as their comments say.
type h1conn struct {
	s      *h1Server
	nc     net.Conn
	remote string
	h2     *handoff // where an h2c connection goes; nil: h2c is off
	state  atomic.Int32
	ready  readiness // reads an idle socket with no buffer held (see ready_unix.go)
	first  bool      // no request yet
	// buf[r:w] is what was read and not yet used; buf is nil while the connection is
	// idle with nothing read.
	buf  []byte
	r, w int
	f    framing.Framer
	bw   *bufio.Writer // nil while idle
	// headBy is the deadline of the head being read (timeouts.read_header).
	headBy time.Time
	watch  watch
}

func newH1Conn(s *h1Server, nc net.Conn, h2 *handoff) *h1conn {
	nc = sockio.Wrap(nc) // reads and writes without waking the runtime's monitor (package sockio)
	c := &h1conn{s: s, nc: nc, remote: nc.RemoteAddr().String(), h2: h2, first: true,
		f: framing.Framer{MaxHead: s.maxHead}}
	c.ready.init(c)
	c.watch.c = c
	if c.ready.canPeek() {
		c.watch.ended = make(chan struct{}, 1)
	}
	if s.header > 0 {
		c.headBy = time.Now().Add(s.header)
	}
	return c
}

// Pools of the buffers a busy connection holds: a read buffer (a head must fit in it, or
// it grows, up to the head limit) and the response's write buffer.
const (
	readBufLen  = 4096
	writeBufLen = 4096
)

var (
	readBufs  = sync.Pool{New: func() any { return new([readBufLen]byte) }}
	writeBufs sync.Pool // *bufio.Writer
)

// wait waits, on a goroutine of its own with a small stack, for the connection's next
// request, and hands the connection to a worker once it has come (see workers.go).
func (c *h1conn) wait() {
	if c.waitIdle(false) != waitCame {
		c.close()
		return
	}
	c.s.dispatch(c)
}

// serve serves the connection's requests for as long as they come: one, pipelined ones,
// and those that come while the worker holds the connection (a sweep or two, see
// waitIdle). Then it leaves the connection to a fresh waiting goroutine.
func (c *h1conn) serve() {
	for {
		req, x, ok := c.readRequest()
		if !ok || !c.exchange(req, x) {
			return
		}
		c.state.Store(connIdle) // (the next head may be read already: a pipelined request)
		if c.r == c.w {
			switch c.waitIdle(true) {
			case waitClosed:
				c.close()
				return
			case waitHandOff:
				go c.wait()
				return
			}
		}
	}
}

// What became of a wait for the next request (waitIdle).
const (
	waitCame    = iota // its first bytes came, and are in buf
	waitHandOff        // the worker's hold is over: a small goroutine is to wait
	waitClosed         // the connection is to close: idle too long, gone, or shut down
)

// waitIdle waits for the next request's first bytes and reads them, holding no buffer
// while it waits. A connection that waits for its first request waits no longer than
// read_header; a kept-alive one, idle.
//
// hold: the worker that served the last request waits itself, for as long as the server's
// sweeper lets it (one or two sweeps, see watch.go), so that a client sending its requests
// one after the other keeps its worker: no goroutine is started and no other one woken
// for each. When the sweeper ends the hold (waitHandOff), a small goroutine waits instead.
func (c *h1conn) waitIdle(hold bool) int {
	c.release()
	by := c.headBy // (the first request's: read_header from the accept)
	if !c.first && c.s.idle > 0 {
		by = time.Now().Add(c.s.idle)
	}
	c.nc.SetReadDeadline(by)
	c.state.Store(connIdle)
	if c.s.shutting.Load() {
		return waitClosed
	}
	if hold {
		c.s.sweeper.hold(c)
	}
	err := c.ready.readIdle(c)
	if hold && !c.s.sweeper.unhold(c) { // the sweeper ended the hold (a deadline in the past)
		if err == nil {
			c.nc.SetReadDeadline(by) // (the bytes came first: serve them)
		} else if c.state.Load() == connIdle && (by.IsZero() || time.Now().Before(by)) {
			return waitHandOff
		}
	}
	if err != nil || c.state.Load() != connIdle {
		return waitClosed
	}
	return waitCame
}

// headDeadline starts read_header for a head that did not come whole in one read (the
// first request's runs from the accept), and reports false if Shutdown came first: it
// marks the connection closing, then sets the deadline that stops the read, so this
// one's must come first.
func (c *h1conn) headDeadline() bool {
	if c.headBy.IsZero() && c.s.header > 0 {
		c.headBy = time.Now().Add(c.s.header)
		c.nc.SetReadDeadline(c.headBy)
	}
	return c.state.Load() == connIdle
}

// closeIfIdle closes the connection if it is idle, or reads a head (Shutdown); a busy one
// closes after its request. Safe for concurrent use.
func (c *h1conn) closeIfIdle() {
	if c.state.CompareAndSwap(connIdle, connClosing) {
		c.nc.SetReadDeadline(aLongTimeAgo) // wakes the idle wait
	}
}

var aLongTimeAgo = time.Unix(1, 0)

// release gives the connection's buffers back while nothing is read ahead.
func (c *h1conn) release() {
	if c.bw != nil {
		c.bw.Reset(nil)
		writeBufs.Put(c.bw)
		c.bw = nil
	}
	if c.buf != nil && c.r == c.w {
		if len(c.buf) == readBufLen {
			readBufs.Put((*[readBufLen]byte)(c.buf))
		}
		c.buf, c.r, c.w = nil, 0, 0
	}
}

func (c *h1conn) writer() *bufio.Writer {
	if c.bw == nil {
		if bw, _ := writeBufs.Get().(*bufio.Writer); bw != nil {
			bw.Reset((*clientSink)(c))
			c.bw = bw
		} else {
			c.bw = bufio.NewWriterSize((*clientSink)(c), writeBufLen)
		}
	}
	return c.bw
}

// clientSink is the write buffer's sink: the connection, each write bounded by
// timeouts.idle where no write deadline is set (sockio.Conn.WriteWithin). A client that
// takes nothing for that long is gone, whether the handler is writing or the answer's
// last bytes go after it returned (the buffered tail, the last chunk, a 100 Continue),
// which nothing else bounds. A deadline the handler sets (http.ResponseController)
// applies instead.
type clientSink h1conn

func (s *clientSink) Write(p []byte) (int, error) {
	c := (*h1conn)(s)
	if sc, ok := c.nc.(*sockio.Conn); ok && c.s.idle > 0 {
		return sc.WriteWithin(p, c.s.idle)
	}
	return c.nc.Write(p)
}

// close closes the connection and stops tracking it.
func (c *h1conn) close() {
	c.nc.Close()
	c.r, c.w = 0, 0
	c.release()
	c.s.remove(c)
}

// fill reads more of the connection into buf, after what is there: it moves what is
// unread to the front, or grows buf (to at most limit bytes) when it is full. It returns
// errHeadTooLarge when buf is limit bytes full.
func (c *h1conn) fill(limit int) error {
	if c.buf == nil {
		c.buf = readBufs.Get().(*[readBufLen]byte)[:]
	}
	if c.w == len(c.buf) {
		if c.r > 0 {
			c.w = copy(c.buf, c.buf[c.r:c.w])
			c.r = 0
		} else {
			if len(c.buf) >= limit {
				return errHeadTooLarge
			}
			grown := make([]byte, min(2*len(c.buf), max(limit, len(c.buf))))
			c.w = copy(grown, c.buf[c.r:c.w])
			c.r = 0
			if len(c.buf) == readBufLen {
				readBufs.Put((*[readBufLen]byte)(c.buf))
			}
			c.buf = grown
		}
	}
	n, err := c.nc.Read(c.buf[c.w:])
	c.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

var errHeadTooLarge = &framing.Error{Status: http.StatusRequestHeaderFieldsTooLarge, Msg: "request head too large"}

// readRequest reads and checks the next request's head and makes its Request. false: the
// connection was closed (the head was refused, or the client went) or handed to net/http.
func (c *h1conn) readRequest() (*http.Request, *h1exchange, bool) {
	end, err := c.readHead()
	if err != nil {
		var fe *framing.Error
		if errors.As(err, &fe) {
			c.refuse(fe)
		} else if err != errHandedOff {
			c.close()
		}
		return nil, nil, false
	}
	head := c.buf[c.r : c.r+end]
	if _, err := c.f.CheckHead(head, false); err != nil {
		c.refuse(err.(*framing.Error))
		return nil, nil, false
	}
	x := &h1exchange{c: c}
	req, fe := x.newRequest(head)
	c.r += end
	if fe != nil {
		c.refuse(fe)
		return nil, nil, false
	}
	if !c.state.CompareAndSwap(connIdle, connBusy) {
		c.close() // (Shutdown came first)
		return nil, nil, false
	}
	c.first = false
	c.headBy = time.Time{}
	return req, x, true
}

var errHandedOff = errors.New("handed to net/http")

// readHead reads until a whole head is in buf[r:], and returns its length. CRLFs before
// it are skipped (RFC 9112 section 2.2; net/http skips up to 4 bytes of them too).
func (c *h1conn) readHead() (int, error) {
	var scan framing.HeadScan
	lead := 0
	for {
		b := c.buf[c.r:c.w]
		if c.first && c.h2 != nil && len(b) > 0 {
			if n := min(len(b), len(http2Preface)); string(b[:n]) == http2Preface[:n] {
				if n < len(http2Preface) {
					if err := c.fill(readBufLen); err != nil {
						return 0, err
					}
					continue
				}
				return 0, c.handOff()
			}
		}
		for lead < 4 && scan == (framing.HeadScan{}) && len(b) >= 2 && b[0] == '\r' && b[1] == '\n' {
			c.r += 2
			lead += 2
			b = b[2:]
		}
		if len(b) > 0 {
			end, next, err := framing.HeadEnd(b, scan)
			if err != nil {
				return 0, err
			}
			if end > 0 {
				if end > c.s.maxHead {
					return 0, errHeadTooLarge
				}
				return end, nil
			}
			scan = next
		}
		if !c.headDeadline() {
			return 0, net.ErrClosed
		}
		if err := c.fill(c.s.maxHead + 4); err != nil {
			if err == errHeadTooLarge || c.w-c.r > c.s.maxHead {
				return 0, errHeadTooLarge
			}
			return 0, err
		}
	}
}

// handOff gives the connection (an h2c one) to net/http with what was read of it.
func (c *h1conn) handOff() error {
	pre := append([]byte(nil), c.buf[c.r:c.w]...)
	c.r, c.w = 0, 0
	c.release()
	c.nc.SetReadDeadline(time.Time{})
	c.s.remove(c)
	c.h2.give(&prefixConn{Conn: c.nc, pre: pre})
	return errHandedOff
}

// refuse answers a refused head with the edge's 400 (or 431) and closes the connection:
// nothing after it is read, so a request hidden behind it never reaches a backend.
func (c *h1conn) refuse(e *framing.Error) {
	logRefusal(c.s.log, c.remote, e)
	c.nc.SetWriteDeadline(time.Now().Add(refusalWriteTimeout))
	c.nc.Write(refusal(e))
	c.linger()
	c.close()
}

// linger closes the connection's sending side and waits, a short while, for the client
// to close its own before the connection closes: closing with unread bytes would reset
// the connection, and the client could lose the answer it was sent. What the client sends
// meanwhile is read and dropped, up to lingerBytes; past that, reading would only let a
// large upload go on, and the client, blocked in its write, reads its answer instead
// (net/http waits the same half second, reading nothing).
func (c *h1conn) linger() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	end := time.Now().Add(lingerTime)
	c.nc.SetReadDeadline(end)
	var scratch [512]byte
	for read := 0; read < lingerBytes; {
		n, err := c.nc.Read(scratch[:])
		if err != nil {
			return
		}
		read += n
	}
	t := time.NewTimer(time.Until(end))
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.s.closing: // (Close ends every connection at once)
	}
}

// How long, and how much of what the client still sends, a closing connection reads and
// drops (see linger).
const (
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 16 << 10
)
