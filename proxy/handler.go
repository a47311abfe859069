package proxy

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/proxy/frontend"
)

// Handler is the proxy's http.Handler. Each request reads the Table that is current when it
// starts and keeps it to the end, so Swap never disturbs a request in flight.
// Safe for concurrent use; the zero value is not usable, call NewHandler.
type Handler struct {
	table     atomic.Pointer[Table]
	log       *zap.Logger
	ids       *requestIDs
	retries   retryCounts
	recorders []Recorder
	watch     watchdog // times every exchange's clock (watchdog.go)
}

// NewHandler returns a Handler serving t. log receives one line per failed request; nil
// means no logging.
func NewHandler(t *Table, log *zap.Logger, opts ...HandlerOption) *Handler {
	if log == nil {
		log = zap.NewNop()
	}
	h := &Handler{log: log, ids: newRequestIDs()}
	for _, o := range opts {
		o(h)
	}
	h.table.Store(t)
	return h
}

// Swap makes t the Table for new requests and returns the previous one, which the caller
// may Close once it no longer wants it.
func (h *Handler) Swap(t *Table) *Table { return h.table.Swap(t) }

// Table returns the Table new requests use.
func (h *Handler) Table() *Table { return h.table.Load() }

// exchange is one request's state from the first pick to the last release.
type exchange struct {
	lease balancer.Lease // the current try's
	rw    responseWriter
	id    string
	// idSlot holds a request ID the Handler made (requestIDs.ensure), as the request's
	// X-Request-Id header.
	idSlot [1]string
	site   string       // the current try's site
	body   *requestBody // nil for a request without a body
	tries  int
	// reason is why the last try failed; reasonNone while none has.
	reason failure
	start  time.Time
	info   RequestInfo // what the recorders get, kept here so that it is not allocated
	// conns counts the backend connections the Transport got for this request
	// (httptrace GotConn), and conn is the last of them with what had been written to it
	// then. A try during which conns did not move, or nothing was written to its
	// connection, never reached a backend: the dial, DNS lookup or TLS handshake failed,
	// or a kept-alive connection was found closed before the request went out. Judging
	// by error types instead would take a TLS record error after the request was sent
	// for a handshake failure.
	conns       atomic.Int32
	conn        atomic.Pointer[backendConn]
	connWritten atomic.Int64
	reused      atomic.Bool // the last connection had served requests before
	head        bool        // the request is a HEAD
	// clock enforces response_header across retries and body_idle (clock.go); headerBy
	// is when the client's wait for response headers ends, set at the first retry.
	clock    exchangeClock
	headerBy time.Time
	tryCtx   tryContext            // the first try's context
	trace    httptrace.ClientTrace // the tries' GotConn (exchange.gotConn), when it is traced
	noRetry  string                // why the last failed try was not retried, for explain
	affinity bool                  // the session key chose the preferred site
	waitErr  error                 // why a retry's wait in the queue failed (retryQueued)
	// table is the Table whose Balancer granted the lease, whose site indexes the lease's
	// are: the one the request started with, unless its wait in the queue (a first try's
	// or a retry's) crossed a reload (see admit and retryQueued).
	table    *Table
	respBody timedBody // the answer's body, when the clock watches it
}

// gotConn is the exchange's httptrace GotConn.
func (ex *exchange) gotConn(info httptrace.GotConnInfo) {
	ex.reused.Store(info.Reused)
	if bc, ok := info.Conn.(*backendConn); ok {
		bc.isHEAD.Store(ex.head) // what the answer's framing depends on
		ex.connWritten.Store(bc.written.Load())
		ex.conn.Store(bc)
	} else {
		ex.conn.Store(nil)
	}
	ex.conns.Add(1)
}

// reached reports whether the try that began when conns was connsBefore may have
// reached a backend.
func (ex *exchange) reached(connsBefore int32) bool {
	if ex.conns.Load() == connsBefore {
		return false
	}
	bc := ex.conn.Load()
	return bc == nil || bc.written.Load() != ex.connWritten.Load()
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := h.table.Load()
	if r.TLS == nil {
		// The edge terminates TLS itself (see frontend.Serve); net/http sees a plain connection.
		if ec := frontend.ConnOf(r); ec != nil {
			r.TLS = ec.TLSState()
		}
	}
	ex := &exchange{rw: responseWriter{ResponseWriter: w}, start: time.Now()}
	ex.rw.ex = ex
	ex.id = h.ids.ensure(r.Header, &ex.idSlot)
	ex.lease.Preferred = -1
	if r.Method == http.MethodConnect {
		writeError(&ex.rw, r, ex.id, http.StatusMethodNotAllowed, "CONNECT is not supported", 0)
		h.record(t, ex, r)
		return
	}
	if t.headers.underscored(r.Header) || t.headers.underscored(r.Trailer) { // (declared trailers too)
		writeError(&ex.rw, r, ex.id, http.StatusBadRequest, "header names with \"_\" are refused", 0)
		h.record(t, ex, r)
		return
	}
	dropNonWebSocketUpgrade(r.Header)
	t.retry.budget.request()
	key := t.affinityKey(r)
	ex.affinity = key != 0
	t, err := h.admit(t, ex, r.Context(), key)
	if err != nil {
		h.fail(ex, r, err)
		h.record(t, ex, r)
		return
	}
	ex.table = t
	ex.clock.idle = t.bodyIdle
	ex.clock.start(&h.watch, &ex.rw)
	defer h.finish(ex, r)
	h.forward(ex, r)
}

// forward sends an admitted request to its backend, and to others while the retry policy
// allows (see retry), until one answers or it fails for good.
func (h *Handler) forward(ex *exchange, r *http.Request) {
	t := ex.table
	// out is what goes to the backends: a copy, so that the inbound request keeps its own
	// Body. net/http's server looks at that Body when the answer starts: an
	// "Expect: 100-continue" body nobody asked for is then left unread (and the 100 never
	// sent), where any other body would be read, waiting for a client that waits for the
	// 100, before the answer could go.
	base := r.Context()
	ex.head = r.Method == http.MethodHead
	if t.retry.attempts > 1 || ex.head {
		ex.trace.GotConn = ex.gotConn
		base = httptrace.WithClientTrace(base, &ex.trace)
	}
	ex.tryCtx = tryContext{Context: ex.clock.try(base), ex: ex}
	out := r.WithContext(&ex.tryCtx)
	if r.Body != nil && r.Body != http.NoBody {
		if r.ProtoMajor == 2 && h2NeedsContinue(r.Body) {
			r.Header.Set("Expect", "100-continue") // for the backend to answer
		}
		ex.body = newRequestBody(r.Body, t.retry.maxBody, &ex.clock, r.Trailer, &t.headers)
		out.Body = ex.body.first()
	}
	for {
		t := ex.table // (a retry that waited across a reload moves on to the new one)
		ex.tries++
		site := &t.sites[ex.lease.SiteIndex]
		ex.site = site.name
		connsBefore := ex.conns.Load()
		site.proxy.ServeHTTP(&ex.rw, out)
		ex.clock.endTry()
		err := ex.rw.err
		if err == nil {
			t.observe(ex, reasonNone)
			return
		}
		status, reason := classify(err, r, ex)
		if ex.rw.hijacked {
			reason = reasonClientGone // the tunnel was handed over; what fails now is not the backend's doing
		}
		ex.reason = reason
		if ex.clock.cut() != errHeaderDeadline {
			// (A retry cut because the client's wait ran out had only what an earlier try
			// left: that says nothing against its backend.)
			t.observe(ex, reason)
		}
		body := out.Body
		if !h.retry(t, ex, r, &body, status, reason, ex.reached(connsBefore), err) {
			if ex.waitErr != nil {
				err = ex.waitErr // it waited for another slot, and none came
			}
			h.fail(ex, r, err)
			return
		}
		// A new try: a new context (the last one ended), the same request otherwise, and
		// its response headers due by what is left of the client's wait.
		out = out.WithContext(&tryContext{Context: ex.clock.try(base), ex: ex})
		out.Body = body
		if !ex.headerBy.IsZero() {
			ex.clock.limitHeaders(ex.headerBy)
		}
	}
}

// finish releases the lease on every path out of ServeHTTP, including the panic with which
// ReverseProxy aborts a response whose body could not be copied (the backend broke off, or
// the client went away).
func (h *Handler) finish(ex *exchange, r *http.Request) {
	t := ex.table
	v := recover()
	ex.clock.stop()
	ex.clock.endTry()
	if v == nil {
		ex.lease.Done(ex.result())
		h.record(t, ex, r)
		return
	}
	ex.lease.Done(balancer.Result{Status: ex.rw.status, Err: errAborted})
	level, reason := zap.WarnLevel, reasonBackendAborted
	switch cut := ex.clock.cut(); {
	case cut == errClientStalled:
		level, reason = zap.InfoLevel, reasonClientTimeout
	case r.Context().Err() != nil:
		level, reason = zap.DebugLevel, reasonClientGone
	case cut == errBackendIdle:
		reason = reasonBodyIdle
		t.observe(ex, reasonBadGateway) // silent inside its answer: a failure
	default:
		t.observe(ex, reasonBadGateway) // the backend broke off its answer: a failure
	}
	if ce := h.log.Check(level, "response aborted"); ce != nil {
		ce.Write(append(ex.logFields(r, ex.rw.status, reason),
			zap.Int64("bytes", ex.rw.bytes), zap.Any("panic", v))...)
	}
	ex.reason = reason
	h.record(t, ex, r)
	panic(v)
}

// result is how the current try ended, for the balancer: the backend's time to response
// headers feeds its latency average and learned limit, and a timeout or a 503 it answered
// says it is over its capacity. A protocol switch or a try that got no answer teaches
// nothing about latency.
func (ex *exchange) result() balancer.Result {
	if ex.clock.cut() == errHeaderDeadline {
		return balancer.Result{} // the client's wait ran out: nothing learnt of the backend
	}
	res := balancer.Result{Status: ex.rw.status, Err: ex.rw.err}
	switch ex.reason {
	case reasonNone:
		res.Overload = ex.rw.status == http.StatusServiceUnavailable
		if !ex.rw.headerAt.IsZero() && ex.rw.status != http.StatusSwitchingProtocols {
			res.Latency = ex.rw.headerAt.Sub(ex.sentAt())
		}
	case reasonTimeout, reasonConnectTimeout:
		// At least this slow: a backend that times out must not keep looking fast.
		res.Overload, res.Latency = true, time.Since(ex.sentAt())
	case reasonConnect:
		res.Overload = true // refused: down, or its accept queue is full
	}
	return res
}

// sentAt is when the backend had the whole request: the lease's start, or, for a body
// still arriving from the client then, when the body ended. A slow upload is the client's
// time, not the backend's.
func (ex *exchange) sentAt() time.Time {
	start := ex.lease.Started
	if ex.body != nil {
		if end := ex.body.endedAt(); end.After(start) {
			return end
		}
	}
	return start
}

// responseWriter records what the Handler sent the client. Unwrap lets
// http.ResponseController reach the server's writer for Flush and Hijack (WebSocket).
type responseWriter struct {
	http.ResponseWriter
	ex            *exchange
	status        int // the final status sent, once sent
	informational bool
	hijacked      bool
	bytes         int64
	err           error     // the current try's forwarding error, when there was one
	headerAt      time.Time // when the final status was sent
	// flushEach has every write of the body flushed at once: set for a backend's answer
	// of known length (Table.modifyResponse).
	flushEach bool
}

func (w *responseWriter) WriteHeader(code int) {
	switch {
	case code == http.StatusContinue && w.status == 0:
		// A backend's 100 Continue is not passed on: net/http's server sends the client
		// its own when the body is first read, which is when the backend asked for it.
		// Passing both would send two.
		return
	case w.status != 0:
	case code >= 200 || code == http.StatusSwitchingProtocols:
		w.status = code
		w.headerAt = time.Now()
		w.ex.clock.gotHeaders.Store(true)
	default:
		w.informational = true // a 1xx went to the client: no retry after this
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	begin(&w.ex.clock.clientWrite)
	n, err := w.ResponseWriter.Write(p)
	if err == nil && w.flushEach {
		err = w.flush()
	}
	done(&w.ex.clock.clientWrite)
	w.bytes += int64(n)
	return n, err
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands the client's connection over (a WebSocket tunnel) and remembers it: no
// retry, and no error answer, can follow.
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.hijacked = true
	w.ex.clock.stop() // the tunnel's own limits take over (websocket.idle, max_lifetime)
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if ec, ok := c.(*frontend.Conn); ok {
		ec.Tunnel() // what the client sends from now on is the tunnel's, not HTTP
	}
	return c, brw, err
}

// FlushError sends what has been written to the client. Every write of a body is flushed,
// so that it flows at once: a stream's (no Content-Length, or server-sent events) by
// ReverseProxy, which also flushes its headers alone before the first body byte, and any
// other by Write (flushEach). A flush of the headers alone is skipped for a body of known
// length: they then leave with the first part of the body, in one write instead of two, and
// a client cannot use the headers of such a response without its body anyway.
func (w *responseWriter) FlushError() error {
	if cl := w.Header()["Content-Length"]; w.bytes == 0 && len(cl) > 0 && cl[0] != "" {
		return nil
	}
	// A flush is where a small write blocks on a client that does not read: timed as a
	// write (timeouts.body_idle).
	begin(&w.ex.clock.clientWrite)
	err := w.flush()
	done(&w.ex.clock.clientWrite)
	return err
}

// flush flushes the server's writer, without allocating a ResponseController for it when
// that writer can flush itself.
func (w *responseWriter) flush() error {
	if f, ok := w.ResponseWriter.(interface{ FlushError() error }); ok {
		return f.FlushError()
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush is FlushError for callers that want an http.Flusher.
func (w *responseWriter) Flush() { w.FlushError() }
