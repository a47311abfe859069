package balancer

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// waitQueue holds the requests waiting for a slot when every site is full. It is the
// Registry's, shared by every Balancer, so that a slot freed by a request of an older config
// generation still goes to a waiter.
//
// Discipline: first in, first out while the queue drains; under sustained overload,
// controlled delay with adaptive LIFO, as large RPC stacks do (Facebook's "Fail at scale",
// after CoDel). When the queue has not been empty for a whole interval (a tenth of the
// queue timeout) it is congested: then a freed slot goes to the newest waiter (the one
// most likely to still have a client that cares), and waiters that have waited longer than
// the delay target (a quarter of the timeout) are shed from the head (ErrQueueDelay) instead
// of waiting out the whole queue timeout. A FIFO that is always full makes every request it
// serves wait nearly the whole timeout (p50 of successes 1.93 s with the 2 s default at 5x
// capacity, through the proxy); this serves what it serves quickly (107 ms, the service
// time), and tells the others early. Nothing waits longer than the queue timeout.
//
// Wake-ups: every Lease.Done, capacity change and successful admission from the queue calls
// wake, which signals the next waiter (the oldest, or while congested the newest) not
// already signalled. A signalled waiter tries to take a slot; if it fails it waits again in
// its place. A wake that finds every waiter busy trying is kept (pending) and handed to the
// first of them that fails, so that no free slot is left unclaimed while someone waits.
type waitQueue struct {
	mu         sync.Mutex
	head, tail *waiter
	pending    int          // wakes that found every waiter already signalled
	len        atomic.Int64 // waiters queued; read without the lock by Lease.Done
	retries    atomic.Int64 // of which retries (waiter.retry)

	// now is the Registry's clock.
	now func() time.Time
	// interval is how long the queue must stay non-empty to count as congested; delay is
	// how long a waiter may wait while it is (0: until the queue timeout). Set from the
	// current Balancer's queue timeout (setPolicy).
	interval, delay time.Duration
	busySince       time.Time // when the queue last became non-empty; zero while empty

	// The drain estimate, for Retry-After: when a waiter was last admitted, and a moving
	// average of the time between two admissions.
	servedAt time.Time
	gap      time.Duration
}

type waiter struct {
	prev, next *waiter
	ch         chan struct{} // capacity 1: a wake-up
	signalled  bool          // a wake-up was sent and not yet answered by unsignal
	queued     bool
	retry      bool      // a retry, which may not take a slot on the backend that failed it
	since      time.Time // when it joined
	dropped    bool      // shed for waiting too long in a congested queue
}

// Controlled delay, from the queue timeout T: the queue is congested once it has been
// non-empty for T/10 (a standing queue, not a burst), and then a waiter may wait T/4 (so
// what is served waits at most that, well within the timeout). Without a timeout,
// congestion is judged over defaultInterval and nobody is shed for it.
const (
	intervalFraction = 10
	delayFraction    = 4
	defaultInterval  = 100 * time.Millisecond
)

// setPolicy derives the congestion interval and delay target from the queue timeout of
// the current Balancer.
func (q *waitQueue) setPolicy(timeout time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.interval, q.delay = defaultInterval, 0
	if timeout > 0 {
		q.interval = max(timeout/intervalFraction, time.Millisecond)
		q.delay = timeout / delayFraction
	}
}

// congestedLocked reports whether the queue has been non-empty for a whole interval.
func (q *waitQueue) congestedLocked(now time.Time) bool {
	return q.head != nil && !q.busySince.IsZero() && now.Sub(q.busySince) >= q.interval
}

// shedLateLocked sheds, from the head, the waiters that have waited longer than the delay
// target of a congested queue; each finds dropped set when it wakes, and leaves. It returns
// how many of them held a wake-up (signalled, maybe trying for a slot this moment), which
// the caller must pass on: a shed waiter never does.
func (q *waitQueue) shedLateLocked(now time.Time) (owed int) {
	if q.delay <= 0 {
		return 0
	}
	for w := q.head; w != nil && now.Sub(w.since) > q.delay; w = q.head {
		q.unlinkLocked(w)
		w.dropped = true
		if w.signalled {
			owed++
		}
		select {
		case w.ch <- struct{}{}:
		default: // a wake-up it has not read yet; it will see dropped
		}
	}
	return owed
}

// passOnLocked signals n waiters (see wake); what finds nobody to signal is kept pending.
func (q *waitQueue) passOnLocked(n int, congested bool) {
	for ; n > 0; n-- {
		if !q.signalNextLocked(congested) {
			break
		}
	}
	if n > 0 && q.head != nil {
		q.pending += n
	}
}

// signalNextLocked signals the next waiter not already trying for a slot: the oldest, or
// while congested the newest. It reports whether there was one.
func (q *waitQueue) signalNextLocked(congested bool) bool {
	if congested {
		for w := q.tail; w != nil; w = w.prev {
			if q.signalLocked(w) {
				return true
			}
		}
		return false
	}
	for w := q.head; w != nil; w = w.next {
		if q.signalLocked(w) {
			return true
		}
	}
	return false
}

// push appends w unless max are already waiting.
func (q *waitQueue) push(w *waiter, max int) bool {
	now := q.now() // before the lock: the clock is the caller's (tests hook into it)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.congestedLocked(now) {
		// Room for the newcomer, who is served first.
		q.passOnLocked(q.shedLateLocked(now), true)
	}
	if int(q.len.Load()) >= max {
		return false
	}
	if q.head == nil {
		q.busySince = now
	}
	w.prev, w.next, w.queued, w.since = q.tail, nil, true, now
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	if w.retry {
		q.retries.Add(1)
	}
	q.len.Add(1)
	return true
}

// remove takes w out of the queue and reports whether it held a wake-up it had not answered,
// which the caller must pass on (wake) unless it used the slot. served says w leaves with a
// slot, for the drain estimate.
func (q *waitQueue) remove(w *waiter, served bool) (signalled bool) {
	var now time.Time
	if served {
		now = q.now()
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if served {
		if !q.servedAt.IsZero() {
			g := now.Sub(q.servedAt)
			if q.gap == 0 {
				q.gap = g
			} else {
				q.gap += (g - q.gap) / 8
			}
		}
		q.servedAt = now
	}
	if !w.queued {
		return false
	}
	q.unlinkLocked(w)
	select {
	case <-w.ch: // a wake-up it never read
		return true
	default:
	}
	return w.signalled
}

// unlinkLocked takes w, which is queued, out of the list.
func (q *waitQueue) unlinkLocked(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next, w.queued = nil, nil, false
	if w.retry {
		q.retries.Add(-1)
	}
	if q.len.Add(-1) == 0 {
		q.pending = 0 // wake-ups for nobody: the next waiter starts afresh
		q.busySince = time.Time{}
		// The drain estimate is of this busy period: the next starts from the timeout,
		// not from the quiet time since the last admission.
		q.servedAt, q.gap = time.Time{}, 0
	}
}

// passOn is called by a retry that was woken (or looked) and could not take a slot: the
// slot that freed may be on the backend that failed it, which any first try may take. It
// signals the next first-try waiter not already trying, so that the slot is not left
// unclaimed. Only first tries are signalled: two retries cannot pass a wake-up back and
// forth.
func (q *waitQueue) passOn() {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.len.Load() == q.retries.Load() {
		return
	}
	if q.congestedLocked(now) {
		for w := q.tail; w != nil; w = w.prev {
			if !w.retry && q.signalLocked(w) {
				return
			}
		}
		return
	}
	for w := q.head; w != nil; w = w.next {
		if !w.retry && q.signalLocked(w) {
			return
		}
	}
}

// isNext reports whether w is the waiter a freed slot would go to: the oldest, or while the
// queue is congested the newest.
func (q *waitQueue) isNext(w *waiter) bool {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.congestedLocked(now) {
		return q.tail == w
	}
	return q.head == w
}

// isDropped reports whether w was shed for waiting too long in a congested queue. Waiters
// are shed only when the queue moves (a slot frees, a request arrives), as CoDel drops at
// dequeue: a queue where nothing happens leaves each waiter its whole timeout.
func (q *waitQueue) isDropped(w *waiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return w.dropped
}

// wake signals the next waiter that is not already trying for a slot: the oldest, or
// while the queue is congested (after shedding those that waited too long) the newest.
func (q *waitQueue) wake() {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == nil {
		return
	}
	owed, congested := 1, q.congestedLocked(now)
	if congested {
		owed += q.shedLateLocked(now)
	}
	q.passOnLocked(owed, congested)
}

// signalLocked sends w a wake-up unless it is already trying for a slot, and reports
// whether it did.
func (q *waitQueue) signalLocked(w *waiter) bool {
	if w.signalled {
		return false
	}
	w.signalled = true
	select {
	case w.ch <- struct{}{}:
	default: // a wake-up it has not read yet; it will look again
	}
	return true
}

// maxRetryAfter bounds the Retry-After of a refusal.
const maxRetryAfter = 30 * time.Second

// retryAfter estimates how long the queue takes to drain: the requests waiting, plus the
// one refused, times the time between two admissions lately (longer if none came for a
// while), in whole seconds from 1 to maxRetryAfter. Before any admission from the queue
// there is nothing to go on but the timeout a waiter would wait.
func (q *waitQueue) retryAfter(timeout time.Duration) time.Duration {
	now := q.now()
	q.mu.Lock()
	n, gap, at := q.len.Load(), q.gap, q.servedAt
	q.mu.Unlock()
	var d time.Duration
	switch {
	case n == 0:
		d = 0
	case at.IsZero() || gap == 0:
		d = timeout
	default:
		d = time.Duration(n+1) * max(gap, now.Sub(at))
	}
	secs := math.Ceil(d.Seconds())
	return time.Duration(min(max(secs, 1), maxRetryAfter.Seconds())) * time.Second
}

// unsignal is called by a waiter whose try for a slot failed. It reports whether a wake-up
// came meanwhile, for it or finding nobody to signal: then the waiter should try again at
// once.
func (q *waitQueue) unsignal(w *waiter) (again bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if w.dropped {
		return true // it leaves; whoever shed it passed its wake-up on
	}
	select {
	case <-w.ch:
		// Woken while it looked (its first look needs no wake-up): the slot that freed
		// may be one it missed. It looks again, still signalled, so that if it leaves
		// instead, remove passes the wake-up on.
		w.signalled = true
		return true
	default:
	}
	if q.pending > 0 {
		q.pending--
		return true
	}
	w.signalled = false
	return false
}

// QueueLen is the number of requests waiting for a slot.
func (r *Registry) QueueLen() int { return int(r.queue.len.Load()) }
