package proxy

import (
	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/balancer/discovery"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/health"
	"go.uber.org/zap"
)

// DiscoveredSite is a site whose backends discovery finds: what its Discoverer and its
// members' health checks need, compiled by Build. The runtime runs them (Table itself
// starts nothing) and hands each set of members found to Table.SetMembers.
type DiscoveredSite struct {
	Name   string
	Scheme string // of the members' URLs: https when the site has tls
	// Options are the Discoverer's, with Failures counting into the Registry; the runner
	// sets Known and Update.
	Options discovery.Options
	Health  *configs.Health // nil: no active checks
}

func newDiscoveredSite(s configs.Site, reg *balancer.Registry, log *zap.Logger) DiscoveredSite {
	d := s.Discovery
	scheme := "http"
	if s.TLS != nil {
		scheme = "https"
	}
	return DiscoveredSite{Name: s.Name, Scheme: scheme, Health: s.Health,
		Options: discovery.Options{Site: s.Name, DNS: d.DNS, File: d.File, Resolver: d.Resolver,
			Interval: d.Interval, Log: log.Named("discovery"), Failures: reg.Site(s.Name).DiscoveryFailures()}}
}

// Discovered lists the sites whose members discovery finds.
func (t *Table) Discovered() []DiscoveredSite { return t.discovered }

// Fresh reports whether t was built without a Previous: the process's first Table, whose
// first members found are its deployment, not newcomers to slow-start.
func (t *Table) Fresh() bool { return t.fresh }

// SiteMembers are the addresses of the backends of the site called name now (for a
// discovered site, what its last lookup found, or what the previous Table had).
func (t *Table) SiteMembers(name string) []string { return t.members(name) }

// Monitor is the active health checking of the configured backends, to be run for as long
// as t serves; nil when no site has health checks.
func (t *Table) Monitor() *health.Monitor { return t.monitor }

// MemberMonitor is the active health checking of one discovered member addr of site, with
// the site's checks h.
func (t *Table) MemberMonitor(site, addr string, h *configs.Health) *health.Monitor {
	return health.NewMonitor(t.monitorOptions([]health.Target{healthTarget(t.deps.Registry, site, addr, h)}))
}

// SetMembers makes addrs (URLs) the backends of the discovered site called site (see
// balancer.Balancer.SetMembers: new ones slow-start when joining, vanished ones drain), and
// tells passive health, unless t has been replaced (Retire), whose members it follows
// then. It returns the site's backends. Requests on a member that left finish on it.
func (t *Table) SetMembers(site string, addrs []string, joining bool) ([]*balancer.Backend, error) {
	t.membersMu.Lock()
	bs, err := t.bal.SetMembers(site, addrs, joining)
	if err == nil && !t.retired { // a replaced Table's must not undo the new one's
		if o, ok := t.deps.Outliers.(interface{ SetMembers([]health.Peer) }); ok {
			o.SetMembers(t.Members())
		}
	}
	t.membersMu.Unlock()
	if err != nil {
		return nil, err
	}
	return bs, nil
}
