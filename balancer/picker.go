package balancer

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
)

// ErrNoBackend means no site in the split has a backend that is up.
var ErrNoBackend = errors.New("no backend available")

// Options configure a Picker. They are plain data; proxy.Build translates the config file.
type Options struct {
	Sites []SiteOptions
	// IntN returns a uniform random int in [0, n); nil means math/rand/v2.IntN. Injected so
	// that tests can make the in-site choice exact.
	IntN func(n int) int
}

// SiteOptions describe one site of a Picker.
type SiteOptions struct {
	Name     string
	Weight   int      // share of the split; 0 takes none
	Backends []string // addresses, e.g. "http://10.0.1.10:8080"
}

// Picker is an immutable snapshot of the sites and their backends, built by the control plane
// and read by any number of requests at once. Pick takes no lock and does not allocate.
type Picker struct {
	reg   *Registry
	sites []pickerSite
	// cursor is the splitter's position, shared with every Picker over the same site list.
	cursor *atomic.Uint64
	intN   func(n int) int

	// plan is replaced by the control plane (Registry.SetUp) when health changes.
	plan atomic.Pointer[plan]
}

type pickerSite struct {
	state    *Site
	weight   int
	backends []*Backend
}

// plan is what a Picker derives from health: the split over sites that have a backend up,
// and, per site, the indexes of the backends that are up.
type plan struct {
	epoch uint64
	seq   []int32
	up    [][]int
}

// NewPicker builds a Picker over opts, taking the state of each site and backend from reg
// (creating what it has not seen). Site names must be unique and backends unique within
// their site; configs.Validate guarantees both for a loaded config.
func NewPicker(reg *Registry, opts Options) (*Picker, error) {
	p := &Picker{reg: reg, intN: opts.IntN}
	if p.intN == nil {
		p.intN = rand.IntN
	}
	names := make([]string, len(opts.Sites))
	seen := map[string]bool{}
	for i, so := range opts.Sites {
		if seen[so.Name] {
			return nil, fmt.Errorf("site %q listed twice", so.Name)
		}
		seen[so.Name] = true
		if so.Weight < 0 {
			return nil, fmt.Errorf("site %q: negative weight %d", so.Name, so.Weight)
		}
		names[i] = so.Name
		ps := pickerSite{state: reg.Site(so.Name), weight: so.Weight}
		addrs := map[string]bool{}
		for _, addr := range so.Backends {
			if addrs[addr] {
				return nil, fmt.Errorf("site %q: backend %s listed twice", so.Name, addr)
			}
			addrs[addr] = true
			ps.backends = append(ps.backends, reg.Backend(BackendID{Site: so.Name, Addr: addr}))
		}
		p.sites = append(p.sites, ps)
	}
	p.cursor = reg.cursor(names)
	p.plan.Store(p.makePlan(reg.epoch.Load()))
	reg.attach(p)
	p.replan() // a health change between the first plan and attach
	return p, nil
}

// Close detaches p from its Registry: health changes stop replanning it. Requests may still
// use p; they see the health of the moment Close was called.
func (p *Picker) Close() { p.reg.detach(p) }

// makePlan derives the split and the up lists from the backends' health now. A site with
// no backend up gets weight 0, so its share goes to the others in proportion to theirs.
func (p *Picker) makePlan(epoch uint64) *plan {
	pl := &plan{epoch: epoch, up: make([][]int, len(p.sites))}
	weights := make([]int, len(p.sites))
	for i, s := range p.sites {
		for j, b := range s.backends {
			if b.Up() {
				pl.up[i] = append(pl.up[i], j)
			}
		}
		if len(pl.up[i]) > 0 {
			weights[i] = s.weight
		}
	}
	pl.seq = schedule(weights)
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
	// SiteIndex and BackendIndex locate the pick in the Options the Picker was built from.
	SiteIndex, BackendIndex int

	done bool
}

// Result is how a leased request ended, reported to Lease.Done.
type Result struct {
	Status int   // HTTP status sent to the client; 0 if none was
	Err    error // transport error, if any
}

// Pick chooses a site by the weighted split and a backend inside it by power of two
// choices on in-flight, and fills l, which must be unused. The caller must call l.Done
// exactly once after a nil error. Pick never blocks.
func (p *Picker) Pick(l *Lease) error {
	pl := p.plan.Load()
	if len(pl.seq) == 0 {
		return ErrNoBackend
	}
	si := int(pl.seq[(p.cursor.Add(1)-1)%uint64(len(pl.seq))])
	p.take(l, si, p.choose(&p.sites[si], pl.up[si]))
	return nil
}

// PickRetry fills l, which must be unused, for another try of a request whose last try
// failed on the backend at (prevSite, prevBackend) (indexes as in a Lease). It prefers a
// backend in another site, the site chosen at random by weight among those with a backend
// up; with no other site, another backend of the same site. ErrNoBackend when there is
// nowhere else to go. It leaves the split's position alone, so retries do not disturb the
// split of first tries.
func (p *Picker) PickRetry(l *Lease, prevSite, prevBackend int) error {
	pl := p.plan.Load()
	total := 0
	for i := range p.sites {
		if i != prevSite && len(pl.up[i]) > 0 {
			total += p.sites[i].weight
		}
	}
	if total > 0 {
		r := p.intN(total)
		for i := range p.sites {
			if i == prevSite || len(pl.up[i]) == 0 {
				continue
			}
			if r < p.sites[i].weight {
				p.take(l, i, p.choose(&p.sites[i], pl.up[i]))
				return nil
			}
			r -= p.sites[i].weight
		}
	}
	if prevSite < 0 || prevSite >= len(p.sites) {
		return ErrNoBackend
	}
	others := make([]int, 0, len(pl.up[prevSite]))
	for _, j := range pl.up[prevSite] {
		if j != prevBackend {
			others = append(others, j)
		}
	}
	if len(others) == 0 {
		return ErrNoBackend
	}
	p.take(l, prevSite, p.choose(&p.sites[prevSite], others))
	return nil
}

// take counts a request in flight on backend bi of site si and records it in l.
func (p *Picker) take(l *Lease, si, bi int) {
	s := &p.sites[si]
	b := s.backends[bi]
	b.inflight.Add(1)
	s.state.inflight.Add(1)
	l.Site, l.Backend, l.SiteIndex, l.BackendIndex = s.state, b, si, bi
}

// choose is power of two choices: two distinct backends at random among those up, the
// one with fewer requests in flight. It returns an index into s.backends.
func (p *Picker) choose(s *pickerSite, up []int) int {
	n := len(up)
	if n == 1 {
		return up[0]
	}
	i := p.intN(n)
	j := p.intN(n - 1)
	if j >= i {
		j++
	}
	a, b := up[i], up[j]
	if s.backends[b].Inflight() < s.backends[a].Inflight() {
		return b
	}
	return a
}

// Done releases the lease and reports how the request ended. Only the first call counts;
// later calls return false and change nothing, so a deferred Done on every path is safe.
func (l *Lease) Done(Result) bool {
	if l.Backend == nil || l.done {
		return false
	}
	l.done = true
	l.Backend.inflight.Add(-1)
	l.Site.inflight.Add(-1)
	return true
}

// Backends lists the Picker's backends, site by site in Options order.
func (p *Picker) Backends() []*Backend {
	var out []*Backend
	for _, s := range p.sites {
		out = append(out, s.backends...)
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
