package balancer

import (
	"errors"
	"testing"
)

// Review 13, bug: Prune forgets a backend that no Picker lists even while requests still
// hold leases on it (balancer/registry.go: Prune deletes r.backends[id] without looking at
// Inflight), so when discovery lists it again a new Backend with in-flight 0 is made, and
// the backend takes max_inflight MORE requests on top of those still running on it: a
// member that flaps out and back across a reload gets twice its limit. Prune should keep a
// Backend whose in-flight is not zero (or the Registry should hand back the same Backend
// for the same ID while leases on it are held).
func TestReview13PruneWhileLeasedLetsABackendExceedItsLimit(t *testing.T) {
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
