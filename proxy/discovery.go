package proxy

import (
	"context"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/balancer/discovery"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/health"
)

// discoveredSite is a site whose backends discovery finds. Its Discoverer and health checks
// run in Table.Run; Build only records what they need.
type discoveredSite struct {
	index  int
	name   string
	scheme string // of the members' URLs: https when the site has tls
	opts   discovery.Options
	health *configs.Health // nil: no active checks
}

func newDiscoveredSite(i int, s configs.Site, log *zap.Logger) discoveredSite {
	d := s.Discovery
	scheme := "http"
	if s.TLS != nil {
		scheme = "https"
	}
	return discoveredSite{index: i, name: s.Name, scheme: scheme, health: s.Health,
		opts: discovery.Options{Site: s.Name, DNS: d.DNS, File: d.File, Resolver: d.Resolver,
			Interval: d.Interval, Log: log.Named("discovery")}}
}

// Run does the Table's background work until ctx ends: the active health checks of its
// configured backends, and for each site with discovery, finding its members and checking
// their health. It returns once all of it has stopped. Call it once, for as long as the
// Table serves.
func (t *Table) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if t.monitor != nil {
		wg.Go(func() { t.monitor.Run(ctx) })
	}
	for i := range t.discovered {
		d := &t.discovered[i]
		wg.Go(func() { t.runDiscovery(ctx, d) })
	}
	wg.Wait()
}

// runDiscovery keeps site d's members up to date: each new set from its Discoverer becomes
// the Balancer's members (new ones slow-start, vanished ones drain), and the site's health
// checks restart over the new set. Until the first lookup answers, the site has no members
// and its share of the split goes to the others.
func (t *Table) runDiscovery(ctx context.Context, d *discoveredSite) {
	updates := make(chan []string, 1)
	opts := d.opts
	// What the previous config's discovery found (the site's members now, carried over):
	// the first lookup logs a change only where it differs.
	for _, m := range t.members(d.name) {
		opts.Known = append(opts.Known, strings.TrimPrefix(m, d.scheme+"://"))
	}
	opts.Failures = t.deps.Registry.Site(d.name).DiscoveryFailures()
	opts.Update = func(members []string) {
		select { // only the latest set matters
		case <-updates:
		default:
		}
		updates <- members
	}
	disc, err := discovery.New(opts)
	if err != nil { // configs.Validate checks what New does; keep the proxy up regardless
		t.deps.Log.Error("discovery not started", zap.String("site", d.name), zap.Error(err))
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { disc.Run(ctx) })

	checks := map[string]*memberCheck{} // by address: each member's health checks
	defer func() {
		for _, c := range checks {
			c.stop()
		}
	}()
	// Members carried over from the previous config are checked from the start, not from
	// the first lookup that answers (DNS may be failing just then).
	t.syncChecks(ctx, d, t.members(d.name), checks)
	// The first set a proxy that just started finds is its deployment, not newcomers.
	joining := !t.fresh
	for {
		select {
		case <-ctx.Done():
			return
		case members := <-updates:
			t.setMembers(ctx, d, members, joining, checks)
			joining = true
		}
	}
}

// memberCheck is the active health check of one discovered member, which runs for as long
// as the member is listed, whatever else joins or leaves.
type memberCheck struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (c *memberCheck) stop() { c.cancel(); <-c.done }

// setMembers makes members (host:port) the backends of site d (see balancer.Balancer.SetMembers), and
// starts the health checks of members that joined and stops those of members that left.
func (t *Table) setMembers(ctx context.Context, d *discoveredSite, members []string, joining bool, checks map[string]*memberCheck) {
	addrs := make([]string, len(members))
	for i, m := range members {
		addrs[i] = d.scheme + "://" + m
	}
	t.membersMu.Lock()
	bs, err := t.bal.SetMembers(d.name, addrs, joining)
	if err == nil && !t.retired { // a replaced Table's must not undo the new one's
		if o, ok := t.deps.Outliers.(interface{ SetMembers([]health.Peer) }); ok {
			o.SetMembers(t.Members())
		}
	}
	t.membersMu.Unlock()
	if err != nil {
		t.deps.Log.Error("discovered members refused", zap.String("site", d.name), zap.Error(err))
		return
	}
	// Forwarders of members that left go; requests still using one keep it until they end.
	keep := make(map[*balancer.Backend]bool, len(bs))
	for _, b := range bs {
		keep[b] = true
	}
	route := &t.sites[d.index]
	route.forwarders.Range(func(k, _ any) bool {
		if !keep[k.(*balancer.Backend)] {
			route.forwarders.Delete(k)
		}
		return true
	})
	t.syncChecks(ctx, d, addrs, checks)
}

// syncChecks runs the health checks of exactly the members addrs of site d: it starts those
// of members that have none and stops those of members no longer listed.
func (t *Table) syncChecks(ctx context.Context, d *discoveredSite, addrs []string, checks map[string]*memberCheck) {
	if d.health == nil {
		return
	}
	listed := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		listed[a] = true
		if checks[a] != nil {
			continue
		}
		m := health.NewMonitor(t.monitorOptions([]health.Target{healthTarget(t.deps.Registry, d.name, a, d.health)}))
		cctx, cancel := context.WithCancel(ctx)
		c := &memberCheck{cancel: cancel, done: make(chan struct{})}
		go func() { defer close(c.done); m.Run(cctx) }()
		checks[a] = c
	}
	for a, c := range checks {
		if !listed[a] {
			c.stop()
			delete(checks, a)
		}
	}
}
