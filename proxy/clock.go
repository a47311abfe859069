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

// The exchange clock: one timer per request that enforces the timeouts no single read or
// write can (net/http's Transport times one try's wait for response headers, not a
// request's; and nothing in net/http bounds a body that stops flowing midway):
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

// exchangeClock is an exchange's timer; see above. Its zero value is off (no limits).
type exchangeClock struct {
	idle time.Duration // body_idle; 0: no idle limit

	// Unix nanoseconds since which a read or write is under way, 0 when none is.
	clientRead, backendRead, clientWrite atomic.Int64
	// headerBy is the deadline of the current try's response headers, 0 for none (the
	// Transport's own per-try limit then applies); gotHeaders is set once they came.
	headerBy   atomic.Int64
	gotHeaders atomic.Bool

	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
	cancel  context.CancelCauseFunc // the current try's
	rw      http.ResponseWriter     // the client's, for its read and write deadlines
	expired error                   // why the exchange was cut, or nil
}

// start arms the clock for an exchange answering on rw.
func (c *exchangeClock) start(rw http.ResponseWriter) {
	if c.idle <= 0 {
		return
	}
	c.mu.Lock() // a timer that fires at once must find c.timer set
	defer c.mu.Unlock()
	c.rw = rw
	c.timer = time.AfterFunc(c.idle, c.check)
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
	c.headerBy.Store(deadline.UnixNano())
	c.gotHeaders.Store(false)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	if c.timer == nil {
		c.timer = time.AfterFunc(time.Until(deadline), c.check)
		return
	}
	c.timer.Reset(time.Until(deadline))
}

// stop turns the clock off for good: after it returns, the clock touches nothing of the
// exchange's. It is called before the Handler returns, and when a tunnel takes over.
func (c *exchangeClock) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
	if c.timer != nil {
		c.timer.Stop()
	}
}

// cut reports why the clock cut the exchange, or nil.
func (c *exchangeClock) cut() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expired
}

// check runs on the timer: it cuts the exchange if something has been silent too long, or
// sets the timer for when something next could be.
func (c *exchangeClock) check() {
	now := time.Now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || c.expired != nil {
		return
	}
	next := int64(1<<63 - 1)
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
				c.expire(op.err)
				return
			}
			next = min(next, s+int64(c.idle))
		}
	}
	if by := c.headerBy.Load(); by != 0 && !c.gotHeaders.Load() {
		if now >= by {
			c.expire(errHeaderDeadline)
			return
		}
		next = min(next, by)
	}
	if next != 1<<63-1 {
		c.timer.Reset(time.Duration(next - now))
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
func begin(since *atomic.Int64) { since.Store(time.Now().UnixNano()) }
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
