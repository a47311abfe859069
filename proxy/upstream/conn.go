package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"os"
	"time"
)

// conn is a connection to a backend. While it serves a request, only the request's
// goroutine touches it (the context watch only closes nc); while it is idle in the pool it
// holds no buffer and nothing reads from it.
type conn struct {
	t      *Transport
	k      key
	nc     net.Conn
	br     *bufio.Reader // nil while idle; its source is the conn itself (Read)
	bw     *bufio.Writer // nil while idle; its sink is the conn itself (Write)
	limit  int64         // what br may still read from nc: bounds a response head
	idleAt time.Time
	stop   func() bool // ends the current request's context watch (watch)
	abortf func()      // abort, as a func made once
	probe  probe       // finds a connection the backend closed while idle (probe_*.go)
	// src reads the request body and remembers how reading it failed (the client's
	// doing, unlike a failed write); lr bounds it to Content-Length. Kept here so that a
	// request does not allocate them.
	src bodySource
	lr  io.LimitedReader
}

func newConn(t *Transport, k key, nc net.Conn) *conn {
	c := &conn{t: t, k: k, nc: nc}
	c.abortf = c.abort
	c.probe.init(nc)
	return c
}

// Read is br's source: nc, bounded by limit while a head is read.
func (c *conn) Read(p []byte) (int, error) {
	if c.limit <= 0 {
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.nc.Read(p)
	c.limit -= int64(n)
	return n, err
}

// Write is bw's sink. (bw writes to nc through it so that bufio never hands the body to
// nc's ReadFrom, which would copy it through a buffer of its own.)
func (c *conn) Write(p []byte) (int, error) { return c.nc.Write(p) }

// abort closes the connection when the request's context ends (watch).
func (c *conn) abort() { c.nc.Close() }

// close closes a connection that will not serve again, and gives back its buffers.
// Only the request's goroutine may call it, with no read or write under way.
func (c *conn) close() {
	stopWatch(c.stop)
	c.stop = nil
	c.nc.Close()
	c.t.pool.release(c)
}

// finish ends the request c served: back to the pool if keep, it is still open and
// nothing came after the response, else closed. Nothing means nothing anywhere: not in br,
// nor held by a layer under it (a wrapping conn's buffers, crypto/tls's decrypted input),
// where bytes a backend sent after its answer would be read as the next request's answer.
func (c *conn) finish(keep bool) {
	open := stopWatch(c.stop)
	c.stop = nil
	if !keep || !open || c.br.Buffered() > 0 || Pending(c.nc) {
		c.close()
		return
	}
	c.t.pool.put(c)
}

// Pending reports whether nc holds input already read from the network that nobody has
// read from it: a conn that wraps another says so with a Pending method (and asks what it
// wraps), a *tls.Conn is asked with a read that may not wait (TLSPending).
func Pending(nc net.Conn) bool {
	switch nc := nc.(type) {
	case interface{ Pending() bool }:
		return nc.Pending()
	case *tls.Conn:
		return TLSPending(nc)
	}
	return false
}

// TLSPending reports whether tc has application data or a whole record (an alert, a
// close_notify) read from the network and not yet consumed. It reads with a deadline in
// the past, which takes only what tc holds and never waits for the network; a byte it
// takes is lost, so call it only on a connection that is discarded if it says true.
func TLSPending(tc *tls.Conn) bool {
	if err := tc.SetReadDeadline(time.Unix(1, 0)); err != nil {
		return true
	}
	var b [1]byte
	n, err := tc.Read(b[:])
	if tc.SetReadDeadline(time.Time{}) != nil {
		return true
	}
	return n > 0 || !isTimeout(err)
}

// exchange is one request on a connection.
type exchange struct {
	ctx   context.Context
	req   *http.Request
	plan  plan
	trace *httptrace.ClientTrace
	// pending: the body waits for 100 Continue; it is not sent if a final answer comes
	// first, and the connection then closes.
	pending bool
	// closeAfter: the connection closes after this response whatever its headers say
	// (the request could not be written whole).
	closeAfter bool
	resp       *response // the response head read last (parseHead)
}

// roundTrip sends x's request on c and reads the response head. On error the caller closes
// c; the request's body has been closed.
func (c *conn) roundTrip(ctx context.Context, req *http.Request, p plan, trace *httptrace.ClientTrace) (*http.Response, error) {
	x := exchange{ctx: ctx, req: req, plan: p, trace: trace}
	c.t.pool.acquire(c)
	c.limit = maxResponseHead
	c.stop = watch(ctx, c)
	expect := p.hasBody && c.t.ExpectContinueTimeout > 0 && p.expect
	err := c.writeHead(req, p)
	if err == nil && (!p.hasBody || expect || !inMemory(req.Body)) {
		// The head goes at once when the body may take time to come (net/http does
		// the same): a backend may answer from the head alone.
		err = c.bw.Flush()
	}
	if err != nil {
		closeBody(req)
		return nil, fmt.Errorf("upstream: write request: %w", err)
	}
	if trace != nil && trace.WroteHeaders != nil {
		trace.WroteHeaders()
	}
	x.pending = expect
	if expect {
		answered, err := c.awaitAnswer(&x)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		x.pending = answered
	}
	if !x.pending {
		if err := c.sendBody(&x); err != nil {
			return c.earlyAnswer(&x, err)
		}
	}
	res, err := c.readResponse(&x, c.headerDeadline())
	if err != nil {
		return nil, err
	}
	return c.respond(&x, res)
}

// headerDeadline is when the response head is due if the request was written now.
func (c *conn) headerDeadline() time.Time {
	if d := c.t.ResponseHeaderTimeout; d > 0 {
		return time.Now().Add(d)
	}
	return time.Time{}
}

// awaitAnswer waits, up to ExpectContinueTimeout, for the backend to start answering a
// request that expects 100-continue, and reports whether it did.
func (c *conn) awaitAnswer(x *exchange) (bool, error) {
	if x.trace != nil && x.trace.Wait100Continue != nil {
		x.trace.Wait100Continue()
	}
	c.nc.SetReadDeadline(time.Now().Add(c.t.ExpectContinueTimeout))
	_, err := c.br.Peek(1)
	c.nc.SetReadDeadline(time.Time{})
	switch {
	case err == nil:
		return true, nil
	case isTimeout(err) && x.ctx.Err() == nil:
		return false, nil // no word from the backend: the body goes
	default:
		return false, c.readError(x, err)
	}
}

// earlyAnswer is the outcome of a request whose body could not be written (werr): the
// backend's answer if it sent one before it stopped reading (the connection then closes),
// else werr.
func (c *conn) earlyAnswer(x *exchange, werr error) (*http.Response, error) {
	if c.src.err != nil {
		return nil, c.src.err // reading the body failed: the client's doing, not the backend's
	}
	if x.ctx.Err() != nil {
		return nil, werr
	}
	res, err := c.readResponse(x, time.Now().Add(earlyAnswerWait))
	if err != nil {
		return nil, werr
	}
	x.closeAfter = true
	return c.respond(x, res)
}

// readResponse reads the response head, passing 1xx answers to the trace and sending the
// pending body on 100 Continue. by bounds the wait (zero: none).
func (c *conn) readResponse(x *exchange, by time.Time) (*http.Response, error) {
	c.nc.SetReadDeadline(by)
	defer c.nc.SetReadDeadline(time.Time{})
	trace := x.trace
	if trace != nil && trace.GotFirstResponseByte != nil {
		if _, err := c.br.Peek(1); err == nil {
			trace.GotFirstResponseByte()
		}
	}
	for n1xx := 0; ; {
		s, err := readHead(c.br, checkStatusLine)
		if err == nil {
			x.resp, err = parseHead(s, x.req)
		}
		if err != nil {
			return nil, c.readError(x, err)
		}
		res := &x.resp.Response
		code := res.StatusCode
		if code == http.StatusContinue && x.pending {
			if trace != nil && trace.Got100Continue != nil {
				trace.Got100Continue()
			}
			x.pending = false
			if err := c.sendBody(x); err != nil {
				return nil, err
			}
			c.nc.SetReadDeadline(c.headerDeadline())
		}
		if code >= 200 || code == http.StatusSwitchingProtocols {
			c.limit = math.MaxInt64
			return res, nil
		}
		if n1xx++; n1xx > max1xx {
			return nil, errToo1xx
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(res.Header)); err != nil {
				return nil, err
			}
			c.limit = maxResponseHead // the caller saw it: the limit is for each head
		}
	}
}

var errUnaskedUpgrade = errors.New("upstream: 101 Switching Protocols to a request that asked for no upgrade")

// readError is the error of a failed read of a response head.
func (c *conn) readError(x *exchange, err error) error {
	switch {
	case x.ctx.Err() != nil:
		return context.Cause(x.ctx)
	case isTimeout(err) && c.t.ResponseHeaderTimeout > 0:
		return errHeaderTimeout
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("upstream: %s closed the connection before answering: %w", c.k.addr, err)
	}
	return fmt.Errorf("upstream: read response: %w", err)
}

// respond completes the response head res: its body reads from c, which goes back to the
// pool once the body has ended (at once for a response without one).
func (c *conn) respond(x *exchange, res *http.Response) (*http.Response, error) {
	req := x.req
	keep := !res.Close && !req.Close && !x.closeAfter && !x.pending && !x.plan.closing
	if x.pending {
		closeBody(req) // a final answer came first: the body is not sent
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		if req.Header.Get("Upgrade") == "" {
			// Switching protocols for a request that asked for none: the connection is the
			// backend's to use as it likes now, so neither a response nor pooled.
			res.Body.Close()
			return nil, errUnaskedUpgrade
		}
		if !stopWatch(c.stop) {
			return nil, context.Cause(x.ctx)
		}
		c.stop = nil
		res.Body = &upgradeBody{br: c.br, nc: c.nc}
		c.t.pool.releaseWriter(c)
		return res, nil
	}
	f := x.resp.framing
	if f.kind == frameNone {
		c.finish(keep)
		return res, nil
	}
	b := &x.resp.body // allocated with the response
	*b = body{c: c, kind: f.kind, left: f.length, res: res, ctx: x.ctx, keep: keep}
	if f.kind == frameChunked {
		b.chunks = httputil.NewChunkedReader(c.br)
	}
	res.Body = b
	return res, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
