package balancer

// Waiters in the shared queue: first tries and retries, across a new Picker, and the
// Retry-After estimate of those refused.
// From reviews of the balancer; each comment describes the bug its test caught, as it was
// (or says the test only pins behaviour).

import (
	"context"
	"testing"
	"time"
)

// R3: a waiter keeps the Picker it called Admit on. After a new Picker (a reload that raises
// max_inflight) waiters of the old one never see the new capacity, and as head of the shared
// queue they absorb every wake-up, so requests queued on the new Picker behind them starve
// while slots are free.
func TestQueueWaiterOnOldPickerDoesNotStarveNewCapacity(t *testing.T) {
	reg := NewRegistry()
	opts := func(max int) Options {
		return Options{QueueSize: 10, QueueTimeout: 300 * time.Millisecond,
			Sites: []SiteOptions{{Name: "s", Weight: 1, Backends: []string{"a"}, MaxInflight: max}}}
	}
	p1 := admPicker(t, reg, opts(1))
	hold := new(Lease)
	if err := p1.Picker().Pick(hold, 0); err != nil {
		t.Fatal(err)
	}
	old := make(chan error, 1)
	go func() {
		var l Lease
		err := p1.Picker().Admit(context.Background(), &l, 0)
		l.Done(Result{})
		old <- err
	}()
	for reg.QueueLen() == 0 {
		time.Sleep(time.Millisecond)
	}
	p2 := admPicker(t, reg, opts(10)) // reload: 9 free slots now
	p2.MakeCurrent()                  // its config is swapped in
	p1.Close()
	var l Lease
	start := time.Now()
	err := p2.Picker().Admit(context.Background(), &l, 0)
	l.Done(Result{})
	hold.Done(Result{})
	<-old
	if err != nil {
		t.Errorf("new-generation request with 9 free slots: %v after %v", err, time.Since(start))
	}
}

// fixedIntN always draws 0 (then 0 for the second choice, which becomes 1).
func fixedIntN(int) int { return 0 }

// TestRetryWaiterPassesOnWakeup: a first try N waits; then a retry R (AdmitRetry,
// anywhere but on a) queues behind it. The queue becomes congested (non-empty for
// queue.timeout/10), so LIFO makes R the next waiter. a's slot frees: the wake-up goes to R,
// whose try fails (it may not use a), and it goes back to sleep. N, which could take a's
// slot, is never woken and never rechecks (only the next waiter does): it waits out the
// queue timeout and is shed, with a's slot free the whole time. Real clock throughout.
func TestRetryWaiterPassesOnWakeup(t *testing.T) {
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

// TestRetryAfterReloadAvoidsFailedBackend: a retry queued by AdmitRetry under a
// config that is then replaced looks in the new config with prevSite = -1, and PickRetry
// with no site to exclude takes any backend, including the one that failed it (the
// Backend is kept across the reload). The contract: "takes a slot anywhere but on prev".
func TestRetryAfterReloadAvoidsFailedBackend(t *testing.T) {
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

// TestRetryAfterFreshAfterQuietPeriod: the drain estimate keeps servedAt and gap
// from the last overload, however long ago. When a new burst fills the queue an hour later,
// before anything has been admitted from it, the estimate is (n+1) × max(gap, an hour),
// so every refusal says Retry-After: 30 (the cap), although the queue drains in about the
// gap (100 ms per admission here) and, by the README, before any admission the estimate
// should be queue.timeout (2 s).
func TestRetryAfterFreshAfterQuietPeriod(t *testing.T) {
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
