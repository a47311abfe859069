package health

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// ejection is one call to Ejector.SetEjected.
type ejection struct {
	site, addr string
	ejected    bool
}

func (e ejection) String() string {
	if e.ejected {
		return "eject " + e.site + "/" + e.addr
	}
	return "return " + e.site + "/" + e.addr
}

// recorder is an Ejector that records every call, and sends it on ch if ch is not nil.
type recorder struct {
	mu    sync.Mutex
	calls []ejection
	ch    chan ejection
}

func (r *recorder) SetEjected(site, addr string, ejected bool) {
	e := ejection{site, addr, ejected}
	r.mu.Lock()
	r.calls = append(r.calls, e)
	r.mu.Unlock()
	if r.ch != nil {
		select {
		case r.ch <- e:
		default: // must not block; the channel is sized by the test
		}
	}
}

func (r *recorder) take() []ejection {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

// fakeClock is a clock that moves only when the test advances it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeTimers replaces time.AfterFunc: timers fire only when the test fires them.
type fakeTimers struct {
	mu     sync.Mutex
	timers []*fakeTimer
}

type fakeTimer struct {
	d       time.Duration
	f       func()
	stopped bool // by the stop function
	fired   bool // by the test
}

func (ft *fakeTimers) AfterFunc(d time.Duration, f func()) func() bool {
	t := &fakeTimer{d: d, f: f}
	ft.mu.Lock()
	ft.timers = append(ft.timers, t)
	ft.mu.Unlock()
	return func() bool {
		ft.mu.Lock()
		defer ft.mu.Unlock()
		if t.stopped || t.fired {
			return false
		}
		t.stopped = true
		return true
	}
}

// pending returns the timers neither stopped nor fired.
func (ft *fakeTimers) pending() []*fakeTimer {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	var p []*fakeTimer
	for _, t := range ft.timers {
		if !t.stopped && !t.fired {
			p = append(p, t)
		}
	}
	return p
}

// fire runs a pending timer, as the runtime would once its duration has passed.
func (ft *fakeTimers) fire(tb testing.TB, t *fakeTimer) {
	tb.Helper()
	ft.mu.Lock()
	if t.stopped || t.fired {
		ft.mu.Unlock()
		tb.Fatalf("fire: timer (%v) is not pending", t.d)
	}
	t.fired = true
	ft.mu.Unlock()
	t.f()
}

// onlyPending returns the one pending timer, failing the test unless there is exactly one.
func (ft *fakeTimers) onlyPending(tb testing.TB) *fakeTimer {
	tb.Helper()
	p := ft.pending()
	if len(p) != 1 {
		tb.Fatalf("pending timers = %d, want 1", len(p))
	}
	return p[0]
}

// fixture is a detector on a fake clock and fake timers, logging to an observer.
type fixture struct {
	o      *Outliers
	peers  *peerSet
	rec    *recorder
	clock  *fakeClock
	timers *fakeTimers
	logs   *observer.ObservedLogs
}

func newFixture(t *testing.T, opts OutlierOptions, members map[string][]string) *fixture {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	f := &fixture{
		peers:  &peerSet{},
		rec:    &recorder{},
		clock:  &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)},
		timers: &fakeTimers{},
		logs:   logs,
	}
	opts.Ejector = f.rec
	opts.Now = f.clock.Now
	opts.AfterFunc = f.timers.AfterFunc
	opts.Log = zap.New(core)
	f.o = NewOutliers(opts)
	f.o.SetMembers(f.peers.members(members))
	t.Cleanup(f.o.Close)
	return f
}

// fail reports n failures in a row for site/addr.
func (f *fixture) fail(site, addr string, n int) {
	for range n {
		f.o.Observe(f.peers.get(site, addr), true)
	}
}

func (f *fixture) expectCalls(t *testing.T, want ...ejection) {
	t.Helper()
	if got := f.rec.take(); !slices.Equal(got, want) {
		t.Fatalf("SetEjected calls = %v, want %v", got, want)
	}
}

func eject(site, addr string) ejection   { return ejection{site, addr, true} }
func restore(site, addr string) ejection { return ejection{site, addr, false} }

var twoBackends = map[string][]string{"idc1": {"a", "b"}}

func TestOutliersEjectAfterConsecutiveFailures(t *testing.T) {
	t.Parallel()
	const F, S = true, false
	tests := []struct {
		name     string
		site     string
		outcomes []bool
		ejected  bool
	}{
		{"no outcome", "idc1", nil, false},
		{"N-1 failures", "idc1", []bool{F, F, F, F}, false},
		{"N failures", "idc1", []bool{F, F, F, F, F}, true},
		{"N failures after successes", "idc1", []bool{S, S, F, F, F, F, F}, true},
		{"success interrupts", "idc1", []bool{F, F, F, F, S, F, F, F, F}, false},
		{"success interrupts then N", "idc1", []bool{F, F, F, F, S, F, F, F, F, F}, true},
		{"more than N ejects once", "idc1", []bool{F, F, F, F, F, F, F, F, F, F, F}, true},
		{"successes only", "idc1", []bool{S, S, S, S, S, S}, false},
		{"unknown site ignored", "idc9", []bool{F, F, F, F, F, F, F}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, OutlierOptions{ConsecutiveFailures: 5, BaseEjection: 10 * time.Second}, twoBackends)
			for _, failed := range tc.outcomes {
				f.o.Observe(f.peers.get(tc.site, "a"), failed)
			}
			if got := f.o.Ejected(tc.site, "a"); got != tc.ejected {
				t.Fatalf("Ejected = %v, want %v", got, tc.ejected)
			}
			if tc.ejected {
				f.expectCalls(t, eject(tc.site, "a"))
				if d := f.timers.onlyPending(t).d; d != 10*time.Second {
					t.Fatalf("ejection lasts %v, want 10s", d)
				}
			} else {
				f.expectCalls(t)
				if p := f.timers.pending(); len(p) != 0 {
					t.Fatalf("pending timers = %d, want 0", len(p))
				}
			}
			if f.o.Ejected("idc1", "b") {
				t.Fatal("the other backend is ejected")
			}
		})
	}
}

func TestOutliersUnknownBackendIgnored(t *testing.T) {
	t.Parallel()
	f := newFixture(t, OutlierOptions{ConsecutiveFailures: 1}, twoBackends)
	f.fail("idc1", "zzz", 10)
	f.o.Recovered("idc1", "zzz")
	f.expectCalls(t)
	if f.o.Ejected("idc1", "zzz") {
		t.Fatal("unknown backend reported ejected")
	}
}

func TestOutliersReturnAfterBaseEjection(t *testing.T) {
	t.Parallel()
	f := newFixture(t, OutlierOptions{ConsecutiveFailures: 3, BaseEjection: 10 * time.Second}, twoBackends)
	f.fail("idc1", "a", 3)
	f.expectCalls(t, eject("idc1", "a"))

	// Outcomes of requests still in flight when it was ejected change nothing.
	f.fail("idc1", "a", 10)
	f.o.Observe(f.peers.get("idc1", "a"), false)
	f.expectCalls(t)

	tm := f.timers.onlyPending(t)
	if tm.d != 10*time.Second {
		t.Fatalf("ejection lasts %v, want 10s", tm.d)
	}
	f.clock.Advance(tm.d)
	f.timers.fire(t, tm)
	f.expectCalls(t, restore("idc1", "a"))
	if f.o.Ejected("idc1", "a") {
		t.Fatal("still ejected after its time")
	}

	// The failure count restarted at zero on return.
	f.fail("idc1", "a", 2)
	if f.o.Ejected("idc1", "a") {
		t.Fatal("ejected after threshold-1 failures following a return")
	}
	f.fail("idc1", "a", 1)
	f.expectCalls(t, eject("idc1", "a"))

	ejected := f.logs.FilterMessage("backend ejected").All()
	returned := f.logs.FilterMessage("backend returned").All()
	if len(ejected) != 2 || len(returned) != 1 {
		t.Fatalf("logged %d ejections, %d returns; want 2, 1", len(ejected), len(returned))
	}
	want := map[string]any{"site": "idc1", "backend": "a", "duration": 10 * time.Second, "n": int64(1), "reason": "expired"}
	if got := returned[0].ContextMap(); !mapHas(got, want) {
		t.Fatalf("return logged with %v, want %v", got, want)
	}
	want = map[string]any{"site": "idc1", "backend": "a", "duration": 20 * time.Second, "n": int64(2)}
	if got := ejected[1].ContextMap(); !mapHas(got, want) {
		t.Fatalf("second ejection logged with %v, want %v", got, want)
	}
}

func mapHas(got, want map[string]any) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func TestOutliersEjectionGrowsAndDecays(t *testing.T) {
	t.Parallel()
	const base, maxEj = 10 * time.Second, 25 * time.Second
	tests := []struct {
		name string
		// healthy is how long the backend stays in rotation after each return.
		healthy []time.Duration
		want    []time.Duration // duration of each ejection in turn
	}{
		{"n × base, capped", []time.Duration{0, 0, 0, 0}, []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second, 25 * time.Second, 25 * time.Second}},
		{"under max healthy: no decay", []time.Duration{maxEj - time.Second, maxEj - time.Second}, []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second}},
		{"one max healthy: n drops by one", []time.Duration{0, maxEj}, []time.Duration{10 * time.Second, 20 * time.Second, 20 * time.Second}},
		{"two max healthy: n drops by two", []time.Duration{0, 0, 2 * maxEj}, []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second, 20 * time.Second}},
		{"long healthy: back to base", []time.Duration{0, 0, time.Hour}, []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second, 10 * time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, OutlierOptions{ConsecutiveFailures: 1, BaseEjection: base, MaxEjection: maxEj}, twoBackends)
			for i, want := range tc.want {
				f.fail("idc1", "a", 1)
				tm := f.timers.onlyPending(t)
				if tm.d != want {
					t.Fatalf("ejection %d lasts %v, want %v", i+1, tm.d, want)
				}
				f.clock.Advance(tm.d)
				f.timers.fire(t, tm)
				if i < len(tc.healthy) {
					f.clock.Advance(tc.healthy[i])
				}
			}
		})
	}
}

func TestOutliersPanicGuard(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		members []string
		percent int
		failing []string // each fails past the threshold, in this order
		ejected []string // of them, ejected
	}{
		{"2 backends at 50%: second kept", []string{"a", "b"}, 50, []string{"a", "b"}, []string{"a"}},
		{"4 backends at 50%: two go", []string{"a", "b", "c", "d"}, 50, []string{"a", "b", "c", "d"}, []string{"a", "b"}},
		{"3 backends at 50%: rounds down to one", []string{"a", "b", "c"}, 50, []string{"a", "b", "c"}, []string{"a"}},
		{"1 backend at 50%: at least one may go", []string{"a"}, 50, []string{"a"}, []string{"a"}},
		{"4 backends at 10%: at least one", []string{"a", "b", "c", "d"}, 10, []string{"a", "b"}, []string{"a"}},
		{"2 backends at 100%: both", []string{"a", "b"}, 100, []string{"a", "b"}, []string{"a", "b"}},
		{"default is 50%", []string{"a", "b"}, 0, []string{"a", "b"}, []string{"a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, OutlierOptions{ConsecutiveFailures: 2, MaxEjectionPercent: tc.percent},
				map[string][]string{"s": tc.members, "other": {"x"}})
			for _, addr := range tc.failing {
				f.fail("s", addr, 5)
			}
			var got []string
			for _, addr := range tc.members {
				if f.o.Ejected("s", addr) {
					got = append(got, addr)
				}
			}
			if !slices.Equal(got, tc.ejected) {
				t.Fatalf("ejected %v, want %v", got, tc.ejected)
			}
			// The guard is per site: another site's lone backend is still ejected.
			f.fail("other", "x", 2)
			if !f.o.Ejected("other", "x") {
				t.Fatal("guard of one site held back another")
			}
			refusals := len(tc.failing) - len(tc.ejected)
			warns := f.logs.FilterMessage("panic guard: not ejecting backend").Len()
			if want := min(refusals, 1); warns != want {
				t.Fatalf("panic guard logged %d times, want %d", warns, want)
			}
		})
	}
}

func TestOutliersPanicGuardKeepsCounting(t *testing.T) {
	t.Parallel()
	f := newFixture(t, OutlierOptions{ConsecutiveFailures: 3, BaseEjection: time.Second}, twoBackends)
	warns := func() int { return f.logs.FilterMessage("panic guard: not ejecting backend").Len() }

	f.fail("idc1", "a", 3)
	f.fail("idc1", "b", 10) // refused, ten times: one warning
	f.expectCalls(t, eject("idc1", "a"))
	if warns() != 1 {
		t.Fatalf("warnings = %d, want 1", warns())
	}

	// a returns; b, still failing, is ejected on its next failure without starting over.
	f.timers.fire(t, f.timers.onlyPending(t))
	f.expectCalls(t, restore("idc1", "a"))
	f.fail("idc1", "b", 1)
	f.expectCalls(t, eject("idc1", "b"))

	// A new crossing warns again.
	f.fail("idc1", "a", 3)
	f.expectCalls(t)
	if warns() != 2 {
		t.Fatalf("warnings = %d, want 2", warns())
	}

	// A success while refused resets the count like any other.
	f.o.Observe(f.peers.get("idc1", "a"), false)
	f.timers.fire(t, f.timers.onlyPending(t))
	f.expectCalls(t, restore("idc1", "b"))
	f.fail("idc1", "a", 2)
	f.expectCalls(t)
	f.fail("idc1", "a", 1)
	f.expectCalls(t, eject("idc1", "a"))
}

func TestOutliersRecovered(t *testing.T) {
	t.Parallel()
	f := newFixture(t, OutlierOptions{ConsecutiveFailures: 2, BaseEjection: time.Minute}, twoBackends)

	f.o.Recovered("idc1", "a") // not ejected: nothing to do
	f.expectCalls(t)

	f.fail("idc1", "a", 2)
	f.expectCalls(t, eject("idc1", "a"))
	tm := f.timers.onlyPending(t)

	f.clock.Advance(5 * time.Second)
	f.o.Recovered("idc1", "a")
	f.expectCalls(t, restore("idc1", "a"))
	if f.o.Ejected("idc1", "a") {
		t.Fatal("still ejected after Recovered")
	}
	if !tm.stopped {
		t.Fatal("return timer not stopped")
	}
	f.o.Recovered("idc1", "a") // twice: still one return
	f.expectCalls(t)

	// A timer that fired before Stop could cancel it finds it stale, even once the backend
	// is ejected again: the second ejection is not cut short by the first one's timer.
	f.fail("idc1", "a", 2)
	f.expectCalls(t, eject("idc1", "a"))
	tm.f()
	f.expectCalls(t)
	if !f.o.Ejected("idc1", "a") {
		t.Fatal("a stale timer returned the backend")
	}

	returned := f.logs.FilterMessage("backend returned").All()
	want := map[string]any{"duration": 5 * time.Second, "n": int64(1), "reason": "recovered"}
	if len(returned) != 1 || !mapHas(returned[0].ContextMap(), want) {
		t.Fatalf("returns logged = %v, want one with %v", returned, want)
	}
}

func TestOutliersSetMembers(t *testing.T) {
	t.Parallel()
	f := newFixture(t, OutlierOptions{ConsecutiveFailures: 3, BaseEjection: time.Minute},
		map[string][]string{"idc1": {"a", "b", "c", "d"}, "aws": {"x", "y"}})
	f.fail("idc1", "a", 3)
	f.fail("aws", "x", 3)
	f.fail("idc1", "b", 2)
	f.expectCalls(t, eject("idc1", "a"), eject("aws", "x"))
	timerA, timerX := f.timers.pending()[0], f.timers.pending()[1]

	// A reload drops a and the whole aws site, and keeps b and its count.
	f.o.SetMembers(f.peers.members(map[string][]string{"idc1": {"b", "c", "d", "e"}}))
	got := f.rec.take()
	slices.SortFunc(got, func(p, q ejection) int { return strings.Compare(p.String(), q.String()) })
	if want := []ejection{restore("aws", "x"), restore("idc1", "a")}; !slices.Equal(got, want) {
		t.Fatalf("SetEjected calls = %v, want %v", got, want)
	}
	if !timerA.stopped || !timerX.stopped {
		t.Fatal("timers of dropped backends not stopped")
	}
	if f.o.Ejected("idc1", "a") {
		t.Fatal("dropped backend still ejected")
	}
	timerA.f() // a timer that raced the reload does nothing
	f.fail("idc1", "a", 10)
	f.expectCalls(t)

	f.fail("idc1", "b", 1) // 2 before the reload + 1
	f.expectCalls(t, eject("idc1", "b"))

	// Listing a backend again starts it afresh, and duplicates count once for the guard.
	f.o.SetMembers(f.peers.members(map[string][]string{"idc1": {"a", "a", "b"}}))
	f.expectCalls(t)
	if !f.o.Ejected("idc1", "b") {
		t.Fatal("reload returned a kept backend")
	}
	f.fail("idc1", "a", 3) // 2 distinct members at 50%: b already counts
	f.expectCalls(t)
}

func TestOutliersSetMembersKeepsEjectionCount(t *testing.T) {
	t.Parallel()
	f := newFixture(t, OutlierOptions{ConsecutiveFailures: 1, BaseEjection: time.Second, MaxEjection: time.Hour}, twoBackends)
	f.fail("idc1", "a", 1)
	f.timers.fire(t, f.timers.onlyPending(t))
	f.o.SetMembers(f.peers.members(map[string][]string{"idc1": {"a", "b"}, "aws": {"x"}}))
	f.fail("idc1", "a", 1)
	if d := f.timers.onlyPending(t).d; d != 2*time.Second {
		t.Fatalf("ejection after reload lasts %v, want 2s (n survives)", d)
	}
}

func TestOutliersClose(t *testing.T) {
	t.Parallel()
	f := newFixture(t, OutlierOptions{ConsecutiveFailures: 1}, map[string][]string{"idc1": {"a", "b"}, "aws": {"x"}})
	f.fail("idc1", "a", 1)
	f.fail("aws", "x", 1)
	f.expectCalls(t, eject("idc1", "a"), eject("aws", "x"))
	timers := f.timers.pending()

	f.o.Close()
	for _, tm := range timers {
		if !tm.stopped {
			t.Fatal("Close left a timer pending")
		}
		tm.f() // one that fired before Stop does nothing
	}
	f.fail("idc1", "b", 5)
	f.o.Recovered("idc1", "a")
	f.o.SetMembers(f.peers.members(nil))
	f.o.Close()
	f.expectCalls(t)
	if f.o.Ejected("idc1", "b") {
		t.Fatal("Observe ejected after Close")
	}
}

// TestOutliersConcurrent runs Observe, Recovered, timers and reloads at once under -race,
// and checks that every backend's calls reach the Ejector in order: eject, return, eject, …
func TestOutliersConcurrent(t *testing.T) {
	t.Parallel()
	members := map[string][]string{}
	for s := range 3 {
		site := fmt.Sprint("site", s)
		for a := range 4 {
			members[site] = append(members[site], fmt.Sprint("b", a))
		}
	}
	f := newFixture(t, OutlierOptions{ConsecutiveFailures: 3}, members)

	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 2000 {
				site := fmt.Sprint("site", (g+i)%3)
				addr := fmt.Sprint("b", i%4)
				switch {
				case i%97 == 0:
					f.o.Recovered(site, addr)
				case i%13 == 0:
					f.o.Observe(f.peers.get(site, addr), false)
				default:
					f.o.Observe(f.peers.get(site, addr), true)
				}
			}
		})
	}
	wg.Go(func() {
		for range 200 {
			for _, tm := range f.timers.pending() {
				f.clock.Advance(tm.d)
				f.timers.mu.Lock()
				ok := !tm.stopped && !tm.fired
				tm.fired = true
				f.timers.mu.Unlock()
				if ok {
					tm.f()
				}
			}
		}
	})
	wg.Go(func() {
		for i := range 50 {
			if i%2 == 0 {
				f.o.SetMembers(f.peers.members(members))
			} else {
				f.o.SetMembers(f.peers.members(map[string][]string{"site0": members["site0"]}))
			}
		}
		f.o.SetMembers(f.peers.members(members))
	})
	wg.Wait()

	state := map[ejection]bool{}
	ejectedNow := map[string]int{}
	calls := f.rec.take()
	if len(calls) == 0 {
		t.Fatal("no ejection at all: the test exercised nothing")
	}
	for _, c := range calls {
		k := ejection{c.site, c.addr, false}
		if state[k] == c.ejected {
			t.Fatalf("%v while already in that state", c)
		}
		state[k] = c.ejected
	}
	for k, ej := range state {
		if ej != f.o.Ejected(k.site, k.addr) {
			t.Fatalf("%s/%s: Ejector says ejected=%v, detector %v", k.site, k.addr, ej, !ej)
		}
		if ej {
			ejectedNow[k.site]++
		}
	}
	for site, n := range ejectedNow {
		if n > 2 {
			t.Fatalf("%s: %d of 4 ejected, guard allows 2", site, n)
		}
	}
}

// TestOutliersRealTimer checks the default time.AfterFunc path end to end.
func TestOutliersRealTimer(t *testing.T) {
	t.Parallel()
	rec := &recorder{ch: make(chan ejection, 4)}
	o := NewOutliers(OutlierOptions{Ejector: rec, ConsecutiveFailures: 2, BaseEjection: 20 * time.Millisecond})
	defer o.Close()
	peers := &peerSet{}
	o.SetMembers(peers.members(twoBackends))
	start := time.Now()
	o.Observe(peers.get("idc1", "a"), true)
	o.Observe(peers.get("idc1", "a"), true)
	for _, want := range []ejection{eject("idc1", "a"), restore("idc1", "a")} {
		select {
		case got := <-rec.ch:
			if got != want {
				t.Fatalf("SetEjected call = %v, want %v", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %v within 10s", want)
		}
	}
	if el := time.Since(start); el < 20*time.Millisecond {
		t.Fatalf("returned after %v, before BaseEjection", el)
	}
	if o.Ejected("idc1", "a") {
		t.Fatal("still ejected after return")
	}
}

func TestOutliersObserveSuccessDoesNotAllocate(t *testing.T) {
	f := newFixture(t, OutlierOptions{}, twoBackends)
	a := f.peers.get("idc1", "a")
	f.o.Observe(a, true) // a count to reset on the first run
	if n := testing.AllocsPerRun(1000, func() { f.o.Observe(a, false) }); n != 0 {
		t.Fatalf("Observe(success) allocates %v times per call, want 0", n)
	}
}

func TestNewOutliersNilEjectorPanics(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for a nil Ejector")
		}
	}()
	NewOutliers(OutlierOptions{})
}

func BenchmarkObserveSuccess(b *testing.B) {
	o := NewOutliers(OutlierOptions{Ejector: &recorder{}})
	defer o.Close()
	peers := &peerSet{}
	o.SetMembers(peers.members(map[string][]string{"idc1": {"http://10.0.1.10:8080", "http://10.0.1.11:8080"}, "aws": {"http://10.2.0.1:8080"}}))
	p := peers.get("idc1", "http://10.0.1.11:8080")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			o.Observe(p, false)
		}
	})
}

// TestOutliersFailingBackendWithPassingProbesEscalates pins issue 12's flapping ejections: a
// backend whose health endpoint passes while every request fails was returned by each
// passing probe (Recovered) and ejected again by its next failures, every probe interval.
// Simulated 20 s, in 100 ms steps: while in rotation it fails 5 requests a step; a probe
// passes every second; return timers fire when due. It may return at most 3 times, and each
// ejection lasts longer than the one before.
func TestOutliersFailingBackendWithPassingProbesEscalates(t *testing.T) {
	t.Parallel()
	for _, base := range []time.Duration{5 * time.Second, DefaultBaseEjection} {
		t.Run(base.String(), func(t *testing.T) {
			f := newFixture(t, OutlierOptions{ConsecutiveFailures: 5, BaseEjection: base}, twoBackends)
			start := f.clock.Now()
			var due time.Time // when the pending return timer fires
			var durations []time.Duration
			returns := 0
			for step := range 200 {
				now := f.clock.Now()
				if p := f.timers.pending(); len(p) == 1 && !due.IsZero() && !now.Before(due) {
					f.timers.fire(t, p[0])
				}
				if step%10 == 0 {
					f.o.Recovered("idc1", "a") // a passing probe
				}
				for _, c := range f.rec.take() {
					if !c.ejected {
						returns++
					}
				}
				if !f.o.Ejected("idc1", "a") {
					f.fail("idc1", "a", 5)
					if f.o.Ejected("idc1", "a") {
						d := f.timers.onlyPending(t).d
						durations = append(durations, d)
						due = now.Add(d)
					}
					f.rec.take()
				}
				f.clock.Advance(100 * time.Millisecond)
			}
			t.Logf("base %v: %d returns in %v; ejections %v", base, returns, f.clock.Now().Sub(start), durations)
			if returns > 3 {
				t.Errorf("returned %d times in 20 s, want at most 3", returns)
			}
			for i := 1; i < len(durations); i++ {
				if durations[i] <= durations[i-1] {
					t.Errorf("ejection %d lasts %v, not longer than the one before (%v)", i+1, durations[i], durations[i-1])
				}
			}
		})
	}
}

// A backend the panic guard keeps in rotation fails on every request it gets; its failures
// past the threshold must not each take the detector's lock (they did: every one queued on
// it behind a reload's SetMembers or another site's ejection). Held lock, refused backend:
// Observe returns. The guard still re-evaluates once a backend returns.
func TestOutliersRefusedFailuresTakeNoLock(t *testing.T) {
	t.Parallel()
	f := newFixture(t, OutlierOptions{ConsecutiveFailures: 2, BaseEjection: time.Second}, twoBackends)
	f.fail("idc1", "a", 2)
	f.fail("idc1", "b", 2) // refused: a is out, and half of two may be
	f.expectCalls(t, eject("idc1", "a"))

	f.o.mu.Lock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.fail("idc1", "b", 100) // refused again and again
		f.fail("idc1", "a", 100) // ejected already
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		f.o.mu.Unlock()
		<-done
		t.Fatal("failures of a refused or ejected backend waited for the detector's lock")
	}
	f.o.mu.Unlock()

	f.timers.fire(t, f.timers.onlyPending(t))
	f.expectCalls(t, restore("idc1", "a"))
	f.fail("idc1", "b", 1)
	f.expectCalls(t, eject("idc1", "b"))
}

// Review 13 (passes; kept as a guard): an ejected backend's count now grows while it is
// ejected (Observe counts into the Peer before it looks at the ejection). That must neither
// eject past max_ejection_percent (the guard counts ejections, not counts) nor keep a
// backend out: when it returns its count is zero, and it takes a whole new run to eject it
// again; and a backend refused by the guard is ejected once a slot frees.
func TestCountGrowingWhileEjectedRespectsGuardAndReturn(t *testing.T) {
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
