// Package proxy is Spillway's data plane: the Handler that forwards each request to the
// backend the balancer picks, the immutable Table it reads, and Build, the one place a
// configs.Config becomes runtime state.
package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"

	"go.uber.org/zap"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/health"
)

// The Registry takes active and passive health reports for the backends it tracks.
var (
	_ health.Sink    = (*balancer.Registry)(nil)
	_ health.Ejector = (*balancer.Registry)(nil)
	_ Observer       = (*health.Outliers)(nil)
)

// Observer learns how each try with a backend ended: failed is true for a connect error,
// reset, timeout or 502 from upstream (and any 5xx when outlier.on_5xx is set). It is
// called on the request path and must not block. health.Outliers is one.
type Observer interface {
	Observe(site, addr string, failed bool)
}

// Table is one compiled config: the balancer's Picker over the sites, and the forwarders
// and transports for each backend. It is immutable once built; a Handler swaps whole Tables,
// and a request keeps the Table it started with to the end.
type Table struct {
	picker   *balancer.Picker
	sites    []siteRoute
	retry    retryPolicy
	outliers Observer // nil: no passive health
	on5xx    bool     // a 5xx answer counts as a failure for passive health
	monitor  *health.Monitor
	targets  []health.Target // what monitor watches
	tunnels  tunnelLimits    // WebSocket idle and lifetime limits
}

type siteRoute struct {
	name      string
	transport *http.Transport
	// backends is in the order of the site's Options, so a Lease's indexes find the forwarder.
	backends []forwarder
}

// forwarder sends a request to one backend. It is the seam between the Handler's policy and
// the mechanism that moves bytes; today httputil.ReverseProxy.
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
}

// Build compiles cfg, which must have passed configs.Validate, into a Table. State for
// backends already in d.Registry (in-flight, health, the split's position) carries over.
// Build starts no goroutines and opens no sockets; a Table that is never served needs only
// Close.
func Build(cfg *configs.Config, d Deps) (*Table, error) {
	if d.Registry == nil {
		return nil, errors.New("proxy.Build: nil Registry")
	}
	if err := CheckSupported(cfg); err != nil {
		return nil, err
	}
	if d.Log == nil {
		d.Log = zap.NewNop()
	}
	if d.Buffers == nil {
		d.Buffers = NewBufferPool()
	}
	r := cfg.Retries
	t := &Table{
		sites: make([]siteRoute, len(cfg.Sites)),
		retry: retryPolicy{attempts: r.Attempts, idempotencyHeader: r.IdempotencyHeader,
			maxBody: r.MaxBodyBytes, budget: newRetryBudget(r.Budget, r.MinPerSecond, nil)},
		on5xx: cfg.Outlier.On5xx,
	}
	if cfg.Outlier.ConsecutiveFailures > 0 {
		t.outliers = d.Outliers
	}
	t.tunnels = tunnelLimits{idle: cfg.WebSocket.Idle, lifetime: cfg.WebSocket.MaxLifetime}
	opts := balancer.Options{Sites: make([]balancer.SiteOptions, len(cfg.Sites))}
	var targets []health.Target
	var fileErrs configs.Errors // every site's unreadable TLS files, in one list
	for i, s := range cfg.Sites {
		opts.Sites[i] = balancer.SiteOptions{Name: s.Name, Weight: s.Weight, Backends: s.Backends}
		tr, err := newSiteTransport(cfg, i, d.Log)
		if errs, ok := err.(configs.Errors); ok {
			fileErrs = append(fileErrs, errs...)
			continue
		} else if err != nil {
			return nil, err
		}
		route := siteRoute{name: s.Name, transport: tr}
		for _, raw := range s.Backends {
			target, err := url.Parse(raw)
			if err != nil {
				return nil, fmt.Errorf("site %s: backend %q: %w", s.Name, raw, err)
			}
			route.backends = append(route.backends, newForwarder(target, tr, t, d))
			if s.Health != nil {
				ht := healthTarget(d.Registry, s.Name, raw, s.Health)
				ht.Check.TLS = tr.TLSClientConfig // probes present the site's CA and client certificate
				targets = append(targets, ht)
			} else if b, known := d.Registry.Lookup(balancer.BackendID{Site: s.Name, Addr: raw}); known && !b.Healthy() {
				// Its site no longer has health checks: nothing would ever bring it back.
				d.Registry.SetUp(s.Name, raw, true)
			}
		}
		t.sites[i] = route
	}
	if len(fileErrs) > 0 {
		return nil, fileErrs
	}
	p, err := balancer.NewPicker(d.Registry, opts)
	if err != nil {
		return nil, err
	}
	t.picker = p
	t.targets = targets
	if len(targets) > 0 {
		opts := health.MonitorOptions{Sink: d.Registry, Targets: targets, Log: d.Log.Named("health")}
		if r, ok := d.Outliers.(interface{ Recovered(site, addr string) }); ok {
			opts.Passed = r.Recovered // a backend probes see healthy is not kept ejected
		}
		t.monitor = health.NewMonitor(opts)
	}
	return t, nil
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

// Monitor returns the Table's active health checks, not yet running, or nil when no site
// has any. The caller runs it for as long as it serves the Table: go m.Run(ctx).
func (t *Table) Monitor() *health.Monitor { return t.monitor }

// modifyResponse is every forwarder's ModifyResponse (see also modifyResponse in
// headers.go). A 502 that the backend itself answered becomes an error for an idempotent
// request while retries are on, so that the Handler can try elsewhere.
func (t *Table) modifyResponse(res *http.Response) error {
	modifyResponse(res)
	t.tunnels.wrap(res)
	markEmptyBody(res)
	if res.StatusCode == http.StatusBadGateway && t.retry.attempts > 1 && t.retry.idempotent(res.Request) {
		return errUpstream502
	}
	return nil
}

// observe tells passive health how a try ended; reason is "" for a try that was answered.
// The client's own failures say nothing about the backend.
func (t *Table) observe(ex *exchange, reason string) {
	if t.outliers == nil || ex.lease.Backend == nil || reason == reasonClientGone || reason == reasonClientBody {
		return
	}
	id := ex.lease.Backend.ID
	t.outliers.Observe(id.Site, id.Addr, backendFailed(reason) || (t.on5xx && ex.rw.status >= 500))
}

// Members lists each site's backends, for health.Outliers.SetMembers.
func (t *Table) Members() map[string][]string {
	m := make(map[string][]string, len(t.sites))
	for _, b := range t.picker.Backends() {
		m[b.ID.Site] = append(m[b.ID.Site], b.ID.Addr)
	}
	return m
}

// Close releases the Table's idle backend connections and stops health changes from
// reaching it. Requests still using the Table finish normally; their connections close when
// they are done.
func (t *Table) Close() {
	t.picker.Close()
	for _, s := range t.sites {
		s.transport.CloseIdleConnections()
	}
}

// Sites lists the long-lived state of the Table's sites, in config order.
func (t *Table) Sites() []*balancer.Site { return t.picker.Sites() }

// CheckSupported refuses config keys whose features this version does not have yet:
// accepting them and doing nothing would let an operator believe, say, that health checks
// run. Build runs it; pass it to configs.Load too, so that these problems are reported with
// all the others in one list. It is a configs.Check.
func CheckSupported(cfg *configs.Config) error {
	var errs configs.Errors
	refuse := func(set bool, path, what string) {
		if set {
			errs = append(errs, cfg.Errorf(path, "%s is not available in this version of Spillway yet; remove the key (README: Roadmap)", what))
		}
	}
	refuse(cfg.Has("admin"), "admin", "the admin API")
	refuse(cfg.Has("spillover"), "spillover", "spillover")
	refuse(cfg.Has("affinity") || cfg.Affinity != (configs.Affinity{}), "affinity", "session affinity")
	for i, s := range cfg.Sites {
		p := fmt.Sprintf("sites[%d]", i)
		refuse(cfg.Has(p+".elastic") || s.Elastic, p+".elastic", "an elastic (spillover) site")
		refuse(cfg.Has(p+".discovery") || s.Discovery != nil, p+".discovery", "discovery")
		refuse(cfg.Has(p+".max_inflight") || s.MaxInflight != 0, p+".max_inflight", "a per-backend limit")
		refuse(cfg.Has(p+".slow_start") || s.SlowStart != 0, p+".slow_start", "slow start")
	}
	if len(errs) > 0 {
		errs.Sort()
		return errs
	}
	return nil
}

// NewOutliers returns the passive health detector for cfg's outlier section, ejecting
// through reg. Make it once, with the Registry, and pass it to every Build in Deps.Outliers;
// call its SetMembers with each new Table's Members, and Close it when done.
func NewOutliers(cfg *configs.Config, reg *balancer.Registry, log *zap.Logger) *health.Outliers {
	o := cfg.Outlier
	if log == nil {
		log = zap.NewNop()
	}
	return health.NewOutliers(health.OutlierOptions{
		Ejector:             reg,
		ConsecutiveFailures: o.ConsecutiveFailures,
		BaseEjection:        o.BaseEjection,
		MaxEjection:         o.MaxEjection,
		MaxEjectionPercent:  o.MaxEjectionPercent,
		Log:                 log.Named("outlier"),
	})
}
