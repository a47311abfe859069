package balancer

// The cost power-of-two-choices compares: unmeasured backends, slow start, the failure
// penalty.
// From reviews of the balancer; each comment describes the bug its test caught, as it was
// (or says the test only pins behaviour).

import (
	"testing"
	"time"
)

// R1: a backend with no latency sample (just joined, or one that only ever times out, so
// Done never feeds its EWMA) costs in-flight+1 while a healthy backend costs
// (in-flight+1)×latency-in-ns: p2c always prefers the unmeasured one, whatever its load.
func TestCostOfUnmeasuredBackendDoesNotAlwaysWin(t *testing.T) {
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

// TestSlowStartGetsPicksAtLowLoad: README, "Slow start": a backend that comes back
// "starts at a tenth of its limit and of its share of picks, and ramps up linearly". With
// whole-request scores, at low load its peers score 1 and it scores 1/ramp > 1: it loses
// every comparison, and gets no request at all for the whole of slow_start (the issue's
// "a backend that was down and came back got no request for 7 s").
func TestSlowStartGetsPicksAtLowLoad(t *testing.T) {
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

// TestPickWithPenaltyDoesNotAllocate pins (passes; not a bug) that Pick and Done stay
// allocation-free on the new paths: failure penalty (clock read, Exp) and slow-start ramp.
func TestPickWithPenaltyDoesNotAllocate(t *testing.T) {
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
