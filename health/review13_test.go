package health

import (
	"testing"
	"time"
)

// Review 13 (passes; kept as a guard): an ejected backend's count now grows while it is
// ejected (Observe counts into the Peer before it looks at the ejection). That must neither
// eject past max_ejection_percent (the guard counts ejections, not counts) nor keep a
// backend out: when it returns its count is zero, and it takes a whole new run to eject it
// again; and a backend refused by the guard is ejected once a slot frees.
func TestReview13CountGrowingWhileEjectedRespectsGuardAndReturn(t *testing.T) {
	t.Parallel()
	f := newFixture(t, OutlierOptions{ConsecutiveFailures: 3, BaseEjection: time.Second, MaxEjectionPercent: 50},
		map[string][]string{"s": {"a", "b", "c", "d"}})
	f.fail("s", "a", 3)
	f.fail("s", "b", 3)
	f.expectCalls(t, eject("s", "a"), eject("s", "b"))
	// Requests still in flight on a and b keep failing while they are out.
	f.fail("s", "a", 100)
	f.fail("s", "b", 100)
	f.fail("s", "c", 10) // refused by the guard: 2 of 4 are out
	f.expectCalls(t)
	if n := f.peers.get("s", "a").run.Load(); n < 100 {
		t.Fatalf("a's run while ejected = %d, want it counted", n)
	}
	// a's ejection ends: it returns with no run, and c (still failing) takes the slot.
	var aTimer *fakeTimer
	for _, tm := range f.timers.pending() {
		aTimer = tm
		break
	}
	f.timers.fire(t, aTimer)
	got := f.rec.take()
	if len(got) != 1 || got[0].ejected {
		t.Fatalf("SetEjected calls = %v, want one return", got)
	}
	back := got[0].addr
	if n := f.peers.get("s", back).run.Load(); n != 0 {
		t.Fatalf("%s returned with a run of %d, want 0", back, n)
	}
	f.fail("s", back, 2) // below the threshold: stays in
	f.expectCalls(t)
	f.fail("s", "c", 1)
	f.expectCalls(t, eject("s", "c"))
	f.fail("s", back, 1) // its third in a row: but the guard is full again
	f.expectCalls(t)
	ejected := 0
	for _, addr := range []string{"a", "b", "c", "d"} {
		if f.o.Ejected("s", addr) {
			ejected++
		}
	}
	if ejected != 2 {
		t.Fatalf("%d of 4 ejected, want 2 (max_ejection_percent 50)", ejected)
	}
	// Every ejection ends.
	for _, tm := range f.timers.pending() {
		f.timers.fire(t, tm)
	}
	for _, addr := range []string{"a", "b", "c", "d"} {
		if f.o.Ejected("s", addr) {
			t.Errorf("%s still ejected after its timer fired", addr)
		}
	}
}
