package balancer

import (
	"context"
	"errors"
	"slices"
	"time"
)

// Admit is Pick that waits: when no site has a free slot, the request joins the queue (at
// most Options.QueueSize wait; see waitQueue for the order) until a slot frees, its context
// ends, Options.QueueTimeout passes, or it is shed for waiting too long in a congested
// queue. While others wait, a new request queues rather than taking the next free slot.
// Errors: ErrNoBackend; ErrQueueFull, ErrQueueTimeout and ErrQueueDelay (all match
// ErrSaturated); the context's error. l.Queued says how long it waited. Every shed is
// counted (Registry.Sheds).
func (p *Picker) Admit(ctx context.Context, l *Lease, key uint64) error {
	q := &p.reg.queue
	pref := -1
	// Nobody waits, or only retries do (each for a slot anywhere but on one backend): a
	// free slot is the new request's to take.
	if q.len.Load() == q.retries.Load() {
		err := p.Pick(l, key)
		if !errors.Is(err, ErrSaturated) {
			return err
		}
		pref = l.Preferred
	} else {
		pl := p.plan
		if len(pl.seq) == 0 && len(pl.elastic) == 0 {
			return ErrNoBackend
		}
		if len(pl.seq) > 0 {
			pref = p.preferred(pl, key)
		}
	}
	return p.wait(ctx, l, false, func(p *Picker, switched bool) error {
		if switched {
			pref = -1 // the new config's sites may differ
		}
		return p.spill(l, p.plan, pref, SpillSaturated, true)
	})
}

// AdmitRetry is PickRetry that waits, for another try of a request whose last try never
// reached a backend (prev refused the connection, say): when no other backend has a free
// slot at that instant, the request joins the queue as Admit's do, and when woken takes a
// slot anywhere but on prev. ErrNoBackend at once when no backend but prev is up, as
// nothing could then free a slot it may take; the other errors are Admit's.
func (p *Picker) AdmitRetry(ctx context.Context, l *Lease, prevSite int, prev *Backend) error {
	err := p.PickRetry(l, prevSite, prev)
	if err == nil || !p.othersUp(prev) {
		return err
	}
	return p.wait(ctx, l, true, func(p *Picker, switched bool) error {
		if switched {
			// The new config's index of prev's site (-1: gone, and prev with it), so
			// that prev stays excluded.
			prevSite = slices.Index(p.names, prev.ID.Site)
		}
		if p.PickRetry(l, prevSite, prev) == nil {
			return nil
		}
		if !p.othersUp(prev) {
			return ErrNoBackend
		}
		return ErrSaturated
	})
}

// othersUp reports whether a backend other than prev is up in a site PickRetry may use.
func (p *Picker) othersUp(prev *Backend) bool {
	pl := p.plan
	for i := range p.sites {
		if pl.weights[i] == 0 && !p.sites[i].elastic {
			continue
		}
		for _, j := range pl.up[i] {
			if pl.members[i][j] != prev {
				return true
			}
		}
	}
	return false
}

// wait queues a request that found no free slot until place (called with the Picker to
// place it in, and whether that is a newer Balancer's than last time) takes one, or the
// wait ends: see Admit. retry marks a waiter of AdmitRetry.
func (p *Picker) wait(ctx context.Context, l *Lease, retry bool, place func(p *Picker, switched bool) error) error {
	q := &p.reg.queue
	if p.queueSize <= 0 {
		p.reg.shed(ShedQueueFull)
		return ErrQueueFull
	}
	w := &waiter{ch: make(chan struct{}, 1), retry: retry}
	if !q.push(w, p.queueSize) {
		p.reg.shed(ShedQueueFull)
		return ErrQueueFull
	}
	start := w.since
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
	// be woken: the next waiter looks once for itself.
	try := q.isNext(w)
	b := p.bal
	for {
		if q.isDropped(w) {
			// Shed from a congested queue; whoever shed it passed its wake-up on.
			p.reg.shed(ShedQueueDelay)
			return ErrQueueDelay
		}
		if try {
			var switched bool
			b, switched = b.successor()
			err := place(b.Picker(), switched)
			if err == nil {
				q.remove(w, true)
				q.wake() // more may have freed at once (a member joined): let the next look
				l.Queued = p.reg.now().Sub(start)
				return nil
			}
			if errors.Is(err, ErrNoBackend) {
				if q.remove(w, false) {
					q.wake()
				}
				return err
			}
			if retry {
				q.passOn()
			}
			if try = q.unsignal(w); try {
				continue
			}
		}
		var err error
		if try, err = p.await(ctx, w, recheck.C, timeout); err != nil {
			return err
		}
	}
}

// successor is where a request queued under b looks for its slot: b, or once b has closed
// (a new config replaced it) the current Balancer, and whether that is another than b.
func (b *Balancer) successor() (next *Balancer, switched bool) {
	if b.closed.Load() {
		if latest := b.reg.latest.Load(); latest != nil && latest != b {
			return latest, true
		}
	}
	return b, false
}

// await blocks the waiter w until it should look for a slot (try), or its wait ends: the
// queue timeout passed, or the client went away (err; w has left the queue, and the shed is
// counted).
func (p *Picker) await(ctx context.Context, w *waiter, recheck, timeout <-chan time.Time) (try bool, err error) {
	q := &p.reg.queue
	select {
	case <-w.ch:
		return true, nil
	case <-recheck:
		return q.isNext(w), nil
	case <-timeout:
		p.reg.shed(ShedQueueTimeout) // before leaving, so whoever sees the queue shorter sees the shed
		if q.remove(w, false) {
			q.wake()
		}
		return false, ErrQueueTimeout
	case <-ctx.Done():
		p.reg.shed(ShedClientGone) // before leaving, so whoever sees the queue shorter sees the shed
		if q.remove(w, false) {
			q.wake()
		}
		return false, ctx.Err()
	}
}

// queueRecheck is how often the next waiter looks for a slot without being woken.
const queueRecheck = 50 * time.Millisecond
