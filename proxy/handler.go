package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/spillway/spillway/balancer"
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
	site  string       // the current try's site
	body  *requestBody // nil for a request without a body
	tries int
	// reason is why the last try failed; "" while none has.
	reason string
	start  time.Time
	info   RequestInfo // what the recorders get, kept here so that it is not allocated
	// conns counts the backend connections the Transport got for this request
	// (httptrace GotConn). A try during which it did not move never reached a backend: the
	// dial, DNS lookup or TLS handshake failed. Judging by error types instead would take
	// a TLS record error after the request was sent for a handshake failure.
	conns atomic.Int32
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := h.table.Load()
	if r.TLS == nil {
		// The edge terminates TLS itself (see Serve); net/http sees a plain connection.
		if ec := edgeConnOf(r); ec != nil {
			r.TLS = ec.tlsState()
		}
	}
	ex := &exchange{rw: responseWriter{ResponseWriter: w}, start: time.Now()}
	ex.rw.ex = ex
	ex.id = h.ids.ensure(r.Header)
	ex.lease.Preferred = -1
	if r.Method == http.MethodConnect {
		writeError(&ex.rw, ex.id, http.StatusMethodNotAllowed, "CONNECT is not supported")
		h.record(t, ex, r)
		return
	}
	dropNonWebSocketUpgrade(r.Header)
	if r.Body != nil && r.Body != http.NoBody {
		ex.body = newRequestBody(r.Body, t.retry.maxBody)
		r.Body = ex.body.first()
	}
	t.retry.budget.request()
	if err := t.picker.Admit(r.Context(), &ex.lease, t.affinityKey(r)); err != nil {
		h.fail(ex, r, err)
		h.record(t, ex, r)
		return
	}
	if owner, ok := ex.lease.Picker.Owner().(*Table); ok && owner != t {
		// It waited in the queue across a reload and got its slot from the new config:
		// the lease's indexes are that Table's sites.
		t = owner
	}
	defer h.finish(ex, r, t)
	if t.retry.attempts > 1 {
		r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
			GotConn: func(httptrace.GotConnInfo) { ex.conns.Add(1) },
		}))
	}
	for {
		ex.tries++
		site := &t.sites[ex.lease.SiteIndex]
		ex.site = site.name
		connsBefore := ex.conns.Load()
		t.forwarder(site, ex.lease.Backend).ServeHTTP(&ex.rw, r)
		err := ex.rw.err
		if err == nil {
			t.observe(ex, "")
			return
		}
		status, reason := classify(err, r, ex.body)
		if ex.rw.hijacked {
			reason = reasonClientGone // the tunnel was handed over; what fails now is not the backend's doing
		}
		ex.reason = reason
		t.observe(ex, reason)
		reached := ex.conns.Load() != connsBefore
		if !h.retry(t, ex, r, status, reason, reached, err) {
			h.fail(ex, r, err)
			return
		}
	}
}

// retry moves ex to another backend for one more try, if the retry policy allows one after
// a try that failed with reason (see retry.go), and reports whether it did.
func (h *Handler) retry(t *Table, ex *exchange, r *http.Request, status int, reason string, reached bool, err error) bool {
	p := &t.retry
	switch {
	case ex.tries >= p.attempts:
		return false
	case ex.rw.status != 0 || ex.rw.informational || ex.rw.hijacked:
		return false // the client has seen part of this answer
	case reason == reasonClientGone || reason == reasonClientBody:
		return false
	case reached && !p.idempotent(r):
		return false // it may have reached the backend: a payment must not go twice
	case ex.body != nil && !ex.body.replayable():
		return false
	}
	var next balancer.Lease
	if t.picker.PickRetry(&next, ex.lease.SiteIndex, ex.lease.Backend) != nil {
		return false // nowhere else to go; the failure is answered on this try's lease
	}
	if !p.budget.allow() {
		next.Done(balancer.Result{})
		if ce := h.log.Check(zap.WarnLevel, "retry budget exhausted"); ce != nil {
			ce.Write(ex.logFields(r, status, reason)...)
		}
		return false
	}
	var body io.ReadCloser
	if ex.body != nil {
		var ok bool
		if body, ok = ex.body.next(); !ok {
			next.Done(balancer.Result{})
			return false
		}
	}
	from := ex.lease.Backend.ID.Addr
	ex.lease.Done(ex.result())
	ex.lease = next
	if body != nil {
		r.Body = body
	}
	ex.rw.err, ex.reason = nil, ""
	h.retries.count(reason)
	if ce := h.log.Check(zap.InfoLevel, "retrying"); ce != nil {
		ce.Write(append(ex.logFields(r, status, reason), zap.String("from_site", ex.site),
			zap.String("from_backend", from), zap.Int("try", ex.tries+1), zap.Error(err))...)
	}
	return true
}

// finish releases the lease on every path out of ServeHTTP, including the panic with which
// ReverseProxy aborts a response whose body could not be copied (the backend broke off, or
// the client went away).
func (h *Handler) finish(ex *exchange, r *http.Request, t *Table) {
	v := recover()
	if v == nil {
		ex.lease.Done(ex.result())
		h.record(t, ex, r)
		return
	}
	ex.lease.Done(balancer.Result{Status: ex.rw.status, Err: errAborted})
	level, reason := zap.WarnLevel, "backend_aborted"
	if r.Context().Err() != nil {
		level, reason = zap.DebugLevel, reasonClientGone
	} else {
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
	res := balancer.Result{Status: ex.rw.status, Err: ex.rw.err}
	switch ex.reason {
	case "":
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
}

func (w *responseWriter) WriteHeader(code int) {
	switch {
	case w.status != 0:
	case code >= 200 || code == http.StatusSwitchingProtocols:
		w.status = code
		w.headerAt = time.Now()
	default:
		w.informational = true // a 1xx went to the client: no retry after this
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands the client's connection over (a WebSocket tunnel) and remembers it: no
// retry, and no error answer, can follow.
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.hijacked = true
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if ec, ok := c.(*edgeConn); ok {
		ec.tunnel() // what the client sends from now on is the tunnel's, not HTTP
	}
	return c, brw, err
}

// FlushError sends what has been written to the client. ReverseProxy flushes after every
// write (FlushInterval -1) so that streamed bodies flow at once, and also flushes the
// headers alone before the first body byte. For a body of known length that first flush is
// skipped: the headers then leave with the first part of the body, in one write instead of
// two, and a client cannot use the headers of such a response without its body anyway.
// Streams (no Content-Length, or server-sent events) get their headers at once.
func (w *responseWriter) FlushError() error {
	if w.bytes == 0 && w.Header().Get("Content-Length") != "" {
		return nil
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush is FlushError for callers that want an http.Flusher.
func (w *responseWriter) Flush() { w.FlushError() }
