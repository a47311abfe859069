package balancer

// Regression tests for bugs an independent review of the spillover change found; each
// test's name says what it pins.

import (
	"context"
	"errors"
	"testing"
	"time"
)

// R1: a backend with no latency sample (just joined, or one that only ever times out, so
// Done never feeds its EWMA) costs in-flight+1 while a healthy backend costs
// (in-flight+1)×latency-in-ns: p2c always prefers the unmeasured one, whatever its load.
func TestRegressionCostUnmeasuredBackendAlwaysWins(t *testing.T) {
	reg := NewRegistry()
	p := admPicker(t, reg, Options{Sites: []SiteOptions{
		{Name: "s", Weight: 1, Backends: []string{"fast", "blackhole"}, MaxInflight: 100},
	}})
	fast, hole := admMember(p, 0, 0), admMember(p, 0, 1)
	fast.observeLatency(5 * time.Millisecond)
	// blackhole: 40 requests stuck in flight, each ended by a timeout → Latency 0, no sample.
	var held []*Lease
	for range 40 {
		l := new(Lease)
		if !p.Picker().take(l, 0, hole) {
			t.Fatal("take")
		}
		held = append(held, l)
	}
	n := 0
	for range 20 {
		l := new(Lease)
		if err := p.Picker().Pick(l, 0); err != nil {
			t.Fatal(err)
		}
		if l.Backend == hole {
			n++
		}
		held = append(held, l)
	}
	for _, l := range held {
		l.Done(Result{Overload: true}) // timeouts: no latency
	}
	if n > 0 {
		t.Errorf("%d of 20 picks went to the backend with 40 in flight and no latency sample (fast one idle, 5ms)", n)
	}
}

// R2: a member that discovery drops and lists again (an instance replaced at the same IP,
// a DNS answer that flaps) comes back at its full limit: its Backend lives on in the
// Registry with joined == 0, so it does not slow-start.
func TestRegressionRejoinedMemberSkipsSlowStart(t *testing.T) {
	reg := NewRegistry()
	clk := newFakeClock()
	reg.now = clk.now
	p := admPicker(t, reg, Options{Sites: []SiteOptions{
		{Name: "aws", Weight: 1, Elastic: true, Backends: []string{"c1"}, MaxInflight: 100, SlowStart: time.Minute},
	}})
	if _, err := p.SetMembers("aws", []string{"c1", "c2"}, true); err != nil {
		t.Fatal(err)
	}
	clk.advance(2 * time.Minute)
	_ = p.Status() // ramp over
	if _, err := p.SetMembers("aws", []string{"c1"}, true); err != nil {
		t.Fatal(err)
	}
	clk.advance(time.Hour) // c2 gone for an hour; a new instance gets its IP
	if _, err := p.SetMembers("aws", []string{"c1", "c2"}, true); err != nil {
		t.Fatal(err)
	}
	for _, b := range p.Status()[0].Backends {
		if b.Addr == "c2" && b.Limit != 10 {
			t.Errorf("rejoined member c2: limit %d ramp %v, want 10 (slow start from a tenth)", b.Limit, b.Ramp)
		}
	}
}

// R3: a waiter keeps the Picker it called Admit on. After a new Picker (a reload that raises
// max_inflight) waiters of the old one never see the new capacity, and as head of the shared
// queue they absorb every wake-up, so requests queued on the new Picker behind them starve
// while slots are free.
func TestRegressionQueueWaiterOnOldPickerStarvesNewCapacity(t *testing.T) {
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

var _ = errors.Is

// README (Affinity): "If the session's site is full, this request spills ...; the session
// stays pinned, and its next request goes home again." With hysteresis the next request
// (and every one until home is below resume × limit) spills too, though home has room.
func TestRegressionDownBackendsInflightHidesFreeSlots(t *testing.T) {
	reg := NewRegistry()
	p := admPicker(t, reg, Options{Sites: []SiteOptions{
		{Name: "idc1", Weight: 1, Backends: []string{"a1", "a2"}, MaxInflight: 10},
		{Name: "idc2", Weight: 1, Backends: []string{"b1"}, MaxInflight: 10},
	}})
	var held []*Lease
	a1 := admMember(p, 0, 0)
	for range 10 { // 10 requests stuck on a1 (a black-holed backend, waiting for their timeout)
		l := new(Lease)
		if !p.Picker().take(l, 0, a1) {
			t.Fatal("take")
		}
		held = append(held, l)
	}
	reg.SetUp("idc1", "a1", false) // probes fail: a1 goes down, its 10 requests still in flight
	held = append(held, fillSite(t, p, 1)...)
	defer doneAll(held)
	l, err := pickPreferring(t, p, 1)
	if err != nil {
		t.Errorf("idc2 full, idc1's a2 idle with 10 free slots: Pick = %v", err)
		return
	}
	l.Done(Result{})
}

// R9: Picker.backends calls SetBounds on every listed member whenever discovery reports a new
// set, even with unchanged bounds, and SetBounds abandons a baseline probe in progress. A pool
// whose membership changes often (autoscaling) rarely completes a probe, the safeguard
// against the limit drifting up under sustained load.
func TestRegressionMembershipChangeAbandonsProbe(t *testing.T) {
	reg := NewRegistry()
	p := admPicker(t, reg, Options{Sites: []SiteOptions{
		{Name: "aws", Weight: 1, Elastic: true, Backends: []string{"c1"}},
	}})
	a := admMember(p, 0, 0).adaptive.Load()
	lim := a.Limit()
	for range int(windowFor(float64(lim))) { // one saturated window: the first probe starts
		a.Observe(10*time.Millisecond, lim, false)
	}
	if a.probe.Load() == 0 {
		t.Fatalf("setup: no probe started (limit %d)", a.Limit())
	}
	if _, err := p.SetMembers("aws", []string{"c1", "c2"}, true); err != nil { // another instance joins
		t.Fatal(err)
	}
	if a.probe.Load() == 0 {
		t.Errorf("c1's probe was abandoned because c2 joined (bounds unchanged); limit back to %d", a.Limit())
	}
}
