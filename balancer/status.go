package balancer

import (
	"cmp"
	"slices"
	"time"
)

// SiteStatus is a site's capacity now, for the state API and metrics.
type SiteStatus struct {
	Name     string
	Weight   float64 // now: configured, or as an operator set it (to a tenth)
	Drained  bool
	Elastic  bool
	Limit    int64 // sum of the limits of the backends that are up
	Inflight int64
	Spilling bool
	Backends []BackendStatus
}

// BackendStatus is a backend's state now.
type BackendStatus struct {
	Addr     string
	Up       bool // active health up and not ejected
	Healthy  bool // active health up
	Ejected  bool
	Limit    int64 // with its slow-start ramp; in a fleet, this replica's share
	Inflight int64
	Ramp     float64 // slow start, 0.1 to 1
	Latency  time.Duration

	// FleetLimit is the whole limit, of which Limit is this replica's share in a fleet
	// (SetShare); equal to Limit for a single proxy.
	FleetLimit int64
}

// Status reports every site's capacity and its backends' state, in Options order: the
// Picker's members and controls, with the in-flight counts, limits and health of now.
func (p *Picker) Status() []SiteStatus {
	pl := p.plan
	out := make([]SiteStatus, len(p.sites))
	for i := range p.sites {
		s := &p.sites[i]
		st := SiteStatus{Name: s.state.Name, Weight: pl.controls[i].weight, Drained: pl.controls[i].drained, Elastic: s.elastic,
			Limit: p.siteLimit(pl, i), Inflight: s.state.inflight.Load(), Spilling: s.state.spilling.Load()}
		for _, b := range pl.members[i] {
			st.Backends = append(st.Backends, BackendStatus{Addr: b.ID.Addr, Up: b.Up(), Healthy: b.Healthy(), Ejected: b.Ejected(),
				Limit: p.limit(s, b), FleetLimit: p.fullLimit(s, b), Inflight: b.inflight.Load(), Ramp: p.ramp(s, b), Latency: b.Latency()})
		}
		out[i] = st
	}
	return out
}

// SpillCount is one spillover counter: requests that preferred From and went To, by Reason.
type SpillCount struct {
	From, To string
	Reason   SpillReason
	N        uint64
}

// Spills lists every spillover counter between two sites of the configs served, zeros
// included (so that a metric exists before its first spill), ordered by from, to, reason.
func (r *Registry) Spills() []SpillCount {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []SpillCount
	for k, c := range r.spills {
		if k.from == k.to {
			continue
		}
		for reason := SpillReason(1); reason < numSpillReasons; reason++ {
			out = append(out, SpillCount{From: k.from, To: k.to, Reason: reason, N: c[reason].Load()})
		}
	}
	slices.SortFunc(out, func(a, b SpillCount) int {
		return cmp.Or(cmp.Compare(a.From, b.From), cmp.Compare(a.To, b.To), cmp.Compare(a.Reason, b.Reason))
	})
	return out
}

// Sheds returns how many requests were refused for lack of capacity, by reason.
func (r *Registry) Sheds() map[ShedReason]uint64 {
	out := make(map[ShedReason]uint64, numShedReasons)
	for i := range r.sheds {
		out[ShedReason(i)] = r.sheds[i].Load()
	}
	return out
}
