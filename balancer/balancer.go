package balancer

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Balancer. They are plain data; proxy.Build translates the config file.
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
}

// SiteOptions describe one site of a Balancer.
type SiteOptions struct {
	Name     string
	Weight   int      // share of the split; 0 takes none
	Backends []string // addresses, e.g. "http://10.0.1.10:8080"; see Balancer.SetMembers
	// Elastic marks a spillover target: the excess of full sites goes to elastic sites
	// first. An elastic site takes spillover even with weight 0.
	Elastic bool
	// MaxInflight is each backend's concurrency limit; 0 means adaptive (see Adaptive).
	MaxInflight int
	// Adaptive bounds the learned limit of a site without MaxInflight.
	Adaptive AdaptiveOptions
	// Drained starts the site drained (see Balancer.SetDrained).
	Drained bool
	// SlowStart is how long a backend that joins (or comes back up) takes to ramp its limit
	// and its share of picks from a tenth to all of it; 0: no ramp.
	SlowStart time.Duration
}

// Balancer is the control object of one config's sites: their members, weights and drains,
// which the control plane changes (SetMembers, SetWeight, SetDrained, and health through the
// Registry). On every change it builds a new immutable Picker and swaps it in, as grpc-go's
// balancers build a new picker; requests read the Picker (Balancer.Picker) and never touch
// the Balancer's lock. Safe for concurrent use.
type Balancer struct {
	*layout

	mu sync.Mutex // serialises changes and the building of Pickers
	// members are the backends of each site, controls the weights and drains; both are
	// replaced whole on a change (a Picker keeps the slices it was built from). Guarded by mu.
	members  [][]*Backend
	controls []siteControl

	current atomic.Pointer[Picker]
	closed  atomic.Bool
}

// New builds a Balancer over opts, taking the state of each site and backend from reg
// (creating what it has not seen). Site names must be unique and backends unique within
// their site; configs.Validate guarantees both for a loaded config.
func New(reg *Registry, opts Options) (*Balancer, error) {
	lo := &layout{reg: reg, intN: opts.IntN, resume: opts.Resume,
		queueSize: opts.QueueSize, queueTimeout: opts.QueueTimeout}
	if lo.intN == nil {
		lo.intN = rand.IntN
	}
	if !(lo.resume > 0 && lo.resume <= 1) {
		lo.resume = 1
	}
	b := &Balancer{layout: lo}
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
		lo.names = append(lo.names, so.Name)
		lo.sites = append(lo.sites, pickerSite{state: reg.Site(so.Name), elastic: so.Elastic,
			static: int64(so.MaxInflight), adaptive: so.Adaptive.withDefaults(),
			slowStart: int64(so.SlowStart), hash: HashKey(so.Name)})
		bs, err := b.backends(i, so.Backends)
		if err != nil {
			return nil, err
		}
		members[i] = bs
		controls[i] = siteControl{weight: float64(so.Weight), drained: so.Drained}
	}
	lo.cursor = reg.cursor(lo.names)
	lo.spills = reg.spillCounters(lo.names)
	b.members, b.controls = members, controls
	b.rebuild()
	reg.attach(b)
	b.rebuild() // a health change between the first Picker and attach
	// No wake-up of the queue here: a waiter looks only in the current Balancer, which b is
	// not until MakeCurrent (which wakes it); a Balancer built for a dry run or a refused
	// reload must not stir the running one's waiters.
	return b, nil
}

// Picker returns the snapshot requests pick from now: one atomic load.
func (b *Balancer) Picker() *Picker { return b.current.Load() }

// rebuild builds a new Picker from the members, the controls and health now, and swaps it
// in. Calls are serialised, so the last one after a change sees it.
func (b *Balancer) rebuild() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rebuildLocked()
}

func (b *Balancer) rebuildLocked() {
	b.current.Store(&Picker{layout: b.layout, bal: b, plan: b.makePlan(b.members, b.controls)})
}

// backends returns the Registry's state for addrs in site i, refusing duplicates, and gives
// each an adaptive limit if the site learns them.
func (b *Balancer) backends(i int, addrs []string) ([]*Backend, error) {
	s := &b.sites[i]
	seen := make(map[string]bool, len(addrs))
	out := make([]*Backend, 0, len(addrs))
	for _, addr := range addrs {
		if seen[addr] {
			return nil, fmt.Errorf("site %q: backend %s listed twice", s.state.Name, addr)
		}
		seen[addr] = true
		be := b.reg.Backend(BackendID{Site: s.state.Name, Addr: addr})
		if s.static == 0 {
			if a := be.adaptive.Load(); a != nil {
				a.SetBounds(s.adaptive.Floor, s.adaptive.Cap)
			} else {
				be.adaptive.CompareAndSwap(nil, NewAdaptiveLimit(s.adaptive))
			}
		}
		out = append(out, be)
	}
	return out, nil
}

// SetMembers replaces the backends of the site called name (discovery found a new set).
// With joining, members that were not listed before slow-start, even one the Registry still
// knows from an earlier time; without (the first set of a proxy that just started: the
// deployment, not newcomers to it), they take their full limit at once. Members that are
// gone take no new requests and finish the ones they have. It returns the members now
// listed.
func (b *Balancer) SetMembers(name string, addrs []string, joining bool) ([]*Backend, error) {
	i := b.siteIndex(name)
	if i < 0 {
		return nil, fmt.Errorf("no site %q", name)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	bs, err := b.backends(i, addrs)
	if err != nil {
		return nil, err
	}
	now := b.reg.now().UnixNano()
	for _, be := range bs {
		if !slices.Contains(b.members[i], be) {
			if joining {
				be.joined.Store(now)
			} else {
				be.joined.Store(0)
			}
		}
	}
	next := slices.Clone(b.members)
	next[i] = bs
	b.members = next
	b.rebuildLocked()
	b.reg.queue.wake() // capacity may have grown
	return bs, nil
}

// SetWeight changes the weight of the site called name (an operator's change, or a step of
// a ramp), to a tenth. The split's position is kept.
func (b *Balancer) SetWeight(name string, weight float64) error {
	if !(weight >= 0 && weight <= 1e6) {
		return fmt.Errorf("site %q: weight %g out of range", name, weight)
	}
	return b.control(name, func(c *siteControl) { c.weight = weight })
}

// SetDrained drains the site called name, or undrains it: a drained site takes no new
// requests, not even spillover or retries, and its sessions map elsewhere; its in-flight
// requests finish.
func (b *Balancer) SetDrained(name string, drained bool) error {
	return b.control(name, func(c *siteControl) { c.drained = drained })
}

func (b *Balancer) control(name string, change func(*siteControl)) error {
	i := b.siteIndex(name)
	if i < 0 {
		return fmt.Errorf("no site %q", name)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	next := slices.Clone(b.controls)
	change(&next[i])
	b.controls = next
	b.rebuildLocked()
	b.reg.queue.wake() // an undrain or a new weight may open room
	return nil
}

// Close detaches b from its Registry: health changes stop rebuilding its Picker. Requests
// may still use it; they see the health of the moment Close was called.
func (b *Balancer) Close() {
	b.closed.Store(true)
	b.reg.detach(b)
	// A waiter queued under b looks for its slot in b's successor only once b is closed;
	// MakeCurrent's wake-up may have come before, so wake the next waiter again now rather
	// than leave it to its next recheck.
	b.reg.queue.wake()
}

// MakeCurrent makes b the Balancer of the config being served: a request queued under an
// older Balancer that has closed looks for its slot in b. Call it when b's config is swapped
// in (a Balancer that is built and dropped never becomes current).
func (b *Balancer) MakeCurrent() {
	b.reg.latest.Store(b)
	b.reg.queue.setPolicy(b.queueTimeout)
	b.reg.queue.wake()
}

// Backends lists the current backends, site by site in Options order.
func (b *Balancer) Backends() []*Backend { return b.Picker().Backends() }

// Status reports every site's capacity and its backends' state now, in Options order.
func (b *Balancer) Status() []SiteStatus { return b.Picker().Status() }
