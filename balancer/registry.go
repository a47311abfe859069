// Package balancer decides where each request goes: which site (the weighted splitter) and
// which backend inside it (power of two choices on in-flight). It keeps the state that must
// outlive a config reload (in-flight counts, health, the splitter's position) in a Registry
// keyed by stable IDs. A Balancer, built from plain option structs, is the control object
// of one config's sites (members, weights, drains); on every change it builds a new
// immutable Picker, which is all the request path reads.
//
// The request path is Picker.Pick, which never blocks and takes no lock, and Lease.Done,
// which gives back what Pick took, exactly once.
package balancer

import (
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// BackendID is a backend's stable identity: its site and its address ("http://10.0.1.10:8080").
// A backend keeps its state across reloads for as long as its ID is unchanged.
type BackendID struct {
	Site, Addr string
}

func (id BackendID) String() string { return id.Site + "/" + id.Addr }

// Backend is one backend's long-lived state. It is shared by reference by every Picker that
// lists it; all methods are safe for concurrent use.
type Backend struct {
	ID BackendID

	inflight atomic.Int64
	down     atomic.Bool // active health says down; zero value: up
	ejected  atomic.Bool // passive health took it out of rotation for a while
	// failureRun is passive health's count of failed tries in a row (FailuresInARow).
	failureRun atomic.Int64

	// joined is when b last came into rotation (created after the first Picker, or back
	// up), in Unix nanoseconds, while it may still be slow-starting; 0 once the ramp is over
	// or for the backends of the first config.
	joined atomic.Int64
	// latency is an EWMA of the time to response headers, in nanoseconds; 0: no sample yet.
	latency atomic.Int64
	// failures is a count of b's recent failed requests (see Result), decaying with
	// failureDecay, as math.Float64bits, brought up to date at failedAt (Unix nanoseconds;
	// 0: no failure counted, or it has decayed away). The in-site choice adds it to b's
	// requests in flight.
	failures atomic.Uint64
	failedAt atomic.Int64
	// adaptive is b's learned concurrency limit, made the first time a Picker lists b in a
	// site without max_inflight, and kept (with what it learned) across reloads.
	adaptive atomic.Pointer[AdaptiveLimit]
}

// Inflight is the number of requests holding a Lease on b.
func (b *Backend) Inflight() int64 { return b.inflight.Load() }

// Up reports whether b may be picked: active health has it up and it is not ejected.
func (b *Backend) Up() bool { return !b.down.Load() && !b.ejected.Load() }

// Healthy reports what active health last said, whatever passive health did since; a new
// config generation's health checks start from it.
func (b *Backend) Healthy() bool { return !b.down.Load() }

// Ejected reports whether passive health has taken b out of rotation.
func (b *Backend) Ejected() bool { return b.ejected.Load() }

// Latency is the moving average of b's time to response headers; 0 before any sample.
func (b *Backend) Latency() time.Duration { return time.Duration(b.latency.Load()) }

// observeLatency folds one sample into the EWMA (weight 1/8 for the new sample). Concurrent
// updates may lose one another's sample; the average stays an average.
func (b *Backend) observeLatency(d time.Duration) {
	old := b.latency.Load()
	if old == 0 {
		b.latency.Store(int64(d))
		return
	}
	b.latency.Store(old + (int64(d)-old)/8)
}

// failureDecay is the time constant of a backend's failure penalty: each failure counts as
// one more request in flight, e^-1 of it after failureDecay. One failure at low load keeps a
// backend out of comparisons it would tie for about 0.7 s (until the penalty rounds to 0); a
// backend that fails every request in a millisecond gets about as many requests a second as
// its peers have in flight.
const failureDecay = time.Second

// penalty is b's failure count decayed to now (Unix nanoseconds).
func (b *Backend) penalty(now int64) float64 {
	at := b.failedAt.Load()
	if at == 0 {
		return 0
	}
	v := math.Float64frombits(b.failures.Load())
	if dt := now - at; dt > 0 {
		v *= math.Exp(-float64(dt) / float64(failureDecay))
	}
	if v < 0.01 {
		b.failedAt.CompareAndSwap(at, 0) // decayed away: later picks skip the clock
		return 0
	}
	return v
}

// addFailure counts one failed request at now. Concurrent failures may lose one another's
// count; the penalty stays a penalty.
func (b *Backend) addFailure(now int64) {
	v := b.penalty(now) + 1
	b.failures.Store(math.Float64bits(v))
	b.failedAt.Store(now)
}

// Site is one site's long-lived state.
type Site struct {
	Name string

	inflight atomic.Int64
	// spilling is set when the site was found full, and cleared once its in-flight falls
	// below spillover.resume of its limit (hysteresis): while set, requests that prefer it
	// go elsewhere first.
	spilling atomic.Bool
	queue    *waitQueue // the Registry's

	discoveryFailures atomic.Uint64
}

// DiscoveryFailures is where the site's discovery counts its failed lookups, across config
// generations (for a metric).
func (s *Site) DiscoveryFailures() *atomic.Uint64 { return &s.discoveryFailures }

// Spilling reports whether s is holding its preferred traffic back after it filled up.
func (s *Site) Spilling() bool { return s.spilling.Load() }

// Inflight is the number of requests holding a Lease on a backend of s.
func (s *Site) Inflight() int64 { return s.inflight.Load() }

// Registry owns the long-lived state of every site and backend, keyed by stable IDs, so that
// a new Balancer built on a reload finds the in-flight counts, health and splitter position
// of the old one. The zero value is not usable; call NewRegistry. Safe for concurrent use;
// its lock is taken only by the control plane (building Balancers, health changes).
type Registry struct {
	mu       sync.Mutex
	backends map[BackendID]*Backend
	sites    map[string]*Site
	cursors  map[string]*atomic.Uint64
	open     map[*Balancer]struct{} // rebuilt on every health change, until closed
	spills   map[spillKey]*[numSpillReasons]atomic.Uint64
	// warm is set by the first Balancer: backends created after it slow-start, those of the
	// first config do not (they are the deployment, not newcomers to it).
	warm bool

	queue waitQueue
	sheds [numShedReasons]atomic.Uint64
	// latest is the current Balancer (Balancer.MakeCurrent; at first the first one): a
	// request queued on an older one that has closed waits for a slot in it.
	latest atomic.Pointer[Balancer]
	now    func() time.Time
	// share, when set, is this replica's part of each backend's limit (a fleet).
	share atomic.Pointer[shareOf]
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry {
	r := &Registry{
		backends: map[BackendID]*Backend{},
		sites:    map[string]*Site{},
		cursors:  map[string]*atomic.Uint64{},
		open:     map[*Balancer]struct{}{},
		spills:   map[spillKey]*[numSpillReasons]atomic.Uint64{},
		now:      time.Now,
	}
	r.queue.now = func() time.Time { return r.now() } // the Registry's clock, even if replaced
	r.queue.interval = defaultInterval
	return r
}

// Backend returns the state for id, creating it (up, idle) on first use.
func (r *Registry) Backend(id BackendID) *Backend {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.backendLocked(id)
}

func (r *Registry) backendLocked(id BackendID) *Backend {
	b, ok := r.backends[id]
	if !ok {
		b = &Backend{ID: id}
		if r.warm {
			b.joined.Store(r.now().UnixNano())
		}
		r.backends[id] = b
	}
	return b
}

// Lookup returns the state for id if the registry has it.
func (r *Registry) Lookup(id BackendID) (*Backend, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.backends[id]
	return b, ok
}

// Site returns the state for the site called name, creating it on first use.
func (r *Registry) Site(name string) *Site {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sites[name]
	if !ok {
		s = &Site{Name: name, queue: &r.queue}
		r.sites[name] = s
	}
	return s
}

// cursor returns the splitter position shared by every Balancer over exactly these sites in
// this order, so that a reload that keeps the site set keeps the split's position.
func (r *Registry) cursor(sites []string) *atomic.Uint64 {
	key := strings.Join(sites, "\x00")
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.cursors[key]
	if !ok {
		c = new(atomic.Uint64)
		r.cursors[key] = c
	}
	return c
}

// SetUp marks the backend at addr in site up or down (active health), and rebuilds the
// Picker of every open Balancer before it returns, so the next pick sees the change. A
// backend the registry does not know is ignored (its generation has gone).
func (r *Registry) SetUp(site, addr string, up bool) {
	r.set(site, addr, !up, func(b *Backend) *atomic.Bool { return &b.down })
}

// SetEjected takes the backend at addr in site out of rotation, or returns it (passive
// health), like SetUp.
func (r *Registry) SetEjected(site, addr string, ejected bool) {
	r.set(site, addr, ejected, func(b *Backend) *atomic.Bool { return &b.ejected })
}

// set stores v in the flag of a backend and, when that changes it, rebuilds the Picker of
// every open Balancer (outside the registry's lock).
func (r *Registry) set(site, addr string, v bool, flag func(*Backend) *atomic.Bool) {
	r.mu.Lock()
	b, ok := r.backends[BackendID{Site: site, Addr: addr}]
	r.mu.Unlock()
	if !ok {
		return
	}
	wasUp := b.Up()
	if flag(b).Swap(v) == v {
		return
	}
	if !wasUp && b.Up() {
		// Back in rotation: it ramps up again from the slow-start floor, and capacity grew.
		// Its failure penalty is forgiven: health let it back, so it competes at once (if
		// it still fails, its new failures count, and passive health ejects it for longer).
		b.joined.Store(r.now().UnixNano())
		b.failedAt.Store(0)
		defer r.queue.wake()
	}
	r.replanAll()
}

// replanAll makes every open Balancer build a Picker that sees a change of health.
func (r *Registry) replanAll() {
	for _, b := range r.openBalancers() {
		b.rebuild()
	}
}

// openBalancers is a snapshot of the Balancers attached now, to act on outside the lock.
func (r *Registry) openBalancers() []*Balancer {
	r.mu.Lock()
	defer r.mu.Unlock()
	open := make([]*Balancer, 0, len(r.open))
	for b := range r.open {
		open = append(open, b)
	}
	return open
}

// Prune forgets the state of every backend, site and splitter position that no open
// Balancer uses (a reload removed them), so that a long-running proxy whose config or discovered
// pool changes does not keep them forever. One that still has requests in flight is kept
// until a later Prune finds it idle. A backend that comes back after it was forgotten starts
// afresh (and slow-starts). Call it after closing the Balancers of an old config, never while one is being
// built (New takes its backends before it attaches to the Registry).
//
// Prunes must not run concurrently (the Reloader serialises them): each locks every open
// Balancer, in map order.
func (r *Registry) Prune() {
	// Member changes (SetMembers) take a backend, then list it: hold them all off.
	for _, b := range r.openBalancers() {
		b.mu.Lock()
		defer b.mu.Unlock()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	backends := map[BackendID]bool{}
	sites := map[string]bool{}
	cursors := map[string]bool{}
	for bal := range r.open {
		for _, bs := range bal.Picker().plan.members { // (not bal.members: one attached since is not locked)
			for _, b := range bs {
				backends[b.ID] = true
			}
		}
		for _, name := range bal.names {
			sites[name] = true
		}
		cursors[strings.Join(bal.names, "\x00")] = true
	}
	// A backend or site still holding requests is kept: listed again (a reload that drops it
	// and the next that brings it back), it must find its in-flight count, or it would take
	// its whole limit again on top of the requests still running. A later Prune collects it.
	for id, b := range r.backends {
		if !backends[id] && b.Inflight() == 0 {
			delete(r.backends, id)
		}
	}
	for name, s := range r.sites {
		if !sites[name] && s.Inflight() == 0 {
			delete(r.sites, name)
		}
	}
	for key := range r.cursors {
		if !cursors[key] {
			delete(r.cursors, key)
		}
	}
	for k := range r.spills {
		if !sites[k.from] || !sites[k.to] {
			delete(r.spills, k)
		}
	}
}

func (r *Registry) attach(b *Balancer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.open[b] = struct{}{}
	r.warm = true
	if r.latest.CompareAndSwap(nil, b) { // the first is current; later ones once made so
		r.queue.setPolicy(b.queueTimeout)
	}
}

func (r *Registry) detach(b *Balancer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.open, b)
}
