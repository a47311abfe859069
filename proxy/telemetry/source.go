package telemetry

import "github.com/spillway/spillway/proxy"

// Source is what Metrics reads when Prometheus scrapes. Snapshot must not wait on a reload
// or an operator's change: a scrape must not stall behind them.
type Source interface {
	Snapshot() Snapshot
}

// Snapshot is what a scrape exports besides the per-request counts.
type Snapshot struct {
	Sites   []SiteSnapshot    // in the config's order
	Waiting int               // requests waiting for a free slot
	Spills  []SpillSnapshot   // every pair of sites and reason, zeros included
	Sheds   map[string]uint64 // by reason, zeros included
	Retries []RetrySnapshot   // every reason, zeros included (none before the Handler exists)
	Reloads ReloadSnapshot
}

// SiteSnapshot is one site.
type SiteSnapshot struct {
	Name     string
	Inflight int64
	Limit    int64
	Weight   float64 // in effect: an override or ramp included, 0 when drained
	Share    float64 // of the answers over the last 10 seconds
	// Discovery is set when the site's members come from discovery; DiscoveryFailures
	// counts its failed lookups.
	Discovery         bool
	DiscoveryFailures uint64
	Backends          []BackendSnapshot
}

// BackendSnapshot is one backend of a site.
type BackendSnapshot struct {
	Addr string
	Up   bool // takes requests: healthy and not ejected
}

// SpillSnapshot counts the requests that went to another site than the preferred one.
type SpillSnapshot struct {
	From, To, Reason string
	N                uint64
}

// RetrySnapshot counts the retries after a try failed for Reason.
type RetrySnapshot struct {
	Reason string
	N      uint64
}

// ReloadSnapshot counts the config reloads.
type ReloadSnapshot struct {
	OK, Failed uint64
}

// reloaderSource is a Reloader as a Source. It reads what the Reloader serves through
// Serving, the Registry's and the Handler's counters and the shares its Live counts, none
// of which waits on the Reloader's lock.
type reloaderSource struct{ r *proxy.Reloader }

// ReloaderSource is r as Metrics' Source. The shares are those of r's Live (0 without one).
func ReloaderSource(r *proxy.Reloader) Source { return reloaderSource{r} }

var _ Source = reloaderSource{}

// Snapshot implements Source.
func (s reloaderSource) Snapshot() Snapshot {
	var snap Snapshot
	reg := s.r.Registry()
	cur := s.r.Serving()
	if cur.Config != nil {
		snap.Sites = s.sites(cur)
	}
	snap.Waiting = reg.QueueLen()
	for _, c := range reg.Spills() {
		snap.Spills = append(snap.Spills, SpillSnapshot{From: c.From, To: c.To, Reason: c.Reason.String(), N: c.N})
	}
	snap.Sheds = map[string]uint64{}
	for reason, n := range reg.Sheds() {
		snap.Sheds[reason.String()] = n
	}
	if cur.Handler != nil {
		retries := cur.Handler.Retries()
		for _, reason := range proxy.RetryReasons() {
			snap.Retries = append(snap.Retries, RetrySnapshot{Reason: reason, N: retries[reason]})
		}
	}
	snap.Reloads.OK, snap.Reloads.Failed = s.r.Reloads()
	return snap
}

// sites are the sites of the config cur serves, as its Table reports them.
func (s reloaderSource) sites(cur proxy.Serving) []SiteSnapshot {
	names := make([]string, len(cur.Config.Sites))
	for i, site := range cur.Config.Sites {
		names[i] = site.Name
	}
	status := cur.Table.Status()
	out := make([]SiteSnapshot, 0, len(status))
	for _, st := range status {
		ss := SiteSnapshot{Name: st.Name, Inflight: st.Inflight, Limit: st.Limit, Weight: st.Weight,
			Backends: make([]BackendSnapshot, 0, len(st.Backends))}
		if st.Drained {
			ss.Weight = 0
		}
		if live := s.r.Live(); live != nil {
			_, ss.Share = live.Site(st.Name, names)
		}
		if site := cur.Config.Site(st.Name); site != nil && site.Discovery != nil {
			ss.Discovery = true
			ss.DiscoveryFailures = s.r.Registry().Site(st.Name).DiscoveryFailures().Load()
		}
		for _, b := range st.Backends {
			ss.Backends = append(ss.Backends, BackendSnapshot{Addr: b.Addr, Up: b.Up})
		}
		out = append(out, ss)
	}
	return out
}
