package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The exchange clock: a request's timer (kept by the Handler's one watchdog, watchdog.go)
// that enforces the timeouts no single read or write can (net/http's Transport times one
// try's wait for response headers, not a request's; and nothing in net/http bounds a body
// that stops flowing midway):
//
//   - timeouts.response_header bounds the client's whole wait for response headers, retries
//     included: a retry gets only what the first try left (headerBy), and is cut when that
//     runs out;
//   - timeouts.body_idle bounds the silence inside a body once it streams: a read from the
//     client's body, a read from the backend's response body, or a write of it to the
//     client, that has not returned after body_idle cuts the exchange.
//
// Who was silent decides the outcome: a silent backend fails the try (504 before any
// answer; a cut response after) and counts against it for passive health; a silent client
// gets 408 (or a cut response) and does not count against the backend.

// Why an exchange was cut (exchangeClock.expired).
var (
	errHeaderDeadline = errors.New("no response headers within timeouts.response_header (retries included)")
	errBackendIdle    = errors.New("backend silent inside its response body for timeouts.body_idle")
	errClientIdle     = errors.New("client silent inside its request body for timeouts.body_idle")
	errClientStalled  = errors.New("client not reading the response for timeouts.body_idle")
)

// exchangeClock is an exchange's timer; see above. Its zero value is off (no limits). The
// Handler's watchdog (watchdog.go) does its timing: the clock says when it could next run
// out (due), and the watchdog wakes then.
type exchangeClock struct {
	idle time.Duration // body_idle; 0: no idle limit

	// monoNow times since which a read or write is under way, 0 when none is.
	clientRead, backendRead, clientWrite atomic.Int64
	// headerBy is the deadline of the current try's response headers (a monoNow time), 0
	// for none (the Transport's own per-try limit then applies); gotHeaders is set once
	// they came.
	headerBy   atomic.Int64
	gotHeaders atomic.Bool

	// w watches the clock; linked, left, prev and next are w's, under w.mu: whether it is
	// on w's list, whether it has stopped for good, and its neighbours there.
	w            *watchdog
	linked, left bool
	prev, next   *exchangeClock

	mu      sync.Mutex
	stopped bool
	cancel  context.CancelCauseFunc // the current try's
	rw      http.ResponseWriter     // the client's, for its read and write deadlines
	expired error                   // why the exchange was cut, or nil
}

// never is a due time that never comes.
const never = 1<<63 - 1

// clockEpoch is the origin of monoNow.
var clockEpoch = time.Now()

// monoNow is the clock's time: nanoseconds on the monotonic clock (one read of it, where
// time.Now reads the wall clock too), never 0.
func monoNow() int64 { return int64(time.Since(clockEpoch)) + 1 }

// start arms the clock for an exchange answering on rw, watched by w.
func (c *exchangeClock) start(w *watchdog, rw http.ResponseWriter) {
	c.w = w
	if c.idle <= 0 {
		return
	}
	c.rw = rw // (before join: the watchdog may cut at once)
	w.join(c, monoNow()+int64(c.idle))
}

// try makes the context of a new try, which the clock cancels if it cuts the exchange.
func (c *exchangeClock) try(parent context.Context) context.Context {
	ctx, cancel := context.WithCancelCause(parent)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expired != nil {
		cancel(c.expired) // cut already: the try must not run unwatched
		return ctx
	}
	c.cancel = cancel
	return ctx
}

// endTry releases the current try's context.
func (c *exchangeClock) endTry() {
	c.mu.Lock()
	cancel := c.cancel
	c.cancel = nil
	c.mu.Unlock()
	if cancel != nil {
		cancel(context.Canceled)
	}
}

// limitHeaders makes the current try's response headers due by deadline (a retry's).
func (c *exchangeClock) limitHeaders(deadline time.Time) {
	by := int64(deadline.Sub(clockEpoch)) + 1
	c.headerBy.Store(by)
	c.gotHeaders.Store(false)
	if c.w == nil {
		c.w = &orphanWatchdog
	}
	c.w.join(c, by)
}

// stop turns the clock off for good: after it returns, the clock touches nothing of the
// exchange's. It is called before the Handler returns, and when a tunnel takes over.
func (c *exchangeClock) stop() {
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	if c.w != nil {
		c.w.leave(c, true) // (not under c.mu: the watchdog takes w.mu before c.mu)
	}
}

// cut reports why the clock cut the exchange, or nil.
func (c *exchangeClock) cut() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expired
}

// due reports why the clock would cut the exchange at now, or else the earliest time it
// next could (never: nothing to watch). It reads only atomics: the watchdog calls it for
// every clock it watches, under its own lock.
func (c *exchangeClock) due(now int64) (int64, error) {
	next := int64(never)
	if c.idle > 0 {
		next = now + int64(c.idle)
		for _, op := range []struct {
			since *atomic.Int64
			err   error
		}{{&c.clientRead, errClientIdle}, {&c.backendRead, errBackendIdle}, {&c.clientWrite, errClientStalled}} {
			s := op.since.Load()
			if s == 0 {
				continue
			}
			if now-s >= int64(c.idle) {
				return 0, op.err
			}
			next = min(next, s+int64(c.idle))
		}
	}
	if by := c.headerBy.Load(); by != 0 && !c.gotHeaders.Load() {
		if now >= by {
			return 0, errHeaderDeadline
		}
		next = min(next, by)
	}
	return next, nil
}

// expireAt cuts the exchange for err, unless it has stopped or been cut already.
func (c *exchangeClock) expireAt(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopped && c.expired == nil {
		c.expire(err)
	}
}

// expire cuts the exchange for err; c.mu is held. The try's context ends (its backend
// request with it), and a client read or write under way fails at once.
func (c *exchangeClock) expire(err error) {
	c.expired = err
	if c.cancel != nil {
		c.cancel(err)
	}
	rc := http.NewResponseController(c.rw)
	switch err {
	case errClientIdle:
		rc.SetReadDeadline(time.Unix(1, 0))
	case errClientStalled:
		rc.SetWriteDeadline(time.Unix(1, 0))
	}
}

// begin marks an operation as under way; done marks it over.
func begin(since *atomic.Int64) { since.Store(monoNow()) }
func done(since *atomic.Int64)  { since.Store(0) }

// timedBody is a backend's response body whose reads the clock watches.
type timedBody struct {
	io.ReadCloser
	c *exchangeClock
}

func (b *timedBody) Read(p []byte) (int, error) {
	begin(&b.c.backendRead)
	n, err := b.ReadCloser.Read(p)
	done(&b.c.backendRead)
	return n, err
}

// exchangeKey finds the exchange in the context of a request to a backend.
type exchangeKey struct{}

// tryContext is a try's context: the clock's, carrying the exchange for ModifyResponse.
// Embedded in the exchange, it costs no allocation of its own.
type tryContext struct {
	context.Context
	ex *exchange
}

func (c *tryContext) Value(key any) any {
	if key == (exchangeKey{}) {
		return c.ex
	}
	return c.Context.Value(key)
}

// exchangeOf returns the exchange a request to a backend belongs to, or nil.
func exchangeOf(r *http.Request) *exchange {
	ex, _ := r.Context().Value(exchangeKey{}).(*exchange)
	return ex
}
