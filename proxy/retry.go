package proxy

import (
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/spillway/spillway/balancer"
)

// Retry policy (bank-safe): a try that provably never reached a backend (the Transport got
// no connection for it: the dial, DNS lookup or TLS handshake failed; see exchange.conns)
// may be retried for any method; a try that may have reached one (a connection was made,
// then a reset, timeout or 502 from upstream) only for an idempotent method or a request
// carrying the idempotency header; never once any response byte went to the client, never when the body
// sent so far was too large to keep, never beyond retries.attempts, and only while the retry
// budget allows.

// idempotentMethods may be sent twice without changing the outcome (RFC 9110 section 9.2.2;
// TRACE is left out, the proxy has no use for retrying it).
var idempotentMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodOptions: true,
	http.MethodPut: true, http.MethodDelete: true,
}

// retryPolicy is the compiled retries section of a config.
type retryPolicy struct {
	attempts          int    // most tries, the first included
	idempotencyHeader string // "" when none is configured
	maxBody           int
	budget            *retryBudget
}

// idempotent reports whether r may be sent again after it may have reached a backend. The
// idempotency header counts only if it reaches the backend: one that the request's own
// Connection header names is dropped on the way, and so proves nothing.
func (p *retryPolicy) idempotent(r *http.Request) bool {
	if idempotentMethods[r.Method] {
		return true
	}
	h := p.idempotencyHeader
	return h != "" && r.Header.Get(h) != "" && !hasToken(r.Header["Connection"], h)
}

// fenceTransportReplay stops net/http's Transport from sending a request out again on its
// own: after a kept-alive connection fails, it silently resends a request without a body
// whose method is GET, HEAD, OPTIONS or TRACE, or that carries Idempotency-Key or
// X-Idempotency-Key, even when the backend had read it (a GET whose backend read it and
// reset reached it twice per try). Every try is the Handler's to make and to count against
// retries.attempts. A non-nil empty body makes a request not replayable. For GET, HEAD,
// OPTIONS and TRACE, "identity" as the transfer coding then makes the Transport send the
// request as it is, with neither Content-Length nor Transfer-Encoding, as those requests
// always go, without first reading the body on a goroutine of its own to see whether it
// is empty. The price, for the rare other bodyless request with an idempotency key, is an
// empty chunked body rather than Content-Length: 0. (A request with a body is never
// resent: it has no GetBody.)
func fenceTransportReplay(out *http.Request) {
	if out.Body != nil && out.Body != http.NoBody {
		return
	}
	switch out.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		out.Body, out.ContentLength, out.TransferEncoding = emptyBody{}, 0, identity
	default:
		if out.Header.Get("Idempotency-Key") != "" || out.Header.Get("X-Idempotency-Key") != "" {
			out.Body = emptyBody{}
		}
	}
}

var identity = []string{"identity"}

// emptyBody is a request body with nothing in it that net/http does not recognise as
// http.NoBody.
type emptyBody struct{}

func (emptyBody) Read([]byte) (int, error) { return 0, io.EOF }
func (emptyBody) Close() error             { return nil }

// WriteTo spares the Transport's copy of the (empty) body a 32 KiB buffer.
func (emptyBody) WriteTo(io.Writer) (int64, error) { return 0, nil }

// retryBudget caps retries at a fraction of the requests of the last budgetWindow seconds,
// with a floor of minPerSecond retries a second, so that retries cannot multiply an outage.
// Counts live in one slot per second; a slot is reset when its second comes round again.
type retryBudget struct {
	ratio        float64
	minPerSecond int
	now          func() time.Time
	// slots are shared with the budgets of later Tables (Deps.Previous), so that a reload
	// does not hand out a fresh budget in the middle of an outage.
	slots *[budgetWindow]budgetSlot
}

const budgetWindow = 10 // seconds

type budgetSlot struct {
	second   atomic.Int64
	requests atomic.Int64
	retries  atomic.Int64
	reset    sync.Mutex // taken only to move the slot to a new second
}

// newRetryBudget returns a budget counting in the slots of prev, if not nil, or in new ones.
func newRetryBudget(ratio float64, minPerSecond int, now func() time.Time, prev *retryBudget) *retryBudget {
	if now == nil {
		now = time.Now
	}
	b := &retryBudget{ratio: ratio, minPerSecond: minPerSecond, now: now, slots: new([budgetWindow]budgetSlot)}
	if prev != nil {
		b.slots = prev.slots
	}
	return b
}

// slot returns the slot of the current second, resetting it if it last counted an older one.
// The counts are zeroed before the new second is published: a caller that sees the slot's
// second as current counts into a slot that will not be zeroed under it (publishing first
// let a concurrent caller's retry be wiped out by the reset, and the budget overspent).
func (b *retryBudget) slot(sec int64) *budgetSlot {
	s := &b.slots[sec%budgetWindow]
	if s.second.Load() != sec {
		s.reset.Lock()
		if s.second.Load() != sec {
			s.requests.Store(0)
			s.retries.Store(0)
			s.second.Store(sec)
		}
		s.reset.Unlock()
	}
	return s
}

// request counts one incoming request.
func (b *retryBudget) request() { b.slot(b.now().Unix()).requests.Add(1) }

// allow spends one retry if the budget has one left: fewer than minPerSecond this second,
// or fewer than ratio of the requests of the window. Concurrent callers never overspend.
func (b *retryBudget) allow() bool {
	sec := b.now().Unix()
	cur := b.slot(sec)
	for {
		var requests, retries int64
		for i := range b.slots {
			s := &b.slots[i]
			if sec-s.second.Load() < budgetWindow {
				requests += s.requests.Load()
				retries += s.retries.Load()
			}
		}
		mine := cur.retries.Load()
		if mine >= int64(b.minPerSecond) && float64(retries+1) > b.ratio*float64(requests) {
			return false
		}
		if cur.retries.CompareAndSwap(mine, mine+1) {
			return true
		}
	}
}

// errStaleAttempt is what an earlier try's reader gets if the transport reads the body
// after the proxy moved on to the next try.
var errStaleAttempt = errors.New("request body read by a superseded try")

// requestBody is a client's request body that can be sent again: it keeps what has been
// read, up to a limit, and each try reads the kept bytes first, then the rest from the
// client. Reads are serialised: the transport may still read for a failed try while the
// next one starts (http.RoundTripper may read the body after RoundTrip returns), and such
// a stale read must neither race nor steal bytes from the new try.
type requestBody struct {
	mu    sync.Mutex
	src   io.ReadCloser
	clock *exchangeClock // watches reads from the client
	// trailer is the request's trailer map, which net/http fills as the body ends and the
	// Transport sends on; headers applies the underscore policy to it then.
	trailer  http.Header
	headers  *headerPolicy
	err      error // reading from the client failed: the client's fault, not the backend's
	limit    int
	kept     []byte
	overflow bool // more than limit was read: the body can no longer be replayed
	try      int  // the current try; readers of older ones get errStaleAttempt
	pos      int  // how much of kept the current try has read
	ended    time.Time
	read     int64 // bytes read from the client (bytes_in in the access log)
}

func newRequestBody(src io.ReadCloser, limit int, clock *exchangeClock, trailer http.Header, headers *headerPolicy) *requestBody {
	return &requestBody{src: src, limit: limit, clock: clock, trailer: trailer, headers: headers}
}

// errUnderscoreTrailer fails a body whose trailers have a "_" name under
// headers.underscores: reject.
var errUnderscoreTrailer = errors.New(`request trailer name with "_" refused (headers.underscores: reject)`)

// clientErr reports whether reading from the client failed.
func (b *requestBody) clientErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// next returns a reader for a new try, or false when what was read so far was not kept.
func (b *requestBody) next() (io.ReadCloser, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.overflow {
		return nil, false
	}
	b.try++
	b.pos = 0
	return tryBody{b: b, try: b.try}, true
}

// endedAt is when the client's body ended (EOF), or zero while it has not.
func (b *requestBody) endedAt() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ended
}

// bytesRead is how many bytes of the body have been read from the client.
func (b *requestBody) bytesRead() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.read
}

// replayable reports whether a new try could send the body again.
func (b *requestBody) replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.overflow
}

// first returns the reader for the first try.
func (b *requestBody) first() io.ReadCloser { return tryBody{b: b} }

type tryBody struct {
	b   *requestBody
	try int
}

func (t tryBody) Read(p []byte) (int, error) {
	b := t.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.try != b.try {
		return 0, errStaleAttempt
	}
	if b.pos < len(b.kept) {
		n := copy(p, b.kept[b.pos:])
		b.pos += n
		return n, nil
	}
	begin(&b.clock.clientRead)
	n, err := b.src.Read(p)
	done(&b.clock.clientRead)
	b.read += int64(n)
	if n > 0 && !b.overflow {
		if len(b.kept)+n <= b.limit {
			b.kept = append(b.kept, p[:n]...)
			b.pos = len(b.kept)
		} else {
			b.overflow, b.kept, b.pos = true, nil, 0
		}
	}
	if err == io.EOF && b.ended.IsZero() {
		b.ended = time.Now()
		// The trailers are in (net/http reads them before it reports the end): the
		// underscore policy applies to them as to the head, before the Transport sends
		// them on.
		if len(b.trailer) > 0 && b.headers != nil && b.headers.underscored(b.trailer) {
			b.ended = time.Time{}
			n, err = 0, errUnderscoreTrailer
		}
	}
	if err != nil && err != io.EOF && !errors.Is(err, context.Canceled) {
		b.err = err
	}
	return n, err
}

// Close does nothing: the server closes the client's body when the handler returns.
func (tryBody) Close() error { return nil }

// retryCounts counts retries by the reason of the failure that caused them.
type retryCounts struct {
	mu sync.Mutex
	n  map[string]uint64
}

func (c *retryCounts) count(reason failure) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]uint64{}
	}
	c.n[reason.String()]++
}

// Retries reports how many retries the Handler has made, by the reason of the failure that
// caused each.
func (h *Handler) Retries() map[string]uint64 {
	h.retries.mu.Lock()
	defer h.retries.mu.Unlock()
	return maps.Clone(h.retries.n)
}

// RetryReasons are the reasons a try can fail and be retried for (the keys Retries may
// have), in the order of the failure table.
func RetryReasons() []string { return slices.Clone(retryReasons) }

// retryReasons are the reasons a try can fail and be retried for.
var retryReasons = func() (out []string) {
	for f, row := range failures {
		if row.retryable {
			out = append(out, failure(f).String())
		}
	}
	return out
}()

// retry moves ex to another backend for one more try, if the retry policy allows one after
// a try that failed with reason (see retry.go), and reports whether it did.
// nextBody is set to the body of the next try.
func (h *Handler) retry(t *Table, ex *exchange, r *http.Request, nextBody *io.ReadCloser, status int, reason failure, reached bool, err error) bool {
	p := &t.retry
	switch {
	case ex.tries >= p.attempts:
		return ex.notRetried("retries.attempts reached")
	case ex.rw.status != 0 || ex.rw.informational || ex.rw.hijacked:
		return ex.notRetried("part of the answer had reached the client")
	case failures[reason].client:
		return ex.notRetried("the client's own doing")
	case reached && !p.idempotent(r):
		// It may have reached the backend: a payment must not go twice.
		return ex.notRetried("it may have reached the backend, and it is not idempotent")
	case ex.body != nil && !ex.body.replayable():
		return ex.notRetried("its body was larger than retries.max_body_bytes")
	}
	if !ex.headerBudget(t) {
		return ex.notRetried("nothing was left of timeouts.response_header")
	}
	var next balancer.Lease
	same := false // the next try goes to the same backend, on this lease
	if t.bal.Picker().PickRetry(&next, ex.lease.SiteIndex, ex.lease.Backend) != nil {
		if !reached {
			// It never reached a backend, and every other one is full this instant:
			// rather than answer 502, it waits in the queue for a slot elsewhere, as a
			// first try would.
			return h.retryQueued(t, ex, r, nextBody, status, reason, err)
		}
		if !ex.reused.Load() || reason != reasonBadGateway {
			// Nowhere else to go; the failure is answered on this try's lease.
			return ex.notRetried("no other backend had room")
		}
		// The only backend left is this one, and the try failed on a kept-alive
		// connection, closed or reset before any answer: the backend probably closed it
		// as idle just as the request went out. Try it again (net/http's Transport would
		// have, silently; here it counts as a try, and only an idempotent request gets it).
		same = true
	}
	release := func() {
		if !same {
			next.Done(balancer.Result{})
		}
	}
	body, ok := h.spend(t, ex, r, status, reason)
	if !ok {
		release()
		return false
	}
	from := ex.lease.Backend
	if !same {
		ex.lease.Done(ex.result())
		ex.lease = next
	}
	h.moveOn(ex, r, nextBody, body, from, status, reason, err)
	return true
}

// spend takes a retry from the budget and the body of the next try (nil for a request
// without one); false when the budget is spent or the body was not kept.
func (h *Handler) spend(t *Table, ex *exchange, r *http.Request, status int, reason failure) (io.ReadCloser, bool) {
	if !t.retry.budget.allow() {
		if ce := h.log.Check(zap.WarnLevel, "retry budget exhausted"); ce != nil {
			ce.Write(ex.logFields(r, status, reason)...)
		}
		return nil, ex.notRetried("the retry budget was spent")
	}
	if ex.body == nil {
		return nil, true
	}
	body, ok := ex.body.next()
	if !ok {
		ex.notRetried("its body was larger than retries.max_body_bytes")
	}
	return body, ok
}

// notRetried records why a failed try was not retried (for explain) and returns false.
func (ex *exchange) notRetried(why string) bool {
	ex.noRetry = why
	return false
}

// moveOn readies ex for its next try, now on ex.lease, with body (nil: none), and counts and
// logs the retry of the try that failed on from.
func (h *Handler) moveOn(ex *exchange, r *http.Request, nextBody *io.ReadCloser, body io.ReadCloser, from *balancer.Backend, status int, reason failure, err error) {
	if body != nil {
		*nextBody = body
	}
	ex.rw.err, ex.reason = nil, reasonNone
	h.retries.count(reason)
	if ce := h.log.Check(zap.InfoLevel, "retrying"); ce != nil {
		// site and backend are the try that failed; next_site and next_backend the next.
		ce.Write(zap.String("request_id", ex.id), zap.String("method", r.Method),
			zap.String("host", r.Host), zap.String("path", r.URL.Path),
			zap.String("site", from.ID.Site), zap.String("backend", from.ID.Addr),
			zap.Int("status", status), zap.String("reason", reason.String()),
			zap.String("next_site", ex.lease.Backend.ID.Site), zap.String("next_backend", ex.lease.Backend.ID.Addr),
			zap.Int("try", ex.tries+1), zap.Duration("queued", ex.lease.Queued), zap.Error(err))
	}
}

// headerBudget works out what is left of the client's wait for response headers for a
// retry (exchange.headerBy), and reports whether anything is. The wait begins once the
// proxy has the whole request: while the client's body is still arriving it has not begun,
// and the retry gets the whole of response_header from the end of the body, timed by the
// Transport as a first try is.
func (ex *exchange) headerBudget(t *Table) bool {
	if ex.body != nil && ex.body.endedAt().IsZero() {
		return true
	}
	if ex.headerBy.IsZero() {
		ex.headerBy = ex.sentAt().Add(t.responseHeader)
	}
	return time.Until(ex.headerBy) > 0
}

// retryQueued is retry for a try that never reached a backend when no other backend has a
// free slot: the try's slot is given back, and the request waits in the queue
// (balancer.Picker.AdmitRetry) for one anywhere but on the backend that failed. If the wait
// fails, ex.waitErr says why, and that is what the client is answered (503 with the queue's
// reason). Time in the queue is not counted in response_header, for a retry as for a first
// try.
func (h *Handler) retryQueued(t *Table, ex *exchange, r *http.Request, nextBody *io.ReadCloser, status int, reason failure, err error) bool {
	body, ok := h.spend(t, ex, r, status, reason)
	if !ok {
		return false
	}
	from, site := ex.lease.Backend, ex.lease.SiteIndex
	ex.lease.Done(ex.result())
	remaining := time.Until(ex.headerBy) // (headerBy is zero while the body still arrives)
	var next balancer.Lease
	if werr := t.bal.Picker().AdmitRetry(r.Context(), &next, site, from); werr != nil {
		if !errors.Is(werr, balancer.ErrNoBackend) {
			ex.waitErr = werr
			return ex.notRetried("it waited for a slot on another backend, and none came")
		} // else: no other backend is up, nothing to wait for: the try's own failure is the answer
		return ex.notRetried("no other backend was up")
	}
	if next.Balancer != t.bal {
		// It waited across a reload and got its slot from the new config's Balancer: the
		// lease's indexes are the Table served now, which the rest of the exchange uses.
		// Should yet another reload have come in between, that Table is gone too: the
		// slot is given back, and the try's own failure is the answer.
		cur := h.table.Load()
		if cur.bal != next.Balancer {
			next.Done(balancer.Result{})
			return ex.notRetried("the config was reloaded twice while it waited for a slot")
		}
		ex.table = cur
	}
	if !ex.headerBy.IsZero() {
		ex.headerBy = time.Now().Add(remaining)
	}
	ex.lease = next
	h.moveOn(ex, r, nextBody, body, from, status, reason, err)
	return true
}
