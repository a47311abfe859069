package proxy

import (
	"sync"
	"time"
)

// watchdog is the one timer of a Handler's exchange clocks (clock.go), in place of a timer
// per exchange: arming, resetting and stopping a runtime timer for every request, and the
// two allocations of time.AfterFunc, cost more than the request path's own work around them.
//
// A clock joins when its exchange starts (exchangeClock.start) or gets a header deadline
// (limitHeaders), and leaves when it stops (exchangeClock.stop, on every way out of the
// Handler) or has been cut. The watchdog wakes when the first of its clocks could next run
// out (exchangeClock.due: what one clock's own timer would have been set to), checks them
// all, cuts those whose time is up, and sets its timer for the next. A clock that joins
// later than that next wake (a body_idle from now, or a retry's header deadline) brings
// the wake forward; one that joins after it costs no timer operation, which under load is
// nearly all of them. The precision is the per-exchange timer's: a clock is cut when the
// watchdog's timer fires for it, not on a tick.
//
// The Handler owns it (NewHandler). It holds no goroutine: its timer (time.AfterFunc) runs
// only when something could be due. It is not stopped when the last clock leaves: at a
// low rate every request would then stop it and set it again, and setting a runtime timer
// wakes a second thread to look at the timers (runtime.wakeNetPoller), once per request.
// It lapses instead: the wake that finds nothing watched sets nothing, so an idle Handler
// wakes once after its last request, and then never.
type watchdog struct {
	mu     sync.Mutex
	head   *exchangeClock // the clocks watched, linked through prev and next
	n      int            // how many
	timer  *time.Timer    // made at the first arm
	armed  bool           // timer is set, for wakeAt
	wakeAt int64          // monoNow time
}

// orphanWatchdog watches the clocks of exchanges made without a Handler (tests).
var orphanWatchdog watchdog

// join watches c, and makes sure the watchdog wakes by at (a monoNow time). A clock that
// has left for good (stop) does not join again.
func (w *watchdog) join(c *exchangeClock, at int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.left {
		return
	}
	if !c.linked {
		c.linked = true
		c.prev, c.next = nil, w.head
		if w.head != nil {
			w.head.prev = c
		}
		w.head = c
		w.n++
	}
	w.arm(at)
}

// leave stops watching c, for good when final (the clock stopped). The timer lapses when
// the last clock has left (see watchdog).
func (w *watchdog) leave(c *exchangeClock, final bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c.left = c.left || final
	w.unlink(c)
}

// unlink takes c off the list; w.mu is held.
func (w *watchdog) unlink(c *exchangeClock) {
	if !c.linked {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		w.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next, c.linked = nil, nil, false
	w.n--
}

// arm sets the timer for at unless it is already set for then or earlier; w.mu is held.
func (w *watchdog) arm(at int64) {
	if w.armed && w.wakeAt <= at {
		return
	}
	w.armed, w.wakeAt = true, at
	d := time.Duration(at - monoNow())
	if w.timer == nil {
		w.timer = time.AfterFunc(d, w.check)
		return
	}
	w.timer.Reset(d)
}

// check runs on the timer: it cuts every clock whose time is up, lets go of those with
// nothing left to watch, and sets the timer for the next that could run out.
func (w *watchdog) check() {
	now := monoNow()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed = false
	next := int64(never)
	for c := w.head; c != nil; {
		following := c.next
		at, err := c.due(now)
		switch {
		case err != nil:
			c.expireAt(err) // (w.mu, then c.mu: the one order both are taken in)
			w.unlink(c)
		case at == never:
			w.unlink(c) // nothing to watch until limitHeaders joins it again
		default:
			next = min(next, at)
		}
		c = following
	}
	if next != never {
		w.arm(next)
	}
}
