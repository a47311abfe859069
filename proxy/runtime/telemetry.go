package runtime

import (
	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/telemetry"
)

var _ telemetry.Source = (*Reloader)(nil)

// Snapshot is what the metrics read at scrape time (telemetry.Source): what r serves
// (through Serving), the Registry's and the proxy.Handler's counters and the shares its Live
// counts, none of which waits on r's lock, so a scrape never waits on a reload.
func (r *Reloader) Snapshot() telemetry.Snapshot {
	var snap telemetry.Snapshot
	reg := r.Registry()
	cur := r.Serving()
	if cur.Config != nil {
		snap.Sites = r.siteSnapshots(cur)
	}
	snap.Waiting = reg.QueueLen()
	for _, c := range reg.Spills() {
		snap.Spills = append(snap.Spills, telemetry.SpillSnapshot{From: c.From, To: c.To, Reason: c.Reason.String(), N: c.N})
	}
	snap.Sheds = map[string]uint64{}
	for reason, n := range reg.Sheds() {
		snap.Sheds[reason.String()] = n
	}
	if cur.Handler != nil {
		retries := cur.Handler.Retries()
		for _, reason := range proxy.RetryReasons() {
			snap.Retries = append(snap.Retries, telemetry.RetrySnapshot{Reason: reason, N: retries[reason]})
		}
	}
	snap.Reloads.OK, snap.Reloads.Failed = r.Reloads()
	return snap
}

// siteSnapshots are the sites of the config cur serves, as its proxy.Table reports them.
func (r *Reloader) siteSnapshots(cur Serving) []telemetry.SiteSnapshot {
	names := make([]string, len(cur.Config.Sites))
	for i, site := range cur.Config.Sites {
		names[i] = site.Name
	}
	status := cur.Table.Status()
	out := make([]telemetry.SiteSnapshot, 0, len(status))
	for _, st := range status {
		ss := telemetry.SiteSnapshot{Name: st.Name, Inflight: st.Inflight, Limit: st.Limit, Weight: st.Weight,
			Backends: make([]telemetry.BackendSnapshot, 0, len(st.Backends))}
		if st.Drained {
			ss.Weight = 0
		}
		if live := r.Live(); live != nil {
			_, ss.Share = live.Site(st.Name, names)
		}
		if site := cur.Config.Site(st.Name); site != nil && site.Discovery != nil {
			ss.Discovery = true
			ss.DiscoveryFailures = r.Registry().Site(st.Name).DiscoveryFailures().Load()
		}
		for _, b := range st.Backends {
			ss.Backends = append(ss.Backends, telemetry.BackendSnapshot{Addr: b.Addr, Up: b.Up})
		}
		out = append(out, ss)
	}
	return out
}
