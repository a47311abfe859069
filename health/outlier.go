package health

import (
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Ejector receives ejections: the backend at addr in site is ejected (taken out of rotation
// for a while) or returned. Implemented by the balancer's Registry.
//
// Outliers calls SetEjected while holding its own lock, so that the calls for one backend
// arrive in the order the state changed (a late "eject" overtaking its "return" would leave
// the backend out of rotation for good). SetEjected must therefore not block and must not
// call back into the Outliers, except for Ejected, which takes no lock.
type Ejector interface {
	SetEjected(site, addr string, ejected bool)
}

// Defaults for the zero values of OutlierOptions.
const (
	DefaultConsecutiveFailures = 5
	DefaultBaseEjection        = 30 * time.Second
	DefaultMaxEjection         = 300 * time.Second
	DefaultMaxEjectionPercent  = 50
)

// Peer is one backend as passive health meets it on the request path: the balancer's
// Backend, which keeps the backend's count of failed tries in a row with the rest of its
// long-lived state (in the balancer's Registry, keyed by site and address). Observe records
// a try's outcome into the backend the try went to, with no lookup; the detector's own
// per-backend state (ejections, timers, the panic guard) is for the control path only.
type Peer interface {
	// SiteAddr names the backend: its site and its address, as the Ejector takes them.
	SiteAddr() (site, addr string)
	// FailuresInARow is the backend's count of failed tries since its last success.
	FailuresInARow() *atomic.Int64
}

// OutlierOptions configure an Outliers detector. Zero values take the defaults above.
type OutlierOptions struct {
	// Ejector receives every ejection and return. Required.
	Ejector Ejector
	// ConsecutiveFailures is the number of failures in a row that ejects a backend (≤0: 5).
	ConsecutiveFailures int
	// BaseEjection is how long the first ejection lasts; the n-th lasts n × BaseEjection
	// (≤0: 30s), and only the first may be cut short by a passing probe (Recovered) ...
	BaseEjection time.Duration
	// ... capped at MaxEjection (≤0: 300s; raised to BaseEjection if below it). MaxEjection
	// is also the decay period: for every full MaxEjection a backend has spent back in
	// rotation since its last return, its ejection count n drops by one, so a backend that
	// failed once long ago starts again from BaseEjection.
	MaxEjection time.Duration
	// MaxEjectionPercent is the panic guard: never eject more than this percentage of a
	// site's backends, rounded down, but always allow one (≤0: 50; >100: 100).
	MaxEjectionPercent int
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// AfterFunc schedules f after d and returns a function that cancels it, reporting
	// whether it did (nil: time.AfterFunc). It is called with the detector's lock held, so
	// it must not call f itself; f runs on another goroutine or later, as time.AfterFunc does.
	AfterFunc func(d time.Duration, f func()) (stop func() bool)
	// Log receives every ejection, return and panic-guard refusal (nil: no logging).
	Log *zap.Logger
}

// Outliers watches request outcomes and ejects backends that keep failing (passive health).
// It is long-lived (created once by the caller, kept across config reloads) so that failure
// counts, ejections and ejection counts survive reloads for every backend whose site and
// address are unchanged. Its methods are safe for concurrent use.
//
// Only what the caller reports as failed counts: a slow or saturated backend is not an
// outlier, that signal belongs to spillover.
type Outliers struct {
	ejector   Ejector
	threshold atomic.Int64  // read on the request path
	base, max time.Duration // guarded by mu once the Outliers is in use (SetPolicy)
	percent   int
	now       func() time.Time
	afterFunc func(time.Duration, func()) func() bool
	log       *zap.Logger

	// backends are the members, by site and address: a map built by SetMembers and never
	// changed after it is published, read without a lock by Recovered and Ejected (the
	// request path, Observe, reads the Peer it is given instead).
	backends atomic.Pointer[map[backendKey]*outlierBackend]
	closed   atomic.Bool

	mu    sync.Mutex // the control path: ejections, returns, membership
	sites map[string]*outlierSite
}

type backendKey struct{ site, addr string }

// outlierSite is the panic guard's view of one site. Guarded by Outliers.mu.
type outlierSite struct {
	members     int  // distinct backends listed by the last SetMembers
	ejected     int  // of them, ejected now
	guardWarned bool // a refusal was logged since the last ejection or return
	// full is set when the panic guard refuses an ejection and cleared when that may have
	// changed (an ejection, a return, new members): while it is set, failures past the
	// threshold are not worth the lock. Written under Outliers.mu, read anywhere.
	full atomic.Bool
}

// outlierBackend is the state of one backend, shared by every membership snapshot that lists it.
type outlierBackend struct {
	key  backendKey
	site *outlierSite
	// peer holds the count of failures in a row, the request path's only write.
	// Guarded by Outliers.mu (a reload may bring a new Peer for the same backend).
	peer Peer

	ejected atomic.Bool // written under Outliers.mu, read anywhere

	// Guarded by Outliers.mu.
	n          int         // ejections counted towards the next duration (after decay)
	ejectedAt  time.Time   // start of the current ejection
	returnedAt time.Time   // end of the last ejection; zero if never ejected
	stop       func() bool // cancels the pending return timer, while ejected
	epoch      uint64      // bumped on every ejection and return, so a stale timer does nothing
	gone       bool        // dropped by SetMembers
}

// NewOutliers returns a detector with no members: call SetMembers before Observe counts
// anything. It panics if opts.Ejector is nil.
func NewOutliers(opts OutlierOptions) *Outliers {
	if opts.Ejector == nil {
		panic("health: OutlierOptions.Ejector is nil")
	}
	o := &Outliers{
		ejector:   opts.Ejector,
		now:       opts.Now,
		afterFunc: opts.AfterFunc,
		log:       opts.Log,
		sites:     map[string]*outlierSite{},
	}
	o.setPolicy(opts)
	if o.now == nil {
		o.now = time.Now
	}
	if o.afterFunc == nil {
		o.afterFunc = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
	if o.log == nil {
		o.log = zap.NewNop()
	}
	o.backends.Store(&map[backendKey]*outlierBackend{})
	return o
}

// SetPolicy changes the thresholds and durations (a reload) to those of opts; the other
// fields of opts are ignored. Backends keep their state: ejections under way run their
// course, and counts of failures in a row carry on against the new threshold.
func (o *Outliers) SetPolicy(opts OutlierOptions) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.setPolicy(opts)
}

func (o *Outliers) setPolicy(opts OutlierOptions) {
	threshold := int64(opts.ConsecutiveFailures)
	if threshold <= 0 {
		threshold = DefaultConsecutiveFailures
	}
	o.threshold.Store(threshold)
	o.base, o.max, o.percent = opts.BaseEjection, opts.MaxEjection, opts.MaxEjectionPercent
	if o.base <= 0 {
		o.base = DefaultBaseEjection
	}
	if o.max <= 0 {
		o.max = DefaultMaxEjection
	}
	o.max = max(o.max, o.base)
	if o.percent <= 0 {
		o.percent = DefaultMaxEjectionPercent
	}
	o.percent = min(o.percent, 100)
	for _, s := range o.sites { // the guard's limit follows the percentage
		s.full.Store(false)
	}
}

// SetMembers declares the backends (each Peer names its site and address) for the panic
// guard; call it at start, on every reload and when discovery changes a site's members.
// Backends listed before keep their state; one listed anew starts with no failures counted
// (what it counted while not a member is not a run). Backends no longer listed are
// forgotten: if ejected, their timer is stopped and they are returned through the Ejector
// first, so nothing stays ejected forever. If a site shrinks below what its current
// ejections allow, those ejections still run their course; the guard only refuses new ones.
func (o *Outliers) SetMembers(members []Peer) {
	var events []outlierEvent
	o.mu.Lock()
	if o.closed.Load() {
		o.mu.Unlock()
		return
	}
	old := *o.backends.Load()
	next := make(map[backendKey]*outlierBackend, len(members))
	sites := make(map[string]*outlierSite)
	for _, p := range members {
		site, addr := p.SiteAddr()
		s := sites[site]
		if s == nil {
			if s = o.sites[site]; s == nil {
				s = &outlierSite{}
			}
			s.members = 0
			s.full.Store(false) // the guard's limit follows the members
			sites[site] = s
		}
		k := backendKey{site, addr}
		if _, dup := next[k]; dup {
			continue
		}
		b := old[k]
		switch {
		case b == nil:
			b = &outlierBackend{key: k, site: s, peer: p}
			p.FailuresInARow().Store(0)
		case b.peer != p:
			// The same backend under a new Peer (its long-lived state was made afresh):
			// its run of failures carries on.
			p.FailuresInARow().Store(b.peer.FailuresInARow().Load())
			b.peer = p
		}
		next[k] = b
		s.members++
	}
	for k, b := range old {
		if _, kept := next[k]; kept {
			continue
		}
		b.gone = true
		if b.ejected.Load() {
			events = append(events, o.restoreLocked(b, "removed"))
		}
	}
	o.sites = sites
	o.backends.Store(&next)
	o.mu.Unlock()
	o.logAll(events)
}

// Observe records the outcome of one try on p: failed is true for connect errors, resets
// and timeouts (the caller decides; 5xx only when configured). It is called on the request
// path and records into p's own count of failures in a row: a success is an atomic load (a
// store only if failures were counted), with no lookup, no lock and no allocation; a
// failure takes the lock only once the threshold is reached. Outcomes for a backend that
// is not a member, or that is ejected (requests still in flight when it was), eject
// nothing; an ejected backend's count starts again from zero when it returns.
func (o *Outliers) Observe(p Peer, failed bool) {
	if o.closed.Load() {
		return
	}
	run := p.FailuresInARow()
	if !failed {
		// Load first: a healthy backend's counter is already zero, and not writing it
		// keeps its cache line shared between the cores serving it.
		if run.Load() != 0 {
			run.Store(0)
		}
		return
	}
	if run.Add(1) < o.threshold.Load() {
		return
	}
	o.eject(p)
}

// eject ejects p, which has just reached the threshold, unless the panic guard refuses.
// When it refuses, p keeps counting, and its next failure tries again.
func (o *Outliers) eject(p Peer) {
	site, addr := p.SiteAddr()
	k := backendKey{site, addr}
	// Without the lock first: a fast-failing backend that is ejected already, or that the
	// panic guard keeps in, fails on every request, and each would otherwise queue on o.mu.
	if b := (*o.backends.Load())[k]; b == nil || b.ejected.Load() || b.site.full.Load() {
		return
	}
	o.mu.Lock()
	b := (*o.backends.Load())[k]
	// Check again under the lock: a success may have reset the count, another goroutine
	// may have ejected b, a reload may have dropped it (or p is a Peer it replaced).
	if o.closed.Load() || b == nil || b.peer != p || b.gone || b.ejected.Load() ||
		p.FailuresInARow().Load() < o.threshold.Load() {
		o.mu.Unlock()
		return
	}
	s := b.site
	if limit := o.guardLimit(s.members); s.ejected+1 > limit {
		warn := !s.guardWarned
		s.guardWarned = true
		s.full.Store(true)
		ejected, members := s.ejected, s.members
		o.mu.Unlock()
		if warn {
			o.log.Warn("panic guard: not ejecting backend",
				zap.String("site", b.key.site), zap.String("backend", b.key.addr),
				zap.Int("ejected", ejected), zap.Int("members", members),
				zap.Int("max_ejection_percent", o.percent))
		}
		return
	}
	now := o.now()
	if b.n > 0 && !b.returnedAt.IsZero() {
		if steps := now.Sub(b.returnedAt) / o.max; steps > 0 {
			b.n = max(0, b.n-int(min(steps, time.Duration(b.n))))
		}
	}
	b.n++
	d := o.ejectionFor(b.n)
	b.ejected.Store(true)
	b.ejectedAt = now
	b.epoch++
	s.ejected++
	s.guardWarned = false
	s.full.Store(false)
	o.ejector.SetEjected(b.key.site, b.key.addr, true)
	epoch := b.epoch
	b.stop = o.afterFunc(d, func() { o.expire(b, epoch) })
	n, failures := b.n, p.FailuresInARow().Load()
	o.mu.Unlock()
	o.log.Info("backend ejected",
		zap.String("site", b.key.site), zap.String("backend", b.key.addr),
		zap.Duration("duration", d), zap.Int("n", n), zap.Int64("failures", failures))
}

// guardLimit is the most backends of a site with the given number of members that may be
// ejected at once: MaxEjectionPercent of them rounded down, but at least one, as Envoy does.
// A one-backend site that refuses every connection is better ejected (its share goes to the
// other sites) than kept in rotation; with 2 backends at 50% one may go, with 3 still one.
func (o *Outliers) guardLimit(members int) int {
	return max(1, members*o.percent/100)
}

// ejectionFor returns how long the n-th ejection lasts: n × BaseEjection, capped at MaxEjection.
func (o *Outliers) ejectionFor(n int) time.Duration {
	if time.Duration(n) > o.max/o.base {
		return o.max
	}
	return min(time.Duration(n)*o.base, o.max)
}

// expire is the return timer of the ejection numbered epoch.
func (o *Outliers) expire(b *outlierBackend, epoch uint64) {
	o.mu.Lock()
	if o.closed.Load() || b.gone || !b.ejected.Load() || b.epoch != epoch {
		o.mu.Unlock()
		return
	}
	ev := o.restoreLocked(b, "expired")
	o.mu.Unlock()
	o.logAll([]outlierEvent{ev})
}

// Recovered tells the detector that an active health probe sees the backend healthy: a
// backend in its first ejection returns at once and its timer is stopped. One that failed
// again after returning (its ejection count, after decay, is 2 or more) serves its longer
// ejection whatever its probes say: its health endpoint passing while its requests fail is
// exactly what a black hole looks like, and returning it on every passing probe let it
// flap back in every probe interval. An early return keeps the count, so the next ejection
// is longer still. It takes no lock unless the backend is ejected, so it may be called on
// every passing probe.
func (o *Outliers) Recovered(site, addr string) {
	if o.closed.Load() {
		return
	}
	b := (*o.backends.Load())[backendKey{site, addr}]
	if b == nil || !b.ejected.Load() {
		return
	}
	o.mu.Lock()
	if o.closed.Load() || b.gone || !b.ejected.Load() || b.n > 1 {
		o.mu.Unlock()
		return
	}
	ev := o.restoreLocked(b, "recovered")
	o.mu.Unlock()
	o.logAll([]outlierEvent{ev})
}

// Close stops every pending return timer. After Close, Observe, Recovered and SetMembers do
// nothing, and backends ejected at that moment stay ejected: Close is for shutdown, when the
// Ejector's owner goes too.
func (o *Outliers) Close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed.Swap(true) {
		return
	}
	for _, b := range *o.backends.Load() {
		if b.stop != nil {
			b.stop()
			b.stop = nil
		}
	}
}

// Ejected reports whether the backend is currently ejected (for tests and the state API).
// It takes no lock.
func (o *Outliers) Ejected(site, addr string) bool {
	b := (*o.backends.Load())[backendKey{site, addr}]
	return b != nil && b.ejected.Load()
}

// outlierEvent is a return to log once the lock is released.
type outlierEvent struct {
	key    backendKey
	out    time.Duration
	n      int
	reason string
}

// restoreLocked returns the ejected backend b to rotation; o.mu must be held.
func (o *Outliers) restoreLocked(b *outlierBackend, reason string) outlierEvent {
	now := o.now()
	if b.stop != nil {
		b.stop()
		b.stop = nil
	}
	b.ejected.Store(false)
	b.peer.FailuresInARow().Store(0)
	b.returnedAt = now
	b.epoch++
	b.site.ejected--
	b.site.guardWarned = false
	b.site.full.Store(false)
	o.ejector.SetEjected(b.key.site, b.key.addr, false)
	return outlierEvent{key: b.key, out: now.Sub(b.ejectedAt), n: b.n, reason: reason}
}

func (o *Outliers) logAll(events []outlierEvent) {
	for _, ev := range events {
		o.log.Info("backend returned",
			zap.String("site", ev.key.site), zap.String("backend", ev.key.addr),
			zap.Duration("duration", ev.out), zap.Int("n", ev.n), zap.String("reason", ev.reason))
	}
}
