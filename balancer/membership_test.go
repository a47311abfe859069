package balancer

// What a change of membership (discovery, a reload, Prune) does to a backend's state.
// From reviews of the balancer; each comment describes the bug its test caught, as it was
// (or says the test only pins behaviour).

import (
	"errors"
	"testing"
	"time"
)

// R2: a member that discovery drops and lists again (an instance replaced at the same IP,
// a DNS answer that flaps) comes back at its full limit: its Backend lives on in the
// Registry with joined == 0, so it does not slow-start.
func TestRejoinedMemberSlowStarts(t *testing.T) {
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

// R9: Picker.backends calls SetBounds on every listed member whenever discovery reports a new
// set, even with unchanged bounds, and SetBounds abandons a baseline probe in progress. A pool
// whose membership changes often (autoscaling) rarely completes a probe, the safeguard
// against the limit drifting up under sustained load.
func TestMembershipChangeKeepsProbe(t *testing.T) {
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

// Review 13, bug: Prune forgets a backend that no Picker lists even while requests still
// hold leases on it (balancer/registry.go: Prune deletes r.backends[id] without looking at
// Inflight), so when discovery lists it again a new Backend with in-flight 0 is made, and
// the backend takes max_inflight MORE requests on top of those still running on it: a
// member that flaps out and back across a reload gets twice its limit. Prune should keep a
// Backend whose in-flight is not zero (or the Registry should hand back the same Backend
// for the same ID while leases on it are held).
func TestPruneWhileLeasedKeepsTheBackendsLimit(t *testing.T) {
	reg := NewRegistry()
	const addr = "http://10.0.0.1:8080"
	b, err := New(reg, Options{Sites: []SiteOptions{{Name: "a", Weight: 1, Backends: []string{addr}, MaxInflight: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var first Lease
	if err := b.Picker().Pick(&first, 0); err != nil {
		t.Fatal(err)
	}
	defer first.Done(Result{})
	// Discovery loses the member for a moment (its request keeps running), a reload prunes,
	// and discovery finds it again.
	if _, err := b.SetMembers("a", nil, true); err != nil {
		t.Fatal(err)
	}
	reg.Prune()
	if _, err := b.SetMembers("a", []string{addr}, true); err != nil {
		t.Fatal(err)
	}
	var second Lease
	err = b.Picker().Pick(&second, 0)
	if err == nil {
		defer second.Done(Result{})
		t.Fatalf("a second request was admitted to %s (max_inflight 1) while the first still runs: "+
			"the re-listed backend's in-flight is %d, the leased one's %d (same backend, two counters)",
			addr, second.Backend.Inflight(), first.Backend.Inflight())
	}
	if !errors.Is(err, ErrSaturated) {
		t.Fatalf("Pick: %v, want ErrSaturated", err)
	}
}
