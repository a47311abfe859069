package balancer

// Regression tests from an independent review of issue 12's work: each pinned a bug, fixed
// in the same commit; the comments describe the bug as it was.

import (
	"context"
	"testing"
	"time"
)

// fixedIntN always draws 0 (then 0 for the second choice, which becomes 1).
func fixedIntN(int) int { return 0 }

// TestReviewRetryWaiterSwallowsWakeup: a first try N waits; then a retry R (AdmitRetry,
// anywhere but on a) queues behind it. The queue becomes congested (non-empty for
// queue.timeout/10), so LIFO makes R the next waiter. a's slot frees: the wake-up goes to R,
// whose try fails (it may not use a), and it goes back to sleep. N, which could take a's
// slot, is never woken and never rechecks (only the next waiter does): it waits out the
// queue timeout and is shed, with a's slot free the whole time. Real clock throughout.
func TestReviewRetryWaiterSwallowsWakeup(t *testing.T) {
	reg := NewRegistry()
	p := admPicker(t, reg, Options{IntN: fixedIntN, QueueSize: 10, QueueTimeout: time.Second,
		Sites: []SiteOptions{{Name: "s", Weight: 1, Backends: []string{"a", "b"}, MaxInflight: 1}}})
	a, b := admMember(p, 0, 0), admMember(p, 0, 1)
	la, lb := new(Lease), new(Lease)
	if !p.Picker().take(la, 0, a) || !p.Picker().take(lb, 0, b) {
		t.Fatal("take")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	firstErr := make(chan error, 1)
	var got *Backend
	go func() { // an ordinary first try
		l := new(Lease)
		err := p.Picker().Admit(ctx, l, 0)
		if err == nil {
			got = l.Backend
			l.Done(Result{Status: 200})
		}
		firstErr <- err
	}()
	waitFor(t, func() bool { return reg.QueueLen() == 1 })
	retryErr := make(chan error, 1)
	go func() { // a retry of a request that failed on a
		l := new(Lease)
		err := p.Picker().AdmitRetry(ctx, l, 0, a)
		if err == nil {
			l.Done(Result{Status: 200})
		}
		retryErr <- err
	}()
	waitFor(t, func() bool { return reg.QueueLen() == 2 })
	time.Sleep(150 * time.Millisecond) // congested (interval 100 ms), nobody past the 250 ms delay target
	freed := time.Now()
	la.Done(Result{Status: 200}) // a's slot frees: the first try could take it
	var err error
	select {
	case err = <-firstErr:
	case <-time.After(3 * time.Second):
		t.Fatal("no answer")
	}
	if err != nil {
		t.Errorf("the first try waiting with the retry: %v %v after a's slot freed; want a slot on a at once", err, time.Since(freed).Round(time.Millisecond))
	} else if got != a {
		t.Errorf("first try got %v, want a", got)
	}
	lb.Done(Result{Status: 200})
	<-retryErr
}

// TestReviewRetryAfterReloadTakesFailedBackend: a retry queued by AdmitRetry under a
// config that is then replaced looks in the new config with prevSite = -1, and PickRetry
// with no site to exclude takes any backend, including the one that failed it (the
// Backend is kept across the reload). The contract: "takes a slot anywhere but on prev".
func TestReviewRetryAfterReloadTakesFailedBackend(t *testing.T) {
	reg := NewRegistry()
	o := Options{IntN: fixedIntN, QueueSize: 10, QueueTimeout: 2 * time.Second,
		Sites: []SiteOptions{{Name: "s", Weight: 1, Backends: []string{"a", "b"}, MaxInflight: 1}}}
	p1, err := New(reg, o)
	if err != nil {
		t.Fatal(err)
	}
	p1.MakeCurrent()
	a, b := admMember(p1, 0, 0), admMember(p1, 0, 1)
	lb := new(Lease)
	if !p1.Picker().take(lb, 0, b) {
		t.Fatal("take b")
	}
	defer lb.Done(Result{Status: 200})
	// a is free, b is full: the retry of a request that failed on a must wait for b.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan *Backend, 1)
	go func() {
		l := new(Lease)
		if err := p1.Picker().AdmitRetry(ctx, l, 0, a); err != nil {
			done <- nil
			return
		}
		done <- l.Backend
		l.Done(Result{Status: 200})
	}()
	waitFor(t, func() bool { return reg.QueueLen() == 1 })
	// A reload with the same site and backends.
	p2 := admPicker(t, reg, o)
	p2.MakeCurrent()
	p1.Close()
	select {
	case got := <-done:
		if got == a {
			t.Errorf("after a reload the queued retry took a slot on a, the backend that failed it")
		}
	case <-time.After(500 * time.Millisecond):
		// still waiting for b: correct
		cancel()
		<-done
	}
}

// TestReviewSlowStartStarvedAtLowLoad: README, "Slow start": a backend that comes back
// "starts at a tenth of its limit and of its share of picks, and ramps up linearly". With
// whole-request scores, at low load its peers score 1 and it scores 1/ramp > 1: it loses
// every comparison, and gets no request at all for the whole of slow_start (the issue's
// "a backend that was down and came back got no request for 7 s").
func TestReviewSlowStartStarvedAtLowLoad(t *testing.T) {
	reg := NewRegistry()
	base := time.Unix(1e9, 0)
	clk := time.Duration(0)
	reg.now = func() time.Time { return base.Add(clk) }
	p := admPicker(t, reg, Options{Sites: []SiteOptions{{Name: "s", Weight: 1,
		Backends: []string{"a", "b"}, MaxInflight: 100, SlowStart: 10 * time.Second}}})
	b := admMember(p, 0, 1)
	reg.SetUp("s", "b", false)
	reg.SetUp("s", "b", true)
	clk = 8 * time.Second // 82% through its ramp: it should get ~0.82 of an even share
	if got := sequentialPicks(t, p, 400, b); got < 40 {
		t.Errorf("8 s into a 10 s slow start, b got %d of 400 sequential requests; want a ramped share (~160)", got)
	}
}

// waitFor polls cond every 5 ms until it holds, failing after 2 s. (proxytest.Eventually
// cannot serve here: proxytest imports balancer, and this is an internal test.)
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", 2*time.Second, "condition")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReviewRetryAfterStaleAfterQuietPeriod: the drain estimate keeps servedAt and gap
// from the last overload, however long ago. When a new burst fills the queue an hour later,
// before anything has been admitted from it, the estimate is (n+1) × max(gap, an hour),
// so every refusal says Retry-After: 30 (the cap), although the queue drains in about the
// gap (100 ms per admission here) and, by the README, before any admission the estimate
// should be queue.timeout (2 s).
func TestReviewRetryAfterStaleAfterQuietPeriod(t *testing.T) {
	reg := NewRegistry()
	base := time.Unix(1e9, 0)
	clk := time.Duration(0)
	reg.now = func() time.Time { return base.Add(clk) }
	p := admPicker(t, reg, Options{QueueSize: 10, QueueTimeout: 2 * time.Second,
		Sites: []SiteOptions{{Name: "s", Weight: 1, Backends: []string{"a"}, MaxInflight: 1}}})
	q := &reg.queue
	// An overload at t=0: three waiters admitted from the queue 100 ms apart.
	var ws []*waiter
	for range 3 {
		w := &waiter{ch: make(chan struct{}, 1)}
		if !q.push(w, 10) {
			t.Fatal("push")
		}
		ws = append(ws, w)
	}
	for _, w := range ws {
		clk += 100 * time.Millisecond
		q.remove(w, true)
	}
	// An hour of quiet, then a new burst: two waiting, nothing admitted yet.
	clk += time.Hour
	for range 2 {
		w := &waiter{ch: make(chan struct{}, 1)}
		if !q.push(w, 10) {
			t.Fatal("push")
		}
		defer q.remove(w, false)
	}
	if got := p.RetryAfter(); got > 2*time.Second {
		t.Errorf("Retry-After at the start of a new burst (2 waiting, 100 ms between admissions last time): %v, want at most queue.timeout (2s)", got)
	}
	// The hour also poisons the gap average: ten admissions 100 ms apart later, with
	// three waiting, the estimate is still pinned at the cap.
	for range 10 {
		w := &waiter{ch: make(chan struct{}, 1)}
		if !q.push(w, 10) {
			t.Fatal("push")
		}
		clk += 100 * time.Millisecond
		q.remove(w, true)
	}
	w := &waiter{ch: make(chan struct{}, 1)}
	q.push(w, 10)
	defer q.remove(w, false)
	if got := p.RetryAfter(); got > 2*time.Second {
		t.Errorf("Retry-After after ten admissions 100 ms apart, 3 waiting: %v, want about 1s (gap still %v)", got, q.gap)
	}
}

// TestReviewPickWithPenaltyDoesNotAllocate pins (passes; not a bug) that Pick and Done stay
// allocation-free on the new paths: failure penalty (clock read, Exp) and slow-start ramp.
func TestReviewPickWithPenaltyDoesNotAllocate(t *testing.T) {
	reg := NewRegistry()
	p := admPicker(t, reg, Options{Sites: []SiteOptions{{Name: "s", Weight: 1,
		Backends: []string{"a", "b", "c"}, MaxInflight: 100, SlowStart: time.Hour}}})
	reg.SetUp("s", "c", false)
	reg.SetUp("s", "c", true) // c ramps
	var l Lease
	if n := testing.AllocsPerRun(200, func() {
		l = Lease{}
		if err := p.Picker().Pick(&l, 0); err != nil {
			t.Fatal(err)
		}
		l.Done(Result{Status: 500, Latency: time.Millisecond})
	}); n != 0 {
		t.Errorf("%.1f allocations per Pick+Done with failures counted, want 0", n)
	}
}
