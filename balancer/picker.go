package balancer

import (
	"errors"
	"math"
	"sync/atomic"
	"time"
)

// ErrNoBackend means no site in the split has a backend that is up.
var ErrNoBackend = errors.New("no backend available")

// Picker is an immutable snapshot of a Balancer's sites: their policies, members, weights
// and drains, and which backends are up, as they were when the Balancer built it. The
// Balancer builds a new one on every change (health, membership, weight, drain) and swaps
// it in whole; any number of requests read one at once. Pick takes no lock and does not
// allocate. A request keeps the Picker it picked from; what changes under it is only the
// long-lived per-backend state (in flight, latency, limits) that lives in the Registry.
type Picker struct {
	*layout
	bal  *Balancer // the Balancer that built it: where a queued request finds a newer one
	plan *plan
}

// layout is what Options fixed for the life of a Balancer, shared by every Picker it
// builds. It never changes after New.
type layout struct {
	reg   *Registry
	sites []pickerSite
	names []string
	// cursor is the splitter's position, shared with every Balancer over the same site list.
	cursor       *atomic.Uint64
	intN         func(n int) int
	resume       float64
	queueSize    int
	queueTimeout time.Duration
	spills       [][]*[numSpillReasons]atomic.Uint64 // [from][to], from the Registry
}

type pickerSite struct {
	state     *Site
	elastic   bool
	static    int64 // per-backend limit; 0: adaptive
	adaptive  AdaptiveOptions
	slowStart int64 // nanoseconds
	hash      uint64
}

// siteControl is what operators change at run time: a site's weight and whether it is
// drained (no new requests, not even spillover; its in-flight ones finish).
type siteControl struct {
	weight  float64
	drained bool
}

// weightScale turns weights into the integers of the split: a tenth of a weight is the
// finest step (a ramp from 5 to 7 moves through 5.1, 5.2, ...). The schedule divides the
// scaled weights by their common divisor, so whole weights cost nothing.
const weightScale = 10

// plan is what a Picker derives from health, membership and the operators' controls: the
// split over sites that have a backend up, and per site its members and the indexes of
// those that are up.
type plan struct {
	seq      []int32
	weights  []int // the split's weights: 0 for a site with no backend up
	members  [][]*Backend
	controls []siteControl
	up       [][]int
	elastic  []int // indexes of elastic sites with a backend up, in config order
	spill    []int // indexes of non-elastic sites in the split, in config order
}

// makePlan derives the split and the up lists from members, controls and health now. A
// site with no backend up gets weight 0, so its share goes to the others in proportion to
// theirs.
func (lo *layout) makePlan(members [][]*Backend, controls []siteControl) *plan {
	pl := &plan{members: members, controls: controls, up: make([][]int, len(lo.sites)),
		weights: make([]int, len(lo.sites))}
	for i, s := range lo.sites {
		if controls[i].drained {
			continue // no new requests; the members' in-flight ones finish
		}
		for j, b := range members[i] {
			if b.Up() {
				pl.up[i] = append(pl.up[i], j)
			}
		}
		if len(pl.up[i]) == 0 {
			continue
		}
		w := int(math.Round(controls[i].weight * weightScale))
		pl.weights[i] = w
		switch {
		case s.elastic:
			pl.elastic = append(pl.elastic, i)
		case w > 0:
			pl.spill = append(pl.spill, i)
		}
	}
	pl.seq = schedule(pl.weights)
	return pl
}

func (lo *layout) siteIndex(name string) int {
	for i := range lo.sites {
		if lo.sites[i].state.Name == name {
			return i
		}
	}
	return -1
}

// Sites lists the site states in Options order.
func (lo *layout) Sites() []*Site {
	out := make([]*Site, len(lo.sites))
	for i := range lo.sites {
		out[i] = lo.sites[i].state
	}
	return out
}

// RetryAfter is how long a client refused for lack of capacity should wait before trying
// again, for the Retry-After header: the queue's estimated drain time (see retryAfter).
func (lo *layout) RetryAfter() time.Duration { return lo.reg.queue.retryAfter(lo.queueTimeout) }

// Pick chooses the preferred site by the weighted split (or, for a key other than 0, by
// affinity: see HashKey) and admits the request there when it has a free slot, or spills it
// (see spill), and fills l, which must be unused. ErrSaturated when every site is full,
// ErrNoBackend when none has a backend up. After a nil error the caller must call l.Done
// exactly once. Pick never blocks; Admit is Pick that waits in the queue.
func (p *Picker) Pick(l *Lease, key uint64) error {
	pl := p.plan
	if len(pl.seq) == 0 {
		if len(pl.elastic) == 0 {
			return ErrNoBackend
		}
		// Only burst-only (weight 0) elastic sites are up: they still take the load.
		l.Preferred = -1
		return p.spill(l, pl, -1, SpillSaturated, false)
	}
	pref := p.preferred(pl, key)
	l.Preferred = pref
	if p.headroom(pl, pref) {
		if p.acquire(l, pl, pref) {
			return nil
		}
		p.sites[pref].state.spilling.Store(true)
		return p.spill(l, pl, pref, SpillSaturated, false)
	}
	// Holding back after filling up: hysteresis, unless it is still full anyway.
	reason := SpillHysteresis
	if _, _, free := p.room(pl, pref); free == 0 {
		reason = SpillSaturated
	}
	return p.spill(l, pl, pref, reason, false)
}

// preferred is the site the split (or, for a key, affinity) prefers; pl has a split.
func (p *Picker) preferred(pl *plan, key uint64) int {
	if key != 0 {
		return p.affinity(pl, key)
	}
	return int(pl.seq[(p.cursor.Add(1)-1)%uint64(len(pl.seq))])
}

// affinity is the site of the split that a session key maps to: weighted rendezvous hashing
// over the sites that have a backend up, so that a weight change moves only the sessions it
// must.
func (p *Picker) affinity(pl *plan, key uint64) int {
	return Rendezvous(key, len(p.sites),
		func(i int) uint64 { return p.sites[i].hash },
		func(i int) int { return pl.weights[i] })
}

// PickRetry fills l, which must be unused, for another try of a request whose last try
// failed on prev. It prefers a backend with a free slot in another site, the site chosen at
// random by weight among those with a backend up, then any other site with room, then
// another backend of prev's site. ErrNoBackend when there is nowhere else to go. It leaves
// the split's position alone, so retries do not disturb the split of first tries, and it
// never waits.
func (p *Picker) PickRetry(l *Lease, prevSite int, prev *Backend) error {
	pl := p.plan
	l.Preferred = prevSite
	total := 0
	for i := range p.sites {
		if i != prevSite && len(pl.up[i]) > 0 {
			total += pl.weights[i]
		}
	}
	first := -1
	if total > 0 {
		r := p.intN(total)
		for i := range p.sites {
			if i == prevSite || len(pl.up[i]) == 0 {
				continue
			}
			if r < pl.weights[i] {
				first = i
				break
			}
			r -= pl.weights[i]
		}
		if p.acquire(l, pl, first) {
			return nil
		}
	}
	for i := range p.sites {
		if i != prevSite && i != first && (p.sites[i].elastic || pl.weights[i] > 0) && p.acquire(l, pl, i) {
			return nil
		}
	}
	if prevSite >= 0 && prevSite < len(p.sites) && p.acquireExcept(l, pl, prevSite, prev) {
		return nil
	}
	return ErrNoBackend
}

// Backends lists the Picker's backends, site by site in Options order.
func (p *Picker) Backends() []*Backend {
	var out []*Backend
	for _, bs := range p.plan.members {
		out = append(out, bs...)
	}
	return out
}
