package balancer

import (
	"container/heap"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// queueingBackend is the simulated backend of the adaptive-limit tests: a request sent
// while n requests are in flight (itself included) takes base for n <= c, and base×n/c
// beyond, as if c workers served a queue.
func queueingBackend(base time.Duration, c int) func(n int64) time.Duration {
	return func(n int64) time.Duration {
		return time.Duration(float64(base) * max(1, float64(n)/float64(c)))
	}
}

type completion struct {
	at, rtt  time.Duration
	inflight int64
}

type completions []completion

func (h completions) Len() int           { return len(h) }
func (h completions) Less(i, j int) bool { return h[i].at < h[j].at }
func (h completions) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *completions) Push(x any)        { *h = append(*h, x.(completion)) }
func (h *completions) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}

// loop is a closed-loop simulation in virtual time: clients each send a request as soon
// as the limiter admits it (in-flight < Limit()), wait for it, and send the next at once.
// Completions feed Observe. No real time passes; a seeded ±10% jitter keeps the clients
// from marching in lockstep.
type loop struct {
	lim      *AdaptiveLimit
	latency  func(n int64) time.Duration
	waiting  int // clients with a request not yet admitted
	inflight int64
	now      time.Duration
	events   completions
	rng      *rand.Rand
}

func newLoop(lim *AdaptiveLimit, clients int, latency func(n int64) time.Duration) *loop {
	return &loop{lim: lim, latency: latency, waiting: clients, rng: rand.New(rand.NewPCG(1, 2))}
}

// loopStats describe one run of a loop.
type loopStats struct {
	elapsed            time.Duration
	done               int
	latencySum         time.Duration
	minLimit, maxLimit int64
	below              time.Duration // time the limit spent under the run's threshold
}

func (s loopStats) throughput() float64 { return float64(s.done) / s.elapsed.Seconds() }
func (s loopStats) meanLatency() time.Duration {
	return s.latencySum / time.Duration(max(s.done, 1))
}

// run advances the loop by d, recording how long the limit stays under threshold.
func (l *loop) run(d time.Duration, threshold int64) loopStats {
	end := l.now + d
	st := loopStats{elapsed: d, minLimit: math.MaxInt64}
	for {
		limit := l.lim.Limit()
		for l.waiting > 0 && l.inflight < limit {
			l.inflight++
			l.waiting--
			rtt := time.Duration(float64(l.latency(l.inflight)) * (0.9 + 0.2*l.rng.Float64()))
			heap.Push(&l.events, completion{at: l.now + rtt, rtt: rtt, inflight: l.inflight})
		}
		next := end
		if len(l.events) > 0 {
			next = min(next, l.events[0].at)
		}
		st.minLimit, st.maxLimit = min(st.minLimit, limit), max(st.maxLimit, limit)
		if limit < threshold {
			st.below += next - l.now
		}
		l.now = next
		if len(l.events) == 0 || l.events[0].at > end {
			return st
		}
		c := heap.Pop(&l.events).(completion)
		l.inflight--
		l.waiting++
		l.lim.Observe(c.rtt, c.inflight, false)
		st.done++
		st.latencySum += c.rtt
	}
}

// checkSaturatedBand asserts what a good limit gives a saturated backend of true
// concurrency c and unloaded latency base: the limit within [c, 3c] except while probing
// the baseline (briefly, at half the limit), full throughput, modest queueing.
func checkSaturatedBand(t *testing.T, st loopStats, c int, base time.Duration) {
	t.Helper()
	t.Logf("limit [%d, %d], under %d for %.1f%% of the time, %.0f req/s, mean latency %v",
		st.minLimit, st.maxLimit, c, 100*st.below.Seconds()/st.elapsed.Seconds(), st.throughput(), st.meanLatency())
	if st.maxLimit > int64(3*c) {
		t.Errorf("limit reached %d, want <= 3c = %d", st.maxLimit, 3*c)
	}
	if st.minLimit < int64(c/2) {
		t.Errorf("limit fell to %d, want >= c/2 = %d even while probing", st.minLimit, c/2)
	}
	if frac := st.below.Seconds() / st.elapsed.Seconds(); frac > 0.20 {
		t.Errorf("limit under c = %d for %.1f%% of the time, want <= 20%% (probes only)", c, 100*frac)
	}
	if best := float64(c) / base.Seconds(); st.throughput() < 0.9*best {
		t.Errorf("throughput %.0f/s, want >= 90%% of the backend's best %.0f/s", st.throughput(), best)
	}
	if st.meanLatency() > 2*base {
		t.Errorf("mean latency %v, want <= 2× the unloaded %v", st.meanLatency(), base)
	}
}

func TestAdaptiveConvergesUnderSaturation(t *testing.T) {
	// Clients far outnumber what the backend can serve, so every window runs at the
	// limit. Without the baseline probe this is the case that drifts: each window's mean
	// holds queueing, the windowed minimum follows it up, and the limit climbs to the cap
	// (measured: 1000 for c = 20, at 50× the unloaded latency).
	const base = 10 * time.Millisecond
	for _, tc := range []struct {
		name    string
		c       int
		initial int
	}{
		{"c=20 from default", 20, 0},
		{"c=20 from floor", 20, 1},
		{"c=20 from far above", 20, 500}, // first baseline learned overloaded: probes fix it
		{"c=5", 5, 0},
		{"c=100", 100, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := NewAdaptiveLimit(AdaptiveOptions{Floor: 1, Cap: 1000, Initial: tc.initial})
			l := newLoop(lim, 50*tc.c, queueingBackend(base, tc.c))
			l.run(60*time.Second, 0) // converge: thousands of windows
			for range 3 {            // and stay: three stretches, not one average
				checkSaturatedBand(t, l.run(10*time.Second, int64(tc.c)), tc.c, base)
			}
		})
	}
}

func TestAdaptiveAppLimitedDoesNotInflate(t *testing.T) {
	// Few clients never fill the limit: the backend shows no queueing, yet that is no
	// evidence that more concurrency would help, so the limit must not grow.
	const c, base = 20, 10 * time.Millisecond
	for _, clients := range []int{1, 5, 9} {
		lim := NewAdaptiveLimit(AdaptiveOptions{Floor: 1, Cap: 1000, Initial: 20})
		st := newLoop(lim, clients, queueingBackend(base, c)).run(60*time.Second, 0)
		if st.maxLimit > 20 {
			t.Errorf("%d clients: limit grew to %d, want <= 20", clients, st.maxLimit)
		}
		if st.minLimit < 20 {
			t.Errorf("%d clients: limit fell to %d with no queueing, want 20", clients, st.minLimit)
		}
	}
}

func TestAdaptiveDropsReduce(t *testing.T) {
	lim := NewAdaptiveLimit(AdaptiveOptions{Floor: 5, Cap: 1000, Initial: 100})
	want := 100.0
	for range 30 {
		n := lim.window.Load()
		// A window with a single overload signal among fast successes still cuts.
		for i := range n {
			lim.Observe(time.Millisecond, lim.Limit(), i == 0)
		}
		want = max(5, want*dropDecrease)
		if got := lim.Limit(); got != int64(math.Round(want)) {
			t.Fatalf("limit %d after a window with a drop, want %.0f", got, math.Round(want))
		}
	}
	if got := lim.Limit(); got != 5 {
		t.Fatalf("limit %d after many overloaded windows, want the floor 5", got)
	}
	// A refused dial is fast: drop windows must not teach the baseline that the backend
	// answers in microseconds, or healthy windows after them would read as overload.
	for range historyLen {
		n := lim.window.Load()
		for range n {
			lim.Observe(time.Microsecond, lim.Limit(), true)
		}
	}
	if lim.nmeans != 0 {
		t.Fatalf("drop windows entered %d means into the baseline, want none", lim.nmeans)
	}
}

func TestAdaptiveRelearnsSlowerBackend(t *testing.T) {
	// A backend that becomes 10× slower at every concurrency (a slower release, not a
	// queue) first looks overloaded; once the old baseline expires the limit returns to
	// the band its concurrency deserves, instead of staying pinned near the floor.
	const c, base = 20, 10 * time.Millisecond
	lim := NewAdaptiveLimit(AdaptiveOptions{Floor: 1, Cap: 1000})
	latency := queueingBackend(base, c)
	l := newLoop(lim, 50*c, func(n int64) time.Duration { return latency(n) })
	l.run(60*time.Second, 0)
	checkSaturatedBand(t, l.run(10*time.Second, c), c, base)

	latency = queueingBackend(10*base, c)
	dip := l.run(10*time.Second, c)
	if dip.minLimit >= c {
		t.Errorf("limit stayed >= %d after the slowdown, want it cut first (min %d)", c, dip.minLimit)
	}
	l.run(300*time.Second, 0)
	for range 3 {
		checkSaturatedBand(t, l.run(100*time.Second, c), c, 10*base)
	}
}

func TestAdaptiveBounds(t *testing.T) {
	const c, base = 20, 10 * time.Millisecond
	for _, tc := range []struct {
		name               string
		opts               AdaptiveOptions
		clients            int
		wantMin, wantMax   int64
		wantInitial        int64
		setFloor, setCap   int
		wantAfterSetBounds int64 // the limit just after SetBounds(setFloor, setCap)
	}{
		{"cap under capacity holds", AdaptiveOptions{Floor: 1, Cap: 10}, 1000, 1, 10, 10, 1, 5, 5},
		{"floor over capacity holds", AdaptiveOptions{Floor: 50, Cap: 1000, Initial: 50}, 1000, 50, 1000, 50, 1, 40, 40},
		{"raised floor lifts", AdaptiveOptions{Floor: 1, Cap: 1000, Initial: 30}, 1000, 1, 1000, 30, 200, 300, 200},
		{"exact", AdaptiveOptions{Floor: 7, Cap: 7}, 1000, 7, 7, 7, 7, 7, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := NewAdaptiveLimit(tc.opts)
			if got := lim.Limit(); got != tc.wantInitial {
				t.Fatalf("initial limit %d, want %d", got, tc.wantInitial)
			}
			l := newLoop(lim, tc.clients, queueingBackend(base, c))
			st := l.run(30*time.Second, 0)
			if st.minLimit < tc.wantMin || st.maxLimit > tc.wantMax {
				t.Fatalf("limit ranged [%d, %d], want within [%d, %d]", st.minLimit, st.maxLimit, tc.wantMin, tc.wantMax)
			}
			lim.SetBounds(tc.setFloor, tc.setCap)
			if got := lim.Limit(); got != tc.wantAfterSetBounds {
				t.Fatalf("limit %d after SetBounds(%d, %d), want %d", got, tc.setFloor, tc.setCap, tc.wantAfterSetBounds)
			}
			st = l.run(30*time.Second, 0)
			if st.minLimit < int64(tc.setFloor) || st.maxLimit > int64(tc.setCap) {
				t.Fatalf("after SetBounds(%d, %d) limit ranged [%d, %d]", tc.setFloor, tc.setCap, st.minLimit, st.maxLimit)
			}
		})
	}
}

func TestAdaptiveDefaultInitial(t *testing.T) {
	for _, tc := range []struct {
		floor, cap int
		want       int64
	}{
		{1, 1000, DefaultAdaptiveInitial}, {1, 8, 8}, {100, 1000, 100},
	} {
		if got := NewAdaptiveLimit(AdaptiveOptions{Floor: tc.floor, Cap: tc.cap}).Limit(); got != tc.want {
			t.Errorf("floor %d cap %d: initial %d, want %d", tc.floor, tc.cap, got, tc.want)
		}
	}
}

func TestAdaptiveRefusesBadBounds(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"floor 0", func() { NewAdaptiveLimit(AdaptiveOptions{Floor: 0, Cap: 10}) }},
		{"cap under floor", func() { NewAdaptiveLimit(AdaptiveOptions{Floor: 10, Cap: 5}) }},
		{"initial over cap", func() { NewAdaptiveLimit(AdaptiveOptions{Floor: 1, Cap: 10, Initial: 11}) }},
		{"initial under floor", func() { NewAdaptiveLimit(AdaptiveOptions{Floor: 5, Cap: 10, Initial: 4}) }},
		{"SetBounds cap under floor", func() { NewAdaptiveLimit(AdaptiveOptions{Floor: 1, Cap: 10}).SetBounds(5, 4) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			tc.f()
		})
	}
}

// firstProbe runs the probe that the first saturated window of a new limit starts, to its
// end, with samples of latency d.
func firstProbe(t *testing.T, lim *AdaptiveLimit, d time.Duration) {
	t.Helper()
	for range lim.window.Load() {
		lim.Observe(d, lim.Limit(), false)
	}
	level := lim.probe.Load()
	if level == 0 {
		t.Fatal("the first saturated window started no probe")
	}
	for range lim.window.Load() {
		lim.Observe(d, level, false)
	}
	if lim.probe.Load() != 0 {
		t.Fatal("the first probe did not end")
	}
}

func TestAdaptiveProbeIgnoresQueuedSamples(t *testing.T) {
	// After probeAfter saturated windows the limit drops to half for one window; samples
	// sent before the drop (in-flight above the probe's limit) carry queueing and must not
	// count, or the probe would measure the queue it exists to see past.
	lim := NewAdaptiveLimit(AdaptiveOptions{Floor: 1, Cap: 1000, Initial: 40})
	saturatedWindow := func() {
		for range lim.window.Load() {
			lim.Observe(10*time.Millisecond, lim.Limit(), false)
		}
	}
	firstProbe(t, lim, 10*time.Millisecond)
	for range probeAfter - 1 {
		saturatedWindow()
		if lim.probe.Load() != 0 {
			t.Fatal("probe started early")
		}
	}
	before := lim.Limit()
	saturatedWindow()
	level := lim.probe.Load()
	if level == 0 || lim.Limit() != level || level != int64(math.Round(float64(lim.est)/2)) {
		t.Fatalf("after %d saturated windows: probe %d, limit %d, estimate %.1f; want a probe at half",
			probeAfter, level, lim.Limit(), lim.est)
	}
	if before <= level {
		t.Fatalf("probe level %d not under the limit %d", level, before)
	}
	for range 3 * lim.window.Load() { // the queue draining: slow, sent above the level
		lim.Observe(time.Second, before, false)
	}
	if lim.probe.Load() != level {
		t.Fatal("queued samples ended the probe")
	}
	for range lim.window.Load() { // sent under the probe: the unloaded latency
		lim.Observe(4*time.Millisecond, level, false)
	}
	if lim.probe.Load() != 0 || lim.Limit() != int64(math.Round(lim.est)) {
		t.Fatalf("probe %d, limit %d after a full probe window; want it over", lim.probe.Load(), lim.Limit())
	}
	if got := lim.baseline(); got != 4000 {
		t.Fatalf("baseline %.0fµs, want the probe's 4000µs", got)
	}
}

func TestAdaptiveProbeGivesUpWithoutFreshSamples(t *testing.T) {
	// A caller that keeps sending above the probe's limit must not hold the limit low.
	lim := NewAdaptiveLimit(AdaptiveOptions{Floor: 1, Cap: 1000, Initial: 40})
	firstProbe(t, lim, 10*time.Millisecond)
	for range probeAfter {
		for range lim.window.Load() {
			lim.Observe(10*time.Millisecond, lim.Limit(), false)
		}
	}
	level := lim.probe.Load()
	if level == 0 {
		t.Fatal("no probe")
	}
	n := lim.nmeans
	for range staleWindows * lim.window.Load() {
		lim.Observe(10*time.Millisecond, 1000, false)
	}
	if lim.probe.Load() != 0 || lim.Limit() <= level {
		t.Fatalf("probe %d, limit %d: want the probe abandoned and the limit back", lim.probe.Load(), lim.Limit())
	}
	if lim.nmeans != n {
		t.Fatal("an abandoned probe entered the baseline")
	}
}

func TestAdaptiveConcurrentObserve(t *testing.T) {
	lim := NewAdaptiveLimit(AdaptiveOptions{Floor: 2, Cap: 200})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for i := range 20000 {
				l := lim.Limit()
				if l < 2 || l > 200 {
					t.Errorf("limit %d outside [2, 200]", l)
					return
				}
				rtt := time.Duration(5+r.IntN(10)) * time.Millisecond
				lim.Observe(rtt, 1+r.Int64N(l), i%500 == 0)
				if g == 0 && i%5000 == 0 {
					lim.SetBounds(2, 200)
				}
			}
		})
	}
	wg.Wait()
	lim.mu.Lock()
	defer lim.mu.Unlock()
	if lim.nmeans == 0 {
		t.Fatal("no window closed")
	}
}

func TestAdaptivePackedWindowSum(t *testing.T) {
	// Count and latency sum share one word: extreme latencies clamp, never carry into the
	// count, and sub-microsecond ones still count as a sample.
	lim := NewAdaptiveLimit(AdaptiveOptions{Floor: 1, Cap: 1000, Initial: 1000})
	for range 100 {
		lim.Observe(time.Hour, 1000, false)
	}
	lim.Observe(time.Nanosecond, 1000, false)
	w := lim.acc.Load()
	if n, sum := w>>sumBits, w&sumMask; n != 101 || sum != 100*maxSampleUsec+1 {
		t.Fatalf("window holds %d samples summing %dµs, want 101 and %d", n, sum, 100*maxSampleUsec+1)
	}
}

func BenchmarkAdaptiveObserve(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		lim := NewAdaptiveLimit(AdaptiveOptions{Floor: 1, Cap: 1000})
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			lim.Observe(time.Duration(10+i%7)*time.Millisecond, lim.Limit(), false)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		lim := NewAdaptiveLimit(AdaptiveOptions{Floor: 1, Cap: 1000})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				lim.Observe(time.Duration(10+i%7)*time.Millisecond, lim.Limit(), false)
			}
		})
	})
}
