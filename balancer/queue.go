package balancer

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// waitQueue is the FIFO of requests waiting for a slot when every site is full. It is the
// Registry's, shared by every Picker, so that a slot freed by a request of an older config
// generation still goes to the oldest waiter.
//
// Wake-ups: every Lease.Done, capacity change and successful admission from the queue calls
// wake, which signals the oldest waiter not already signalled. A signalled waiter tries to
// take a slot; if it fails it waits again in its place. A wake that finds every waiter busy
// trying is kept (pending) and handed to the first of them that fails, so that no free
// slot is left unclaimed while someone waits.
type waitQueue struct {
	mu         sync.Mutex
	head, tail *waiter
	pending    int          // wakes that found every waiter already signalled
	len        atomic.Int64 // waiters queued; read without the lock by Lease.Done
}

type waiter struct {
	prev, next *waiter
	ch         chan struct{} // capacity 1: a wake-up
	signalled  bool          // a wake-up was sent and not yet answered by unsignal
	queued     bool
}

// push appends w unless max are already waiting.
func (q *waitQueue) push(w *waiter, max int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if int(q.len.Load()) >= max {
		return false
	}
	w.prev, w.next, w.queued = q.tail, nil, true
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	q.len.Add(1)
	return true
}

// remove takes w out of the queue and reports whether it held a wake-up it had not answered,
// which the caller must pass on (wake) unless it used the slot.
func (q *waitQueue) remove(w *waiter) (signalled bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !w.queued {
		return false
	}
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
	if q.len.Add(-1) == 0 {
		q.pending = 0 // wake-ups for nobody: the next waiter starts afresh
	}
	select {
	case <-w.ch: // a wake-up it never read
		return true
	default:
	}
	return w.signalled
}

// isHead reports whether w is the oldest waiter.
func (q *waitQueue) isHead(w *waiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.head == w
}

// wake signals the oldest waiter that is not already trying for a slot.
func (q *waitQueue) wake() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for w := q.head; w != nil; w = w.next {
		if !w.signalled {
			w.signalled = true
			select {
			case w.ch <- struct{}{}:
			default: // a wake-up it has not read yet; it will look again
			}
			return
		}
	}
	if q.head != nil {
		q.pending++
	}
}

// unsignal is called by a waiter whose try for a slot failed. It reports whether a wake-up
// came meanwhile, for it or finding nobody to signal: then the waiter should try again at
// once.
func (q *waitQueue) unsignal(w *waiter) (again bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
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

// Admit is Pick that waits: when no site has a free slot, the request joins the queue
// (first in, first out; at most Options.QueueSize wait) until a slot frees, its context
// ends, or Options.QueueTimeout passes. While others wait, a new request queues behind them
// rather than taking the next free slot. Errors: ErrNoBackend; ErrQueueFull and
// ErrQueueTimeout (both match ErrSaturated); the context's error. l.Queued says how long
// it waited. Every shed is counted (Registry.Sheds).
func (p *Picker) Admit(ctx context.Context, l *Lease, key uint64) error {
	q := &p.reg.queue
	pref := -1
	if q.len.Load() == 0 {
		err := p.Pick(l, key)
		if !errors.Is(err, ErrSaturated) {
			return err
		}
		pref = l.Preferred
	} else {
		pl := p.plan.Load()
		if len(pl.seq) == 0 && len(pl.elastic) == 0 {
			return ErrNoBackend
		}
		if len(pl.seq) > 0 {
			pref = p.preferred(pl, key)
		}
	}
	if p.queueSize <= 0 {
		p.reg.shed(ShedQueueFull)
		return ErrQueueFull
	}
	w := &waiter{ch: make(chan struct{}, 1)}
	if !q.push(w, p.queueSize) {
		p.reg.shed(ShedQueueFull)
		return ErrQueueFull
	}
	start := time.Now()
	var timeout <-chan time.Time
	if p.queueTimeout > 0 {
		t := time.NewTimer(p.queueTimeout)
		defer t.Stop()
		timeout = t.C
	}
	// Capacity can also grow without an event to wake anyone: a slow-starting backend's
	// limit rises with time. The oldest waiter looks again now and then.
	recheck := time.NewTicker(queueRecheck)
	defer recheck.Stop()
	// A slot may have freed between the failed pick and the push, with nobody queued to
	// be woken: the oldest waiter looks once for itself.
	try := q.isHead(w)
	for {
		if try {
			if p.closed.Load() {
				// A new config replaced the one this request came in under: look for a
				// slot in the new one, with no preference (its sites may differ).
				if latest := p.reg.latest.Load(); latest != nil && latest != p {
					p, pref = latest, -1
				}
			}
			err := p.spill(l, p.plan.Load(), pref, SpillSaturated, true)
			if err == nil {
				q.remove(w)
				q.wake() // more may have freed at once (a member joined): let the next look
				l.Queued = time.Since(start)
				return nil
			}
			if errors.Is(err, ErrNoBackend) {
				if q.remove(w) {
					q.wake()
				}
				return err
			}
			try = q.unsignal(w)
			if try {
				continue
			}
		}
		select {
		case <-w.ch:
			try = true
		case <-recheck.C:
			try = q.isHead(w)
		case <-timeout:
			if q.remove(w) {
				q.wake()
			}
			p.reg.shed(ShedQueueTimeout)
			return ErrQueueTimeout
		case <-ctx.Done():
			if q.remove(w) {
				q.wake()
			}
			p.reg.shed(ShedClientGone)
			return ctx.Err()
		}
	}
}

// queueRecheck is how often the oldest waiter looks for a slot without being woken.
const queueRecheck = 50 * time.Millisecond

// preferred is the site the split (or, for a key, affinity) prefers; pl has a split.
func (p *Picker) preferred(pl *plan, key uint64) int {
	if key != 0 {
		return p.affinity(pl, key)
	}
	return int(pl.seq[(p.cursor.Add(1)-1)%uint64(len(pl.seq))])
}

// QueueLen is the number of requests waiting for a slot.
func (r *Registry) QueueLen() int { return int(r.queue.len.Load()) }
