package runtime

import (
	"encoding/hex"
	"time"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/telemetry"
)

// State is what GET /api/v1/state shows: the running config, each site's weight, capacity,
// live share and backends, the last minutes of traffic, and the recent changes.
type State struct {
	Generation int64          `json:"generation"`
	Source     string         `json:"source"`
	LoadedAt   time.Time      `json:"loaded_at"`
	Ready      bool           `json:"ready"`
	Queue      QueueState     `json:"queue"`
	Rates      TotalRates     `json:"rates"`
	Sites      []SiteState    `json:"sites"`
	History    []HistoryPoint `json:"history"`
	Changes    []Change       `json:"changes"` // the newest; GET /api/v1/changes pages them all
	Reloads    ReloadCounts   `json:"reloads"`
	// Durable says whether the operators' changes survive a restart (state.file, cluster).
	Durable bool `json:"durable"`
	// ConfigHash is the SHA-256 of the config file as the running generation loaded it
	// ("sha256:" and 64 hex digits): replicas, or two bench runs, with the same hash ran
	// the same file.
	ConfigHash string `json:"config_hash"`

	Cluster *ClusterState `json:"cluster,omitempty"` // a fleet's replica: see SetCluster
}

// QueueState is the wait for a free slot.
type QueueState struct {
	Waiting int `json:"waiting"`
	Size    int `json:"size"`
}

// TotalRates are per-second rates over the last 10 seconds.
type TotalRates struct {
	Requests float64 `json:"requests"`
	Shed     float64 `json:"shed"`
}

// LiveRates and HistoryPoint are the live counts' figures, in the state JSON.
type (
	LiveRates    = telemetry.LiveRates
	HistoryPoint = telemetry.HistoryPoint
)

// Live is the live traffic the state API shows, counted from the requests it records
// (telemetry.Live). Its methods must not block.
type Live interface {
	proxy.Recorder
	// Site returns site's rates and its share of the answers of sites, over the last 10
	// seconds.
	Site(name string, sites []string) (LiveRates, float64)
	// Totals returns the request and shed rates over the last 10 seconds.
	Totals() (requests, shed float64)
	// History returns the last n full seconds of sites, oldest first.
	History(sites []string, n int) []HistoryPoint
}

// ReloadCounts are the reloads since start.
type ReloadCounts struct {
	OK     uint64 `json:"ok"`
	Failed uint64 `json:"failed"`
}

// SiteState is one site in the state API.
type SiteState struct {
	Name             string         `json:"name"`
	Weight           float64        `json:"weight"` // in effect now (moving during a ramp)
	ConfiguredWeight int            `json:"configured_weight"`
	Override         *OverrideState `json:"override"` // nil: the configured weight applies
	Drained          bool           `json:"drained"`
	Elastic          bool           `json:"elastic"`
	TargetShare      float64        `json:"target_share"` // its weight over the sum of the weights in the split
	Share            float64        `json:"share"`        // of answers over the last 10 s
	Limit            int64          `json:"limit"`
	Inflight         int64          `json:"inflight"`
	Spilling         bool           `json:"spilling"`
	Rates            LiveRates      `json:"rates"`
	Backends         []BackendState `json:"backends"`
}

// OverrideState is an operator's weight.
type OverrideState struct {
	Weight int        `json:"weight"`
	Ramp   string     `json:"ramp,omitempty"`
	Since  time.Time  `json:"since"`
	Until  *time.Time `json:"until,omitempty"` // the ramp's end
	By     string     `json:"by"`
}

// BackendState is one backend in the state API.
type BackendState struct {
	Addr      string  `json:"addr"`
	Up        bool    `json:"up"`      // takes requests: healthy and not ejected
	Healthy   bool    `json:"healthy"` // active health
	Ejected   bool    `json:"ejected"` // passive health
	Limit     int64   `json:"limit"`
	Inflight  int64   `json:"inflight"`
	Ramp      float64 `json:"ramp"` // slow start, 0.1 to 1
	LatencyMS float64 `json:"latency_ms"`

	// FleetLimit is the backend's whole limit, of which limit is this replica's share (a fleet).
	FleetLimit int64 `json:"fleet_limit"`
}

// historySeconds is how much history the state API returns.
const historySeconds = 300

// State reports the running config and its traffic now.
func (r *Reloader) State() State {
	st := r.state(true)
	// Outside the lock: a fleet's store may take a while to answer. One that cannot
	// answer shows none.
	if st.Changes, _, _ = r.Changes(0, maxChanges); st.Changes == nil {
		st.Changes = []Change{}
	}
	return st
}

// state is State, with the per-second history only when history is set.
func (r *Reloader) state(history bool) State {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen == nil {
		return State{Source: r.opts.Path} // not started, or its config was refused
	}
	cfg, t := r.gen.cfg, r.gen.table
	st := State{Generation: r.number, Source: r.opts.Path, LoadedAt: r.loaded, Ready: r.ready.Load(),
		Queue: QueueState{Waiting: r.reg.QueueLen(), Size: cfg.Spillover.Queue.Size}, Durable: r.store.Durable(),
		ConfigHash: "sha256:" + hex.EncodeToString(r.sum[:])}

	st.Reloads.OK, st.Reloads.Failed = r.Reloads()
	st.Cluster = r.clusterState()
	names := make([]string, len(cfg.Sites))
	for i, s := range cfg.Sites {
		names[i] = s.Name
	}
	status := t.Status()
	var total float64
	for _, s := range status {
		if !s.Drained && s.Limit > 0 {
			total += s.Weight
		}
	}
	for i, s := range status {
		ss := siteState(s, cfg.Sites[i].Weight)
		if total > 0 && !s.Drained && s.Limit > 0 {
			ss.TargetShare = s.Weight / total
		}
		if o := r.weights[s.Name]; o != nil {
			ss.Override = &OverrideState{Weight: o.Weight, Since: o.Start, By: o.By}
			if o.Ramp() > 0 {
				end := o.End
				ss.Override.Ramp, ss.Override.Until = o.Ramp().String(), &end
			}
		}
		if r.live != nil {
			ss.Rates, ss.Share = r.live.Site(s.Name, names)
		}
		st.Sites = append(st.Sites, ss)
	}
	if r.live != nil {
		st.Rates.Requests, st.Rates.Shed = r.live.Totals()
		if history {
			st.History = r.live.History(names, historySeconds)
		}
	}
	return st
}

func siteState(s balancer.SiteStatus, configured int) SiteState {
	ss := SiteState{Name: s.Name, Weight: s.Weight, ConfiguredWeight: configured, Drained: s.Drained,
		Elastic: s.Elastic, Limit: s.Limit, Inflight: s.Inflight, Spilling: s.Spilling,
		Backends: make([]BackendState, 0, len(s.Backends))}
	for _, b := range s.Backends {
		ss.Backends = append(ss.Backends, BackendState{Addr: b.Addr, Up: b.Up, Healthy: b.Healthy,
			Ejected: b.Ejected, Limit: b.Limit, FleetLimit: b.FleetLimit, Inflight: b.Inflight, Ramp: b.Ramp,
			LatencyMS: float64(b.Latency.Microseconds()) / 1000})
	}
	return ss
}

// Site reports one site as the state API shows it.
func (r *Reloader) Site(name string) (SiteState, bool) {
	for _, s := range r.state(false).Sites {
		if s.Name == name {
			return s, true
		}
	}
	return SiteState{}, false
}
