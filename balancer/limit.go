package balancer

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// AdaptiveOptions bound an AdaptiveLimit. They are plain data; proxy.Build translates the
// config file, and configs.Validate refuses values NewAdaptiveLimit would panic on.
type AdaptiveOptions struct {
	Floor int // lowest limit, >= 1: a backend is never starved below it
	Cap   int // highest limit, >= Floor
	// Initial is the limit before any sample, in [Floor, Cap]; 0 means
	// min(Cap, max(Floor, DefaultAdaptiveInitial)).
	Initial int
}

// The controller's constants. Why each has its value is in AdaptiveLimit's doc comment.
const (
	minWindow      = 10                     // samples in the smallest window
	maxWindow      = 4096                   // samples in the largest window; keeps the packed window sum exact
	historyLen     = 20                     // K: window means the baseline is the minimum of
	probeAfter     = 16                     // P: saturated windows in a row before a baseline probe
	tolerance      = 1.5                    // latency over the baseline accepted before the limit shrinks
	minGradient    = 0.5                    // the most one window's gradient can cut
	smoothing      = 0.2                    // weight of a window's new limit against the old
	dropDecrease   = 0.9                    // multiplicative cut for a window with overload signals
	staleWindows   = 4                      // a probe that sees this many windows of stale samples gives up
	defaultInitial = DefaultAdaptiveInitial // Initial when AdaptiveOptions leave it 0
)

// A window's count and latency sum share one atomic word, so that a window closing while
// samples arrive never sees a sample's latency without its count (which, with two counters,
// would skew a 10-sample mean by a whole sample). Latency is summed in microseconds.
const (
	sumBits       = 44
	sumMask       = 1<<sumBits - 1
	maxSampleUsec = 1 << 28 // ~4.5 min; longer samples count as this. 2^16 of them fit in sumBits
)

// AdaptiveLimit is one backend's concurrency limit, learned from the latency of its
// completed requests (a latency gradient in the manner of Netflix's Gradient2 and Envoy's
// adaptive concurrency filter), kept within a floor and a cap. The zero value is not
// usable; call NewAdaptiveLimit. All methods are safe for concurrent use. Limit and the
// common path of Observe are a few atomic operations; a lock is taken (with TryLock, never
// waited for on the request path) only when a sample window closes.
//
// The algorithm. Completions are gathered in windows of N = clamp(limit/2, 10, 4096)
// samples, about half a round trip of a saturated backend. When a window closes:
//
//   - short = the window's mean latency; baseline = the minimum of the last K = 20 window
//     means. A minimum of recent windows, not of all time, so that a backend that becomes
//     slower for good (a slower release, a smaller instance) is re-learned in K windows
//     instead of being read as overload and pinned at the floor forever.
//   - gradient = clamp(1.5 × baseline / short, 0.5, 1): latency up to 1.5× the baseline is
//     queueing we accept; beyond it the limit shrinks in proportion, at most by half.
//   - next = limit × gradient, plus √limit when the gradient is 1. The √limit is a queue
//     allowance: while latency is within tolerance the limit still grows, so the
//     controller keeps looking for more capacity. It is not added once latency is beyond
//     tolerance (Gradient2 always adds it): then a probe that still sees some queueing
//     has a fixed point at limit = (1 / (1 − 1.5·½))² = 16 whatever the backend, which
//     for a backend that serves 5 at once meant 3× its latency. Without it, beyond
//     tolerance always shrinks.
//   - limit = 0.8·limit + 0.2·next. A window's samples were sent under the limit of a
//     window or two before, so acting on each window in full would oscillate.
//   - The limit does not grow on a window whose highest in-flight stayed under limit/2:
//     the traffic, not the backend, limited it, and there is no evidence more would help.
//   - A window with an overload signal (timeout, refused, 503) instead cuts the limit by
//     ×0.9, and its latencies (a refused dial is fast) do not enter the baseline.
//   - The limit is clamped to [Floor, Cap] and published rounded.
//
// The baseline probe. A minimum over recent windows alone drifts under sustained load:
// when every window runs at the limit, every mean includes queueing, the minimum rises
// with the limit, the gradient reads 1, and the limit climbs without bound; a first
// baseline learned while already overloaded is never corrected at all. So, as Envoy does
// (and TCP BBR's ProbeRTT), after P = 16 windows in a row that used at least half the
// limit (and the first such window ever), the limit is lowered for one window to half of
// what the backend was given — its limit, or the in-flight it actually had if lower — but
// not under the floor. Samples sent
// above it (queued before the probe) are ignored; the mean of those sent under it enters
// the baseline history, and the limit returns. P < K keeps a probe in every baseline.
// A probe that sees an overload signal ends with the ×0.9 cut instead, and one that sees
// only samples sent above its level for 4 windows' worth (a caller not honouring Limit)
// gives up, so it can never hold the limit down. Overload windows neither advance nor
// restart the run toward a probe. Callers see a probe as Limit dipping for one window
// (about one round trip, with the drain) every 8 or so round trips of saturation; a site
// limit summed over backends dips by half of one backend's limit.
// Probing at half the limit (not at the floor, as Envoy does) costs little throughput;
// it measures the unqueued latency as long as half the limit is below the backend's true
// concurrency, which holds at equilibrium because tolerance × ½ < 1: a probe that still
// saw queueing gives a gradient under 1, the limit shrinks, and the next probe goes lower.
// A saturated backend that serves C at once therefore settles around a limit of 1.5·C
// (growing by √limit while within tolerance, cut as soon as beyond): about 1.5× its
// unloaded latency at its full throughput. In the tests' simulation (C = 5, 20, 100) the
// limit ranges over about [0.7·C, 1.8·C] (the low end while probing) at 98% of the
// backend's best throughput.
type AdaptiveLimit struct {
	limit atomic.Int64 // what Limit returns: the rounded estimate, or the probe's limit

	// The window being filled, written lock-free by Observe.
	acc         atomic.Uint64 // samples<<sumBits | Σ latency in µs
	drops       atomic.Int64  // overload signals
	maxInflight atomic.Int64  // highest in-flight a sample was sent at
	stale       atomic.Int64  // while probing: samples sent above the probe's limit
	window      atomic.Int64  // samples (with drops) that close the window
	probe       atomic.Int64  // while probing, the probe's limit; else 0

	mu         sync.Mutex // held to close a window or change bounds; guards the fields below
	floor, cap float64
	est        float64             // the limit, unrounded
	means      [historyLen]float64 // recent window means, µs; a ring
	nmeans     int                 // entries of means in use
	next       int                 // where the next mean goes
	saturated  int                 // windows in a row that ran above the probe level
	used       float64             // the highest in-flight of the last window
	probed     bool                // a probe has been started
}

// NewAdaptiveLimit returns a limit starting at o.Initial. It panics if o is out of range
// (Floor < 1, Cap < Floor, Initial outside [Floor, Cap] and not 0): those are programming
// errors, since configs.Validate refuses such a config before proxy.Build gets here.
func NewAdaptiveLimit(o AdaptiveOptions) *AdaptiveLimit {
	checkBounds(o.Floor, o.Cap)
	initial := o.Initial
	if initial == 0 {
		initial = min(o.Cap, max(o.Floor, defaultInitial))
	}
	if initial < o.Floor || initial > o.Cap {
		panic(fmt.Sprintf("balancer: adaptive limit initial %d outside [%d, %d]", initial, o.Floor, o.Cap))
	}
	a := &AdaptiveLimit{floor: float64(o.Floor), cap: float64(o.Cap), est: float64(initial)}
	a.publish()
	return a
}

func checkBounds(floor, cap int) {
	if floor < 1 || cap < floor {
		panic(fmt.Sprintf("balancer: adaptive limit bounds [%d, %d]: want 1 <= floor <= cap", floor, cap))
	}
}

// Limit is how many requests the backend may have in flight now. It never blocks.
func (a *AdaptiveLimit) Limit() int64 { return a.limit.Load() }

// Observe records one completed request: its latency rtt, the backend's in-flight count
// when it was sent (itself included), and whether it ended in an overload signal (a
// timeout, a refused connection, a 503). Call it once per completion, from any goroutine.
func (a *AdaptiveLimit) Observe(rtt time.Duration, inflight int64, dropped bool) {
	if !dropped {
		if p := a.probe.Load(); p > 0 && inflight > p {
			// Sent before the probe lowered the limit: its latency has the queueing the
			// probe is there to see past.
			if a.stale.Add(1) >= staleWindows*a.window.Load() {
				a.tryClose()
			}
			return
		}
	}
	for m := a.maxInflight.Load(); inflight > m; m = a.maxInflight.Load() {
		if a.maxInflight.CompareAndSwap(m, inflight) {
			break
		}
	}
	var n int64
	if dropped {
		n = a.drops.Add(1) + int64(a.acc.Load()>>sumBits)
	} else {
		us := min(max(rtt.Microseconds(), 1), maxSampleUsec)
		n = int64(a.acc.Add(1<<sumBits|uint64(us))>>sumBits) + a.drops.Load()
	}
	if n >= a.window.Load() {
		a.tryClose()
	}
}

// tryClose closes the window unless another goroutine holds the lock; then that one is
// closing it (or changing bounds), and this sample rides in the next window.
func (a *AdaptiveLimit) tryClose() {
	if a.mu.TryLock() {
		a.closeWindow()
		a.mu.Unlock()
	}
}

// SetBounds changes the floor and cap (a reload) and clamps the limit into them at once.
// A probe in progress is abandoned when the bounds change. It panics on bounds
// NewAdaptiveLimit would refuse.
func (a *AdaptiveLimit) SetBounds(floor, cap int) {
	checkBounds(floor, cap)
	a.mu.Lock()
	defer a.mu.Unlock()
	if float64(floor) == a.floor && float64(cap) == a.cap {
		return // unchanged (every reload and member change asks): a probe goes on
	}
	a.floor, a.cap = float64(floor), float64(cap)
	a.est = a.clamp(a.est)
	a.probe.Store(0)
	a.publish()
}

// closeWindow turns the window's samples into a new limit. The caller holds a.mu.
func (a *AdaptiveLimit) closeWindow() {
	probe := a.probe.Load()
	w, drops, stale := a.acc.Load(), a.drops.Load(), a.stale.Load()
	due := int64(w>>sumBits)+drops >= a.window.Load() ||
		probe > 0 && stale >= staleWindows*a.window.Load()
	if !due {
		return // another goroutine closed it since this one counted
	}
	w, drops = a.acc.Swap(0), a.drops.Swap(0)
	a.stale.Store(0)
	maxInflight := a.maxInflight.Swap(0)
	samples := float64(w >> sumBits)
	var mean float64
	if samples > 0 {
		mean = float64(w&sumMask) / samples
	}

	switch {
	case probe > 0:
		// The probe is over. Its mean is the baseline it came for, unless it ended in
		// overload signals or gave up on samples that never came under its limit.
		complete := int64(samples) >= a.window.Load()
		a.probe.Store(0)
		a.saturated = 0
		if drops > 0 {
			a.est = a.clamp(a.est * dropDecrease)
		} else if complete {
			a.remember(mean)
		}
	case drops > 0:
		// Overload: cut. The run of saturated windows toward a probe neither grows nor
		// restarts; a baseline probe in the middle of overload would only measure it.
		a.est = a.clamp(a.est * dropDecrease)
	default:
		a.remember(mean)
		gradient := min(max(tolerance*a.baseline()/mean, minGradient), 1)
		next := a.est * gradient
		if gradient == 1 {
			next += math.Sqrt(a.est) // the queue allowance: see the doc comment
		}
		if float64(maxInflight) < a.est/2 {
			next = min(next, a.est) // app-limited: no evidence that more would help
		}
		a.est = a.clamp((1-smoothing)*a.est + smoothing*next)
		a.used = float64(maxInflight)
		if a.used >= math.Round(a.est/2) && a.used > a.probeLevel() {
			a.saturated++ // it used at least half its limit: its mean may hold a queue
		} else {
			// It ran low enough to have measured the baseline, or so far under its limit
			// that the limit could not grow on it (app-limited).
			a.saturated = 0
		}
	}

	// The first saturated window probes at once: until a probe has run, the baseline may
	// have been learned under load (a limit that started above what the backend serves),
	// and waiting P windows would let that queue stand for P windows.
	if a.saturated >= probeAfter || (!a.probed && a.saturated > 0) {
		if level := int64(a.probeLevel()); float64(level) < math.Round(a.est) {
			a.saturated = 0
			a.probed = true
			a.probe.Store(level)
			a.limit.Store(level)
			a.window.Store(windowFor(float64(level)))
			return
		}
	}
	a.publish()
}

// probeLevel is the in-flight at or under which a window measures the baseline: half of
// what the backend is given — its limit, or, when the traffic uses less of it, the highest
// in-flight of the last window. A backend kept at 32 in flight under a limit of 64 may be
// queueing all 32; a probe at 32 would measure that queue, not the backend without it.
func (a *AdaptiveLimit) probeLevel() float64 {
	given := a.est
	if a.used > 0 {
		given = min(given, a.used)
	}
	return max(a.floor, math.Round(given/2))
}

// remember adds a window's mean latency to the baseline history.
func (a *AdaptiveLimit) remember(mean float64) {
	a.means[a.next] = mean
	a.next = (a.next + 1) % historyLen
	a.nmeans = min(a.nmeans+1, historyLen)
}

// baseline is the no-load latency estimate: the lowest recent window mean.
func (a *AdaptiveLimit) baseline() float64 {
	b := a.means[0]
	for _, m := range a.means[1:a.nmeans] {
		b = min(b, m)
	}
	return b
}

func (a *AdaptiveLimit) clamp(v float64) float64 { return min(max(v, a.floor), a.cap) }

// publish makes the estimate the limit and sizes the next window from it.
func (a *AdaptiveLimit) publish() {
	l := a.clamp(math.Round(a.est))
	a.limit.Store(int64(l))
	a.window.Store(windowFor(l))
}

func windowFor(limit float64) int64 { return int64(min(max(limit/2, minWindow), maxWindow)) }
