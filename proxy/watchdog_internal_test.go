package proxy

import (
	"context"
	"testing"
	"time"
)

// TestWatchdogIdleWhenNothingWatched: once the last clock stops, the watchdog's timer
// lapses: the wake that finds nothing watched sets nothing, so an idle Handler wakes once
// and never again. A clock that joins meanwhile costs no timer operation.
func TestWatchdogIdleWhenNothingWatched(t *testing.T) {
	var w watchdog
	var a, b exchangeClock
	a.idle, b.idle = time.Minute, time.Minute
	a.start(&w, nil)
	b.start(&w, nil)
	defer func() { w.timer.Stop() }()
	a.stop()
	w.mu.Lock()
	armed, n := w.armed, w.n
	w.mu.Unlock()
	if !armed || n != 1 {
		t.Fatalf("with one clock still running: armed %v, %d watched; want true, 1", armed, n)
	}
	b.stop()
	b.stop() // (the Handler stops a tunnel's clock, then again as it returns)
	w.mu.Lock()
	armed, n, at := w.armed, w.n, w.wakeAt
	w.mu.Unlock()
	if !armed || n != 0 {
		t.Fatalf("after the last clock stopped: armed %v, %d watched; want true (it lapses), 0", armed, n)
	}
	var c exchangeClock
	c.idle = 2 * time.Minute
	c.start(&w, nil) // due after the wake already set: the timer is left as it is
	w.mu.Lock()
	if w.wakeAt != at {
		t.Errorf("a later clock moved the wake from %d to %d", at, w.wakeAt)
	}
	w.mu.Unlock()
	c.stop()
	w.check() // the timer's wake, with nothing watched
	w.mu.Lock()
	armed, n = w.armed, w.n
	w.mu.Unlock()
	if armed || n != 0 {
		t.Errorf("after a wake with nothing watched: armed %v, %d watched; want false, 0", armed, n)
	}
	// After the lapse, a clock that joins sets the timer again, and is cut on time.
	var d exchangeClock
	d.idle = 50 * time.Millisecond
	d.start(&w, nil)
	defer d.stop()
	ctx := d.try(context.Background())
	defer d.endTry()
	begin(&d.backendRead)
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second): // (liveness only)
		t.Fatal("a clock that joined after the timer lapsed was never cut")
	}
	b.limitHeaders(time.Now().Add(time.Millisecond)) // a stopped clock does not come back
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n != 0 || w.armed {
		t.Errorf("a stopped clock joined again")
	}
}

// TestWatchdogEarlierClockBringsWakeForward: a clock due before the watchdog's next wake
// (a retry's header deadline, under clocks with a long body_idle) is cut on time, and the
// others are not.
func TestWatchdogEarlierClockBringsWakeForward(t *testing.T) {
	var w watchdog
	var long, short exchangeClock
	long.idle = time.Minute
	long.start(&w, nil)
	defer long.stop()
	short.start(&w, nil)
	defer short.stop()
	ctx := short.try(context.Background())
	defer short.endTry()
	start := time.Now()
	short.limitHeaders(start.Add(50 * time.Millisecond))
	select {
	case <-ctx.Done():
		if took := time.Since(start); took < 50*time.Millisecond || took > time.Second {
			t.Errorf("cut after %v, want about 50ms", took)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the header deadline was not enforced")
	}
	if short.cut() != errHeaderDeadline || long.cut() != nil {
		t.Errorf("cut: %v and %v, want the header deadline and nil", short.cut(), long.cut())
	}
}

// TestWatchdogBodyIdle: an operation under way for body_idle cuts its exchange; one that
// keeps returning does not.
func TestWatchdogBodyIdle(t *testing.T) {
	var w watchdog
	var busy, silent exchangeClock
	busy.idle, silent.idle = 60*time.Millisecond, 60*time.Millisecond
	busy.start(&w, nil)
	defer busy.stop()
	silent.start(&w, nil)
	defer silent.stop()
	ctx := silent.try(context.Background())
	defer silent.endTry()
	begin(&silent.backendRead)
	for range 10 { // 200 ms of reads that each return at once
		begin(&busy.backendRead)
		done(&busy.backendRead)
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-ctx.Done():
	default:
		t.Fatal("a read under way for more than body_idle did not cut its exchange")
	}
	if silent.cut() != errBackendIdle || busy.cut() != nil {
		t.Errorf("cut: %v and %v, want the backend's silence and nil", silent.cut(), busy.cut())
	}
}
