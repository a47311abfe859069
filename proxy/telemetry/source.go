package telemetry

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
