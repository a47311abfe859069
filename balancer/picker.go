package balancer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoBackend means no site in the split has a backend that is up.
var ErrNoBackend = errors.New("no backend available")

// Options configure a Picker. They are plain data; proxy.Build translates the config file.
type Options struct {
	Sites []SiteOptions
	// Resume is the fraction of its limit a site that filled up must fall below before the
	// requests that prefer it go to it again (hysteresis); 0 means 1 (no hysteresis).
	Resume float64
	// QueueSize bounds the requests waiting for a slot when every site is full; 0: none wait.
	QueueSize int
	// QueueTimeout is the longest a request waits in the queue; 0 means no limit other than
	// the request's context.
	QueueTimeout time.Duration
	// IntN returns a uniform random int in [0, n); nil means math/rand/v2.IntN. Injected so
	// that tests can make the in-site choice exact.
	IntN func(n int) int
	// Owner is the caller's, for Picker.Owner: what the Picker's indexes refer to (the
	// proxy's Table).
	Owner any
}

// SiteOptions describe one site of a Picker.
type SiteOptions struct {
	Name     string
	Weight   int      // share of the split; 0 takes none
	Backends []string // addresses, e.g. "http://10.0.1.10:8080"; see Picker.SetMembers
	// Elastic marks a spillover target: the excess of full sites goes to elastic sites
	// first. An elastic site takes spillover even with weight 0.
	Elastic bool
	// MaxInflight is each backend's concurrency limit; 0 means adaptive (see Adaptive).
	MaxInflight int
	// Adaptive bounds the learned limit of a site without MaxInflight.
	Adaptive AdaptiveOptions
	// Drained starts the site drained (see Picker.SetDrained).
	Drained bool
	// SlowStart is how long a backend that joins (or comes back up) takes to ramp its limit
	// and its share of picks from a tenth to all of it; 0: no ramp.
	SlowStart time.Duration
}

// Picker is an immutable snapshot of the sites, their policies and their backends, built by
// the control plane and read by any number of requests at once. Pick takes no lock and does
// not allocate. Its member lists and health change through plans that the control plane
// replaces (Registry.SetUp, SetMembers); a request keeps the plan it picked from.
type Picker struct {
	reg   *Registry
	sites []pickerSite
	// cursor is the splitter's position, shared with every Picker over the same site list.
	cursor       *atomic.Uint64
	names        []string
	intN         func(n int) int
	resume       float64
	queueSize    int
	queueTimeout time.Duration
	spills       [][]*[numSpillReasons]atomic.Uint64 // [from][to], from the Registry

	// members are the backends of each site, replaced whole by SetMembers; controls are the
	// weights and drains, replaced whole by SetWeight and SetDrained.
	mu       sync.Mutex // serialises SetMembers, SetWeight and SetDrained
	members  atomic.Pointer[[][]*Backend]
	controls atomic.Pointer[[]siteControl]
	// plan is replaced by the control plane when health or membership changes.
	plan   atomic.Pointer[plan]
	closed atomic.Bool
	owner  any
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

// plan is what a Picker derives from health and membership: the split over sites that have
// a backend up, and per site its members and the indexes of those that are up.
type plan struct {
	epoch   uint64
	seq     []int32
	weights []int // the split's weights: 0 for a site with no backend up
	members [][]*Backend
	up      [][]int
	elastic []int // indexes of elastic sites with a backend up, in config order
	spill   []int // indexes of non-elastic sites in the split, in config order
}

// NewPicker builds a Picker over opts, taking the state of each site and backend from reg
// (creating what it has not seen). Site names must be unique and backends unique within
// their site; configs.Validate guarantees both for a loaded config.
func NewPicker(reg *Registry, opts Options) (*Picker, error) {
	p := &Picker{reg: reg, intN: opts.IntN, resume: opts.Resume, owner: opts.Owner,
		queueSize: opts.QueueSize, queueTimeout: opts.QueueTimeout}
	if p.intN == nil {
		p.intN = rand.IntN
	}
	if !(p.resume > 0 && p.resume <= 1) {
		p.resume = 1
	}
	names := make([]string, len(opts.Sites))
	members := make([][]*Backend, len(opts.Sites))
	controls := make([]siteControl, len(opts.Sites))
	seen := map[string]bool{}
	for i, so := range opts.Sites {
		if seen[so.Name] {
			return nil, fmt.Errorf("site %q listed twice", so.Name)
		}
		seen[so.Name] = true
		if so.Weight < 0 {
			return nil, fmt.Errorf("site %q: negative weight %d", so.Name, so.Weight)
		}
		if so.MaxInflight < 0 {
			return nil, fmt.Errorf("site %q: negative max_inflight %d", so.Name, so.MaxInflight)
		}
		names[i] = so.Name
		ps := pickerSite{state: reg.Site(so.Name), elastic: so.Elastic,
			static: int64(so.MaxInflight), adaptive: so.Adaptive.withDefaults(),
			slowStart: int64(so.SlowStart), hash: HashKey(so.Name)}
		p.sites = append(p.sites, ps)
		bs, err := p.backends(i, so.Backends)
		if err != nil {
			return nil, err
		}
		members[i] = bs
		controls[i] = siteControl{weight: float64(so.Weight), drained: so.Drained}
	}
	p.names = names
	p.cursor = reg.cursor(names)
	p.spills = reg.spillCounters(names)
	p.members.Store(&members)
	p.controls.Store(&controls)
	p.plan.Store(p.makePlan(reg.epoch.Load()))
	reg.attach(p)
	p.replan()       // a health change between the first plan and attach
	reg.queue.wake() // a request waiting on an older config may fit in this one
	return p, nil
}

// backends returns the Registry's state for addrs in site i, refusing duplicates, and gives
// each an adaptive limit if the site learns them.
func (p *Picker) backends(i int, addrs []string) ([]*Backend, error) {
	s := &p.sites[i]
	seen := make(map[string]bool, len(addrs))
	out := make([]*Backend, 0, len(addrs))
	for _, addr := range addrs {
		if seen[addr] {
			return nil, fmt.Errorf("site %q: backend %s listed twice", s.state.Name, addr)
		}
		seen[addr] = true
		b := p.reg.Backend(BackendID{Site: s.state.Name, Addr: addr})
		if s.static == 0 {
			if a := b.adaptive.Load(); a != nil {
				a.SetBounds(s.adaptive.Floor, s.adaptive.Cap)
			} else {
				b.adaptive.CompareAndSwap(nil, NewAdaptiveLimit(s.adaptive))
			}
		}
		out = append(out, b)
	}
	return out, nil
}

// SetMembers replaces the backends of the site called name (discovery found a new set).
// With joining, members that were not listed before slow-start, even one the Registry still
// knows from an earlier time; without (the first set of a proxy that just started: the
// deployment, not newcomers to it), they take their full limit at once. Members that are
// gone take no new requests and finish the ones they have. It returns the members now
// listed.
func (p *Picker) SetMembers(name string, addrs []string, joining bool) ([]*Backend, error) {
	i := p.siteIndex(name)
	if i < 0 {
		return nil, fmt.Errorf("no site %q", name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	bs, err := p.backends(i, addrs)
	if err != nil {
		return nil, err
	}
	old := *p.members.Load()
	now := p.reg.now().UnixNano()
	for _, b := range bs {
		if !slices.Contains(old[i], b) {
			if joining {
				b.joined.Store(now)
			} else {
				b.joined.Store(0)
			}
		}
	}
	next := slices.Clone(old)
	next[i] = bs
	p.members.Store(&next)
	p.reg.replanAll()
	p.reg.queue.wake() // capacity may have grown
	return bs, nil
}

// SetWeight changes the weight of the site called name (an operator's change, or a step of
// a ramp), to a tenth. The split's position is kept.
func (p *Picker) SetWeight(name string, weight float64) error {
	if !(weight >= 0 && weight <= 1e6) {
		return fmt.Errorf("site %q: weight %g out of range", name, weight)
	}
	return p.control(name, func(c *siteControl) { c.weight = weight })
}

// SetDrained drains the site called name, or undrains it: a drained site takes no new
// requests, not even spillover or retries, and its sessions map elsewhere; its in-flight
// requests finish.
func (p *Picker) SetDrained(name string, drained bool) error {
	return p.control(name, func(c *siteControl) { c.drained = drained })
}

func (p *Picker) control(name string, change func(*siteControl)) error {
	i := p.siteIndex(name)
	if i < 0 {
		return fmt.Errorf("no site %q", name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	next := slices.Clone(*p.controls.Load())
	change(&next[i])
	p.controls.Store(&next)
	p.reg.replanAll()
	p.reg.queue.wake() // an undrain or a new weight may open room
	return nil
}

func (p *Picker) siteIndex(name string) int {
	for i := range p.sites {
		if p.sites[i].state.Name == name {
			return i
		}
	}
	return -1
}

// Close detaches p from its Registry: health changes stop replanning it. Requests may still
// use p; they see the health of the moment Close was called.
func (p *Picker) Close() {
	p.closed.Store(true)
	p.reg.detach(p)
}

// Owner is Options.Owner.
func (p *Picker) Owner() any { return p.owner }

// MakeCurrent makes p the Picker of the config being served: a request queued under an
// older Picker that has closed looks for its slot in p. Call it when p's config is swapped
// in (a Picker that is built and dropped never becomes current).
func (p *Picker) MakeCurrent() {
	p.reg.latest.Store(p)
	p.reg.queue.setPolicy(p.queueTimeout)
	p.reg.queue.wake()
}

// makePlan derives the split and the up lists from the members and their health now. A site
// with no backend up gets weight 0, so its share goes to the others in proportion to theirs.
func (p *Picker) makePlan(epoch uint64) *plan {
	members, controls := *p.members.Load(), *p.controls.Load()
	pl := &plan{epoch: epoch, members: members, up: make([][]int, len(p.sites)),
		weights: make([]int, len(p.sites))}
	for i, s := range p.sites {
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

// replan brings p's plan up to the registry's latest health. Concurrent calls are safe: a
// plan only ever replaces an older one.
func (p *Picker) replan() {
	for {
		old := p.plan.Load()
		epoch := p.reg.epoch.Load()
		if old.epoch >= epoch {
			return
		}
		if p.plan.CompareAndSwap(old, p.makePlan(epoch)) {
			return
		}
	}
}

// Lease is one request's hold on a backend: it counts in the backend's and the site's
// in-flight from Pick until Done. Embed it in per-request state; its zero value is ready.
// A Lease belongs to one request and is not safe for concurrent use.
type Lease struct {
	Site    *Site
	Backend *Backend
	// SiteIndex locates the site in the Options the Picker was built from.
	SiteIndex int
	// Preferred is the index of the site the split (or affinity) chose; it differs from
	// SiteIndex when the request spilled, for Spill.
	Preferred int
	// Spill says why the request went to another site than its preferred one; "" if it did
	// not.
	Spill SpillReason
	// Queued is how long the request waited for a slot.
	Queued time.Duration
	// Started is when the lease was taken.
	Started time.Time
	// Picker is the one the lease was taken from: SiteIndex and Preferred index its sites.
	// A request queued across a reload can be admitted by a newer Picker than the one it
	// asked (see MakeCurrent).
	Picker *Picker

	limit *AdaptiveLimit // the backend's, if its site learns limits
	sent  int64          // the backend's in-flight count with this request
	done  bool
}

// Result is how a leased request ended, reported to Lease.Done.
type Result struct {
	Status int   // HTTP status sent to the client; 0 if none was
	Err    error // transport error, if any
	// Latency is the backend's time to response headers; 0 when there is none to learn
	// from (the client went away, the backend was not reached, a protocol switch).
	Latency time.Duration
	// Overload says the backend showed it is over its capacity: a timeout or a 503.
	Overload bool
}

// failed reports whether the try counts as a failure of its backend for the in-site choice:
// a 5xx status, or an error before any status was sent that is not the client's going away.
// An answer broken off midway (an error after a status below 500) is not counted: it may be
// the client's doing.
func (r Result) failed() bool {
	return r.Status >= 500 || (r.Status == 0 && r.Err != nil && !errors.Is(r.Err, context.Canceled))
}

// Pick chooses the preferred site by the weighted split (or, for a key other than 0, by
// affinity: see HashKey) and admits the request there when it has a free slot, or spills it
// (see spill), and fills l, which must be unused. ErrSaturated when every site is full,
// ErrNoBackend when none has a backend up. After a nil error the caller must call l.Done
// exactly once. Pick never blocks; Admit is Pick that waits in the queue.
func (p *Picker) Pick(l *Lease, key uint64) error {
	pl := p.plan.Load()
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
	pl := p.plan.Load()
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

// Backends lists the Picker's current backends, site by site in Options order.
func (p *Picker) Backends() []*Backend {
	var out []*Backend
	for _, bs := range *p.members.Load() {
		out = append(out, bs...)
	}
	return out
}

// Sites lists the Picker's site states in Options order.
func (p *Picker) Sites() []*Site {
	out := make([]*Site, len(p.sites))
	for i := range p.sites {
		out[i] = p.sites[i].state
	}
	return out
}
