package balancer

import (
	"context"
	"errors"
	"time"
)

// Lease is one request's hold on a backend: it counts in the backend's and the site's
// in-flight from Pick until Done. Embed it in per-request state; its zero value is ready.
// A Lease belongs to one request and is not safe for concurrent use.
type Lease struct {
	Site    *Site
	Backend *Backend
	// SiteIndex locates the site in the Options the Balancer was built from.
	SiteIndex int
	// Preferred is the index of the site the split (or affinity) chose; it differs from
	// SiteIndex when the request spilled, for Spill.
	Preferred int
	// Spill says why the request went to another site than its preferred one; "" if it did
	// not.
	Spill SpillReason
	// Queued is how long the request waited for a slot.
	Queued time.Duration
	// Started is when the lease was taken.
	Started time.Time
	// Balancer is the one the lease was taken from: SiteIndex and Preferred index its
	// sites. A request queued across a reload can be admitted by a newer Balancer than the
	// one it asked (see MakeCurrent): its caller then finds its own state for that one.
	Balancer *Balancer

	limit *AdaptiveLimit // the backend's, if its site learns limits
	sent  int64          // the backend's in-flight count with this request
	done  bool
}

// Result is how a leased request ended, reported to Lease.Done.
type Result struct {
	Status int   // HTTP status sent to the client; 0 if none was
	Err    error // transport error, if any
	// Latency is the backend's time to response headers; 0 when there is none to learn
	// from (the client went away, the backend was not reached, a protocol switch).
	Latency time.Duration
	// Overload says the backend showed it is over its capacity: a timeout or a 503.
	Overload bool
}

// failed reports whether the try counts as a failure of its backend for the in-site choice:
// a 5xx status, or an error before any status was sent that is not the client's going away.
// An answer broken off midway (an error after a status below 500) is not counted: it may be
// the client's doing.
func (r Result) failed() bool {
	return r.Status >= 500 || (r.Status == 0 && r.Err != nil && !errors.Is(r.Err, context.Canceled))
}

// Done releases the lease and reports how the request ended: the backend's latency feeds its
// moving average and its learned limit, and a request waiting for a slot is woken. Only the
// first call counts; later calls return false and change nothing, so a deferred Done on
// every path is safe.
func (l *Lease) Done(res Result) bool {
	if l.Backend == nil || l.done {
		return false
	}
	l.done = true
	if res.Latency > 0 {
		l.Backend.observeLatency(res.Latency)
	}
	if res.failed() && l.Balancer != nil {
		l.Backend.addFailure(l.Balancer.reg.now().UnixNano())
	}
	if l.limit != nil && (res.Latency > 0 || res.Overload) {
		l.limit.Observe(res.Latency, l.sent, res.Overload)
	}
	l.Backend.inflight.Add(-1)
	l.Site.inflight.Add(-1)
	if q := l.Site.queue; q != nil && q.len.Load() > 0 {
		q.wake()
	}
	return true
}
