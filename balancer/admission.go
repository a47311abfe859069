package balancer

import (
	"errors"
	"math"
	"sync/atomic"
)

// ErrSaturated means no site had a free slot for the request. Admit returns it only
// wrapped, as ErrQueueFull or ErrQueueTimeout: the request could not wait for a slot.
var ErrSaturated = errors.New("no site has a free slot")

var (
	ErrQueueFull    error = shedError("no site has a free slot and the queue is full")
	ErrQueueTimeout error = shedError("no slot freed up in time")
	// ErrQueueDelay: shed from a congested queue after waiting longer than its delay
	// target (a quarter of the queue timeout); see waitQueue.
	ErrQueueDelay error = shedError("waited too long in a congested queue")
)

// shedError is a refusal for lack of capacity; every one matches ErrSaturated.
type shedError string

func (e shedError) Error() string { return string(e) }

// Is makes every shed error match ErrSaturated.
func (e shedError) Is(target error) bool { return target == ErrSaturated }

// SpillReason says why a request went to another site than the one the split preferred.
type SpillReason uint8

const (
	SpillNone SpillReason = iota
	// SpillSaturated: the preferred site had no free slot.
	SpillSaturated
	// SpillHysteresis: the preferred site filled up recently and is not yet below
	// spillover.resume of its limit.
	SpillHysteresis
	numSpillReasons
)

func (r SpillReason) String() string {
	return [...]string{"", "saturated", "hysteresis"}[r]
}

// ShedReason says why a request was refused for lack of capacity.
type ShedReason uint8

const (
	ShedQueueFull    ShedReason = iota // no slot, and the queue is full (or size 0)
	ShedQueueTimeout                   // waited spillover.queue.timeout without a slot
	ShedClientGone                     // the client went away while waiting
	ShedQueueDelay                     // shed from a congested queue after its delay target
	numShedReasons
)

func (r ShedReason) String() string {
	return [...]string{"queue_full", "queue_timeout", "client_gone", "queue_delay"}[r]
}

// slowStartFloor is the share of its limit and of its picks a backend starts a ramp with.
const slowStartFloor = 0.1

// ramp is how far b is through its slow start, in [slowStartFloor, 1]. Only a backend that
// is ramping reads the clock.
func (p *Picker) ramp(s *pickerSite, b *Backend) float64 {
	joined := b.joined.Load()
	if joined == 0 {
		return 1
	}
	if s.slowStart == 0 {
		return 1
	}
	age := p.reg.now().UnixNano() - joined
	if age >= s.slowStart {
		b.joined.CompareAndSwap(joined, 0) // ramp over; later picks skip the clock
		return 1
	}
	if age < 0 {
		age = 0
	}
	return slowStartFloor + (1-slowStartFloor)*float64(age)/float64(s.slowStart)
}

// limit is b's concurrency limit in site s now: max_inflight or the learned limit, times
// its slow-start ramp, at least 1; in a fleet, this replica's share of that (which may be 0).
func (p *Picker) limit(s *pickerSite, b *Backend) int64 {
	full := p.fullLimit(s, b)
	if sh := p.reg.share.Load(); sh != nil {
		return sh.Of(b.ID, full)
	}
	return full
}

// fullLimit is b's whole limit, before a fleet's share is taken of it.
func (p *Picker) fullLimit(s *pickerSite, b *Backend) int64 {
	base := s.static
	if base == 0 {
		if a := b.adaptive.Load(); a != nil {
			base = a.Limit()
		} else {
			base = int64(s.adaptive.withDefaults().Initial)
		}
	}
	if r := p.ramp(s, b); r < 1 {
		base = int64(math.Ceil(float64(base)*r - 1e-9)) // 100 × 0.55 is 55, not 55.000…1
	}
	return max(base, 1)
}

// siteLimit is the site's capacity: the sum of the limits of its backends that are up.
func (p *Picker) siteLimit(pl *plan, i int) int64 {
	limit, _, _ := p.room(pl, i)
	return limit
}

// room is site i's capacity now, over its backends that are up: the sum of their limits,
// of their requests in flight, and of their free slots. Requests still in flight on a
// backend that went down (or left) are not counted: they take no slot that is free.
func (p *Picker) room(pl *plan, i int) (limit, used, free int64) {
	s := &p.sites[i]
	for _, j := range pl.up[i] {
		b := pl.members[i][j]
		l, n := p.limit(s, b), b.inflight.Load()
		limit += l
		used += n
		free += max(l-n, 0)
	}
	return limit, used, free
}

// headroom reports whether site i may take the requests that prefer it. A site that filled
// up (spilling) may again only once its in-flight is below resume × its limit.
func (p *Picker) headroom(pl *plan, i int) bool {
	st := p.sites[i].state
	if !st.spilling.Load() {
		return true
	}
	if limit, used, _ := p.room(pl, i); float64(used) < p.resume*float64(limit) {
		st.spilling.Store(false)
		return true
	}
	return false
}

// acquire takes a slot on a backend of site i: power of two choices on cost among the
// backends that are up, skipping a backend at its limit; if both choices are full, the
// first of the others with a free slot. It reports whether it took one.
func (p *Picker) acquire(l *Lease, pl *plan, i int) bool {
	return p.acquireExcept(l, pl, i, nil)
}

func (p *Picker) acquireExcept(l *Lease, pl *plan, i int, except *Backend) bool {
	if i < 0 || i >= len(p.sites) {
		return false
	}
	s := &p.sites[i]
	up, members := pl.up[i], pl.members[i]
	n := len(up)
	switch n {
	case 0:
		return false
	case 1:
		return members[up[0]] != except && p.take(l, i, members[up[0]])
	}
	x := p.intN(n)
	y := p.intN(n - 1)
	if y >= x {
		y++
	}
	a, b := members[up[x]], members[up[y]]
	if p.cheaper(s, b, a) {
		a, b = b, a
	}
	if a != except && p.take(l, i, a) {
		return true
	}
	if b != except && p.take(l, i, b) {
		return true
	}
	start := p.intN(n)
	for k := range n {
		c := members[up[(start+k)%n]]
		if c != a && c != b && c != except && p.take(l, i, c) {
			return true
		}
	}
	return false
}

// cheaper orders two backends for power of two choices: in flight first. Each one's score
// is its requests in flight (this one included) plus its failure penalty (recent failures,
// decaying: see Backend.penalty), divided by its slow-start ramp, so that a ramping backend
// gets fewer; the lower score wins, and a tie keeps the first candidate, which is random.
//
// Why not (in flight + 1) × latency average: at low load every backend has nothing in
// flight, so the one with the lowest average wins every comparison it is drawn into, and
// the others are never measured again (1000 sequential requests went 999/1 on two
// backends), and a backend that fails in a millisecond looks the fastest of all. Scores in
// whole requests tie at low load, so the site's backends share it evenly; under load a
// slower backend holds more requests in flight for the same share (Little's law) and so
// gets fewer; and nothing stale is kept: there is no average to decay. Failures weigh as
// extra requests in flight, so a backend that answers 500 at once never looks idle.
//
// A backend in slow start sits out each comparison with probability 1 - its ramp, so that
// at low load, where costs tie, it gets its ramp's share of picks (a tenth at first), and
// not none: dividing its cost by the ramp would make it lose every tie for the whole ramp.
// Under load its limit ramps as well (limit).
func (p *Picker) cheaper(s *pickerSite, x, y *Backend) bool {
	if p.sitsOut(s, x) {
		return false
	}
	if p.sitsOut(s, y) {
		return true
	}
	return p.score(x) < p.score(y)
}

// rampScale is the resolution of sitsOut's draw.
const rampScale = 1024

// sitsOut draws whether b, in slow start, sits out a comparison (probability 1 - ramp).
func (p *Picker) sitsOut(s *pickerSite, b *Backend) bool {
	r := p.ramp(s, b)
	return r < 1 && p.intN(rampScale) >= int(r*rampScale)
}

// score is b's cost for cheaper.
func (p *Picker) score(b *Backend) float64 {
	c := float64(b.inflight.Load() + 1)
	if b.failedAt.Load() != 0 { // only a backend that failed recently reads the clock
		c += math.Round(b.penalty(p.reg.now().UnixNano()))
	}
	return c
}

// take counts the request in flight on backend b of site i if b is below its limit, and
// records it in l.
func (p *Picker) take(l *Lease, i int, b *Backend) bool {
	s := &p.sites[i]
	lim := p.limit(s, b)
	for {
		n := b.inflight.Load()
		if n >= lim {
			return false
		}
		if b.inflight.CompareAndSwap(n, n+1) {
			l.sent = n + 1
			if lim > 0 && p.reg.share.Load() != nil {
				// The learned limit is the fleet's: it learns from the backend's in-flight
				// across the fleet, which this replica's share of it stands for.
				l.sent = (n + 1) * p.fullLimit(s, b) / lim
			}
			break
		}
	}
	s.state.inflight.Add(1)
	l.Site, l.Backend, l.SiteIndex, l.Balancer = s.state, b, i, p.bal
	l.limit = nil
	if s.static == 0 {
		l.limit = b.adaptive.Load()
	}
	l.Started = p.reg.now()
	return true
}

// spill places a request whose preferred site pref (-1: none) could not take it: elastic
// sites first, then the other sites of the split, most headroom first, skipping sites
// that are holding back after filling up; then, rather than refuse it, any site with a free
// slot at all, pref included. anyOnly skips straight to that last pass (a queued request
// has waited its turn and takes the first free slot).
func (p *Picker) spill(l *Lease, pl *plan, pref int, reason SpillReason, anyOnly bool) error {
	if !anyOnly {
		for _, i := range pl.elastic {
			if i != pref && p.headroom(pl, i) && p.placeSpill(l, pl, i, pref, reason) {
				return nil
			}
		}
		if p.byHeadroom(l, pl, pref, reason, true) {
			return nil
		}
	}
	if pref >= 0 && p.acquire(l, pl, pref) {
		l.Preferred, l.Spill = pref, SpillNone
		return nil
	}
	for _, i := range pl.elastic {
		if i != pref && p.placeSpill(l, pl, i, pref, reason) {
			return nil
		}
	}
	if p.byHeadroom(l, pl, pref, reason, false) {
		return nil
	}
	if len(pl.seq) == 0 && len(pl.elastic) == 0 {
		return ErrNoBackend
	}
	return ErrSaturated
}

// byHeadroom tries the non-elastic sites of the split other than pref, most free slots
// first; with hold, not those holding back after filling up. Without hold it tries every
// one of them, whatever its count of free slots said a moment before.
func (p *Picker) byHeadroom(l *Lease, pl *plan, pref int, reason SpillReason, hold bool) bool {
	var buf [16]int
	var free [16]int64
	order, room := buf[:0], free[:0]
	for _, i := range pl.spill {
		if i == pref || (hold && !p.headroom(pl, i)) {
			continue
		}
		_, _, h := p.room(pl, i)
		if h <= 0 && hold {
			continue
		}
		// insertion sort, most headroom first; a handful of sites
		k := len(order)
		order, room = append(order, i), append(room, h)
		for ; k > 0 && room[k-1] < h; k-- {
			order[k], room[k] = order[k-1], room[k-1]
		}
		order[k], room[k] = i, h
	}
	for _, i := range order {
		if p.placeSpill(l, pl, i, pref, reason) {
			return true
		}
	}
	return false
}

// placeSpill takes a slot in site i for a request that preferred pref, and counts the spill.
func (p *Picker) placeSpill(l *Lease, pl *plan, i, pref int, reason SpillReason) bool {
	if !p.acquire(l, pl, i) {
		p.sites[i].state.spilling.Store(true)
		return false
	}
	l.Preferred = pref
	if pref >= 0 {
		l.Spill = reason
		p.spills[pref][i][reason].Add(1)
	}
	return true
}

// spillKey names one spillover counter.
type spillKey struct{ from, to string }

// spillCounters returns the long-lived spill counters between every pair of sites in names,
// indexed [from][to][reason].
func (r *Registry) spillCounters(names []string) [][]*[numSpillReasons]atomic.Uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][]*[numSpillReasons]atomic.Uint64, len(names))
	for i, from := range names {
		out[i] = make([]*[numSpillReasons]atomic.Uint64, len(names))
		for j, to := range names {
			k := spillKey{from, to}
			c, ok := r.spills[k]
			if !ok {
				c = new([numSpillReasons]atomic.Uint64)
				r.spills[k] = c
			}
			out[i][j] = c
		}
	}
	return out
}

func (r *Registry) shed(reason ShedReason) { r.sheds[reason].Add(1) }

// The bounds of a learned limit when AdaptiveOptions leave them out.
const (
	DefaultAdaptiveFloor   = 8
	DefaultAdaptiveCap     = 1000
	DefaultAdaptiveInitial = 64
)

// withDefaults fills the adaptive bounds a site left out.
func (o AdaptiveOptions) withDefaults() AdaptiveOptions {
	if o.Floor < 1 {
		o.Floor = DefaultAdaptiveFloor
	}
	if o.Cap < o.Floor {
		o.Cap = max(DefaultAdaptiveCap, o.Floor)
	}
	if o.Initial < o.Floor || o.Initial > o.Cap {
		o.Initial = min(max(DefaultAdaptiveInitial, o.Floor), o.Cap)
	}
	return o
}
