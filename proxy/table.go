// Package proxy is Spillway's data plane: the Handler that forwards each request to the
// backend the balancer picks (retries, timeouts, headers, WebSocket, passive health), the
// Table it reads, and Build, the one place a configs.Config becomes a Table. A Table
// starts nothing: package runtime runs its health checks and discovery, swaps Tables on
// reload and applies operators' changes through Table.Balancer.
package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/health"
)

// The Registry takes active and passive health reports for the backends it tracks, and
// each of its Backends keeps passive health's count for itself.
var (
	_ health.Sink    = (*balancer.Registry)(nil)
	_ health.Ejector = (*balancer.Registry)(nil)
	_ health.Peer    = (*balancer.Backend)(nil)
	_ Observer       = (*health.Outliers)(nil)
)

// Observer learns how each try with a backend ended: failed is true for a connect error,
// reset, timeout or 502 from upstream (and any 5xx when outlier.on_5xx is set). It is
// called on the request path, with the try's backend, and must not block. health.Outliers
// is one.
type Observer interface {
	Observe(b health.Peer, failed bool)
}

// Table is one compiled config: the Balancer over the sites, and each site's transport and
// forwarder. What requests read of it does not change once it is built: a Handler swaps
// whole Tables, and a request keeps the Table it started with to the end. Changes within a
// config's life — discovered members, operators' weights and drains, health — go to the
// Balancer (its control object), which builds a new immutable Picker for requests to read.
// A Table starts no goroutine and keeps nothing per member; package runtime runs its health
// checks and discovery.
type Table struct {
	bal      *balancer.Balancer
	sites    []siteRoute
	retry    retryPolicy
	outliers Observer // nil: no passive health
	on5xx    bool     // a 5xx answer counts as a failure for passive health
	monitor  *health.Monitor
	targets  []health.Target // what monitor watches
	// affinityCookie or affinityHeader names the session key; both "" without affinity.
	affinityCookie, affinityHeader string
	deps                           Deps
	discovered                     []DiscoveredSite // sites whose members discovery finds
	membersMu                      sync.Mutex       // serialises member changes (SetMembers); guards retired
	// retired is set once a new Table replaces t (Retire): t's discovery may still report
	// until its generation stops, but passive health follows the new Table's members.
	retired bool
	// retirePrev retires Deps.Previous when t is activated; it is dropped then, so that t
	// does not keep its predecessor alive.
	retirePrev     func()
	cfg            *configs.Config
	inherited      []*siteRoute // routes of Deps.Previous whose transport this Table took
	tookOver       atomic.Bool  // Activate was called
	fresh          bool         // built without Deps.Previous: the process's first
	tunnels        tunnelLimits // WebSocket idle and lifetime limits
	headers        headerPolicy
	responseHeader time.Duration // timeouts.response_header: a request's wait, retries included
	bodyIdle       time.Duration // timeouts.body_idle
	// unhealthy are backends down by active health in a site that has no health checks in
	// this config: Activate brings them up.
	unhealthy []balancer.BackendID
}

// Balancer is the control object t picks with: the runtime sets operators' weights and
// drains on it (the Picker that requests read is rebuilt on each change).
func (t *Table) Balancer() *balancer.Balancer { return t.bal }

// Retire marks t as replaced: its discovery no longer changes passive health's members.
// Call it before giving passive health the new Table's members; a change of t's members
// under way finishes first.
func (t *Table) Retire() {
	t.membersMu.Lock()
	t.retired = true
	t.membersMu.Unlock()
}

// Activate makes t the Table being served, replacing Deps.Previous (if any). Call it when
// t is swapped in, before closing Previous: t takes over the transports it shares with
// Previous (Previous's Close then leaves their connections to t), and backends that this
// config no longer health-checks come up. Build itself changes no running state, so that a
// Table that is built and then dropped (a refused reload) leaves none behind.
func (t *Table) Activate() {
	t.tookOver.Store(true)
	if t.retirePrev != nil {
		t.retirePrev()
		t.retirePrev = nil
	}
	for _, prev := range t.inherited {
		prev.handedOver.Store(true)
	}
	t.inherited = nil // the routes of the Table replaced: nothing here may keep it alive
	for _, id := range t.unhealthy {
		t.deps.Registry.SetUp(id.Site, id.Addr, true)
	}
	t.bal.MakeCurrent()
}

// route returns the route of the site called name, or nil (also for a nil Table).
func (t *Table) route(name string) *siteRoute {
	if t == nil {
		return nil
	}
	for i := range t.sites {
		if t.sites[i].name == name {
			return &t.sites[i]
		}
	}
	return nil
}

// members lists the current backend addresses of the site called name.
func (t *Table) members(name string) []string {
	var out []string
	for _, b := range t.bal.Backends() {
		if b.ID.Site == name {
			out = append(out, b.ID.Addr)
		}
	}
	return out
}

// sameConnections reports whether site name connects to its backends the same way under
// both configs, so that a new Table may keep the old one's transport and its connections.
func sameConnections(a, b *configs.Config, name string) bool {
	sa, sb := a.Site(name), b.Site(name)
	// A site with TLS gets a new transport: its certificate files may have been renewed.
	ta, tb := a.Timeouts, b.Timeouts
	return sa != nil && sb != nil && sa.Protocol == sb.Protocol && sa.TLS == nil && sb.TLS == nil &&
		ta.Connect == tb.Connect && ta.ResponseHeader == tb.ResponseHeader && ta.Idle == tb.Idle
}

type siteRoute struct {
	name      string
	transport backendTransport
	// shared is set when the transport came from Deps.Previous; handedOver when a later
	// Table took it over (Activate). Close leaves the connections of a transport alone
	// unless this Table is the one that owns it.
	shared     bool
	handedOver atomic.Bool
	// proxy forwards the site's tries: to the backend of the try's lease (exchange), so
	// one serves every member, present or departed, and the Table keeps nothing per member.
	proxy forwarder
}

// forwarder sends a try to its backend. It is the seam between the Handler's policy and the
// mechanism that moves bytes; today httputil.ReverseProxy.
type forwarder interface {
	ServeHTTP(http.ResponseWriter, *http.Request)
}

// Deps are what Build needs besides the config: long-lived state and shared services.
type Deps struct {
	// Registry holds per-backend state across Tables; required.
	Registry *balancer.Registry
	// Log receives one line per failed request; nil means no logging.
	Log *zap.Logger
	// Buffers is shared by every forwarder for copying bodies; nil means a new pool.
	Buffers httputil.BufferPool
	// Outliers learns every try's outcome (passive health); nil means none. It should live
	// as long as the Registry, so that ejections survive new Tables.
	Outliers Observer
	// Previous is the Table this one replaces (a reload), or nil. The new Table takes over
	// what should not restart with a new config: a site's transport and its pool of
	// keep-alive connections (when the site's connection settings are unchanged), the
	// members discovery found (until its first new lookup), and the retry budget's counts.
	// Previous stays usable by the requests that have it.
	Previous *Table
}

// Build compiles cfg, which must have passed configs.Validate, into a Table. State for
// backends already in d.Registry (in-flight, health, the split's position) carries over.
// Build starts no goroutines and opens no sockets; a Table that is never served needs only
// Close.
func Build(cfg *configs.Config, d Deps) (*Table, error) {
	if d.Registry == nil {
		return nil, errors.New("proxy.Build: nil Registry")
	}
	if d.Log == nil {
		d.Log = zap.NewNop()
	}
	if d.Buffers == nil {
		d.Buffers = NewBufferPool()
	}
	r := cfg.Retries
	fresh := d.Previous == nil
	var prevBudget *retryBudget
	if d.Previous != nil {
		prevBudget = d.Previous.retry.budget
	}
	t := &Table{
		cfg:   cfg,
		fresh: fresh,
		sites: make([]siteRoute, len(cfg.Sites)),
		retry: retryPolicy{attempts: r.Attempts, idempotencyHeader: r.IdempotencyHeader,
			maxBody: r.MaxBodyBytes, budget: newRetryBudget(r.Budget, r.MinPerSecond, nil, prevBudget)},
		on5xx:          cfg.Outlier.On5xx,
		affinityCookie: cfg.Affinity.Cookie,
		affinityHeader: cfg.Affinity.Header,
		deps:           d,
	}
	// Build reads d.Previous; the Table must not keep it, or every generation would keep
	// the one before it alive (retirePrev holds it only until Activate).
	t.deps.Previous = nil
	if d.Previous != nil {
		t.retirePrev = d.Previous.Retire
	}
	if cfg.Outlier.ConsecutiveFailures > 0 {
		t.outliers = d.Outliers
	}
	opts := balancer.Options{
		Sites:        make([]balancer.SiteOptions, len(cfg.Sites)),
		Resume:       cfg.Spillover.Resume,
		QueueSize:    cfg.Spillover.Queue.Size,
		QueueTimeout: cfg.Spillover.Queue.Timeout,
	}
	t.tunnels = tunnelLimits{idle: cfg.WebSocket.Idle, lifetime: cfg.WebSocket.MaxLifetime}
	t.headers = newHeaderPolicy(cfg.Headers)
	t.responseHeader, t.bodyIdle = cfg.Timeouts.ResponseHeader, cfg.Timeouts.BodyIdle
	var targets []health.Target
	var fileErrs configs.Errors
	for i := range cfg.Sites {
		so, siteTargets, err := t.buildSite(cfg, i, d)
		if errs, ok := err.(configs.Errors); ok {
			fileErrs = append(fileErrs, errs...) // every site's unreadable TLS files, in one list
			continue
		} else if err != nil {
			return nil, err
		}
		opts.Sites[i] = so
		targets = append(targets, siteTargets...)
	}
	if len(fileErrs) > 0 {
		return nil, fileErrs
	}
	bal, err := balancer.New(d.Registry, opts)
	if err != nil {
		return nil, err
	}
	t.bal = bal
	t.targets = targets
	if len(targets) > 0 {
		t.monitor = health.NewMonitor(t.monitorOptions(targets))
	}
	return t, nil
}

// buildSite compiles site i of cfg into t: its transport (the previous Table's, when its
// connection settings are unchanged), its discovery, and its health targets; it returns its
// balancer options and targets. An unreadable TLS file is a configs.Errors.
func (t *Table) buildSite(cfg *configs.Config, i int, d Deps) (so balancer.SiteOptions, targets []health.Target, err error) {
	s := cfg.Sites[i]
	so = balancer.SiteOptions{Name: s.Name, Weight: s.Weight, Backends: s.Backends,
		Elastic: s.Elastic, MaxInflight: s.MaxInflight, SlowStart: s.SlowStart}
	if a := s.Adaptive; a != nil {
		so.Adaptive = balancer.AdaptiveOptions{Floor: a.Floor, Cap: a.Cap, Initial: a.Initial}
	}
	if prev := d.Previous.route(s.Name); prev != nil && sameConnections(d.Previous.cfg, cfg, s.Name) {
		t.sites[i].transport = prev.transport
		t.sites[i].shared = true
		t.inherited = append(t.inherited, prev)
	} else {
		tr, err := newSiteTransport(cfg, i, d.Log)
		if err != nil {
			return so, nil, err
		}
		t.sites[i].transport = tr
	}
	t.sites[i].name = s.Name
	t.sites[i].proxy = newForwarder(t.sites[i].transport, t, d)
	if s.Discovery != nil {
		t.discovered = append(t.discovered, newDiscoveredSite(s, d.Registry, d.Log))
		if prev := d.Previous.route(s.Name); prev != nil && reflect.DeepEqual(d.Previous.cfg.Site(s.Name).Discovery, s.Discovery) {
			// Same discovery: start from what it found, not from an empty pool.
			so.Backends = d.Previous.members(s.Name)
		}
	}
	for _, raw := range s.Backends {
		if _, err := url.Parse(raw); err != nil {
			return so, nil, fmt.Errorf("site %s: backend %q: %w", s.Name, raw, err)
		}
		if s.Health != nil {
			ht := healthTarget(d.Registry, s.Name, raw, s.Health)
			ht.Check.TLS = transportTLS(t.sites[i].transport) // probes present the site's CA and client certificate
			targets = append(targets, ht)
		} else if b, known := d.Registry.Lookup(balancer.BackendID{Site: s.Name, Addr: raw}); known && !b.Healthy() {
			// Its site no longer has health checks: nothing would ever bring it back.
			// Only once this Table is the one served (Activate): a config that is
			// refused must not change the running one's state.
			t.unhealthy = append(t.unhealthy, balancer.BackendID{Site: s.Name, Addr: raw})
		}
	}
	return so, targets, nil
}

// monitorOptions are the options of a Monitor over targets, reporting to the Registry.
func (t *Table) monitorOptions(targets []health.Target) health.MonitorOptions {
	reg := t.deps.Registry
	opts := health.MonitorOptions{Sink: reg, Targets: targets, Log: t.deps.Log.Named("health"),
		// During a reload the old generation's Monitor may still change a backend after
		// this one took its state: the first confirming probe puts the Registry right.
		Current: func(site, addr string) bool {
			b, ok := reg.Lookup(balancer.BackendID{Site: site, Addr: addr})
			return !ok || b.Healthy()
		}}
	if r, ok := t.deps.Outliers.(interface{ Recovered(site, addr string) }); ok {
		opts.Passed = r.Recovered // a backend probes see healthy is not kept ejected
	}
	return opts
}

// healthTarget is the active health check of one backend. A backend the Registry already
// knows starts from the state it has there, so health survives a new Table; a new one from
// the configured initial state, which is set in the Registry at once.
func healthTarget(reg *balancer.Registry, site, addr string, h *configs.Health) health.Target {
	id := balancer.BackendID{Site: site, Addr: addr}
	up := h.Initial != "down"
	if b, known := reg.Lookup(id); known {
		up = b.Healthy()
	} else {
		reg.Backend(id)
		reg.SetUp(site, addr, up)
	}
	check := health.Check{Kind: h.Kind, Path: h.Path, Host: h.Host,
		Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall}
	if len(h.Expect) == 2 {
		check.Expect = [2]int{h.Expect[0], h.Expect[1]}
	}
	return health.Target{Site: site, Addr: addr, Up: up, Check: check}
}

// monitorTargets are the backends the Table's Monitor watches, with their starting state.
func (t *Table) monitorTargets() []health.Target { return t.targets }

// modifyResponse is every forwarder's ModifyResponse (see also modifyResponse in
// headers.go). A 502 that the backend itself answered becomes an error for an idempotent
// request while retries are on, so that the Handler can try elsewhere.
func (t *Table) modifyResponse(res *http.Response) error {
	modifyResponse(res)
	t.headers.addVia(res.Header, res.ProtoMajor, res.ProtoMinor)
	if ex := exchangeOf(res.Request); ex != nil {
		ex.clock.gotHeaders.Store(true)
		// ReverseProxy (FlushInterval 0) flushes a stream after every write itself: a body
		// of known length is the responseWriter's to flush.
		ex.rw.flushEach = res.ContentLength >= 0
		if ex.clock.idle > 0 && res.StatusCode != http.StatusSwitchingProtocols {
			// A tunnel's body is the connection itself, with limits of its own.
			ex.respBody = timedBody{ReadCloser: res.Body, c: &ex.clock}
			res.Body = &ex.respBody
		}
	}
	t.tunnels.wrap(res)
	markEmptyBody(res)
	if res.StatusCode == http.StatusBadGateway && t.retry.attempts > 1 && t.retry.idempotent(res.Request) {
		return errUpstream502
	}
	return nil
}

// observe tells passive health how a try ended; reason is reasonNone for a try that was
// answered.
// The client's own failures say nothing about the backend.
func (t *Table) observe(ex *exchange, reason failure) {
	if t.outliers == nil || ex.lease.Backend == nil || failures[reason].quiet {
		return
	}
	t.outliers.Observe(ex.lease.Backend, backendFailed(reason) || (t.on5xx && ex.rw.status >= 500))
}

// Members lists the backends of every site, for health.Outliers.SetMembers.
func (t *Table) Members() []health.Peer {
	bs := t.bal.Backends()
	m := make([]health.Peer, len(bs))
	for i, b := range bs {
		m[i] = b
	}
	return m
}

// Close releases the Table's idle backend connections and stops health changes from
// reaching it. Requests still using the Table finish normally; their connections close when
// they are done.
func (t *Table) Close() {
	t.bal.Close()
	for i := range t.sites {
		s := &t.sites[i]
		if !s.handedOver.Load() && (!s.shared || t.tookOver.Load()) {
			s.transport.CloseIdleConnections()
		}
	}
}

// Sites lists the long-lived state of the Table's sites, in config order.
func (t *Table) Sites() []*balancer.Site { return t.bal.Sites() }

// Status reports each site's capacity and its backends' state now, in config order.
func (t *Table) Status() []balancer.SiteStatus { return t.bal.Status() }

// affinityKey is the hash of the request's session key (affinity.cookie or .header), or 0
// when affinity is off or the request carries none.
func (t *Table) affinityKey(r *http.Request) uint64 {
	var v string
	switch {
	case t.affinityHeader != "":
		v = r.Header.Get(t.affinityHeader)
	case t.affinityCookie != "":
		if c, err := r.Cookie(t.affinityCookie); err == nil {
			v = c.Value
		}
	}
	if v == "" {
		return 0
	}
	if k := balancer.HashKey(v); k != 0 {
		return k
	}
	return 1 // 0 means "no key" to the balancer
}

// NewOutliers returns the passive health detector for cfg's outlier section, ejecting
// through reg. Make it once, with the Registry, and pass it to every Build in Deps.Outliers;
// call its SetMembers with each new Table's Members, and Close it when done.
func NewOutliers(cfg *configs.Config, reg *balancer.Registry, log *zap.Logger) *health.Outliers {
	if log == nil {
		log = zap.NewNop()
	}
	opts := OutlierOptions(cfg)
	opts.Ejector, opts.Log = reg, log.Named("outlier")
	return health.NewOutliers(opts)
}

// OutlierOptions are the passive health settings of cfg, as the detector takes them.
func OutlierOptions(cfg *configs.Config) health.OutlierOptions {
	o := cfg.Outlier
	return health.OutlierOptions{ConsecutiveFailures: o.ConsecutiveFailures, BaseEjection: o.BaseEjection,
		MaxEjection: o.MaxEjection, MaxEjectionPercent: o.MaxEjectionPercent}
}
