package runtime

// ClusterState is the fleet in the state API: this replica, the members it sees, whether
// the fleet's store (etcd) answers, and whether this replica holds its share of the limits.
type ClusterState struct {
	Name    string   `json:"name"`
	Node    string   `json:"node"`
	Members []string `json:"members"`
	Store   string   `json:"store"` // "up" or "unavailable"
	Joined  bool     `json:"joined"`
}

// SetCluster makes the state API show the fleet as status reports it (a replica of a fleet;
// without it the state has no cluster).
func (r *Reloader) SetCluster(status func() ClusterState) { r.cluster.Store(&status) }

// clusterState is what SetCluster's status reports now, or nil.
func (r *Reloader) clusterState() *ClusterState {
	f := r.cluster.Load()
	if f == nil {
		return nil
	}
	st := (*f)()
	return &st
}

// WithinLimits reports whether every backend's in-flight is within its limit now (in a
// fleet, this replica's share of it): after a share shrank, the fleet hands the difference
// to another replica only once it is. It reads the table being served, not the state (which
// asks the store for the newest changes): it is asked every 50 ms while a share shrinks.
func (r *Reloader) WithinLimits() bool {
	r.mu.Lock()
	h := r.handler
	r.mu.Unlock()
	if h == nil {
		return true // not started: nothing in flight
	}
	for _, s := range h.Table().Status() {
		for _, b := range s.Backends {
			if b.Inflight > b.Limit {
				return false
			}
		}
	}
	return true
}

// Demand is this replica's load now — its requests in flight at every backend and those
// waiting in the queue — which a fleet with demand-following shares divides the limits by.
func (r *Reloader) Demand() float64 {
	r.mu.Lock()
	h := r.handler
	r.mu.Unlock()
	if h == nil {
		return 0
	}
	var n int64
	for _, s := range h.Table().Status() {
		n += s.Inflight
	}
	return float64(n + int64(r.reg.QueueLen()))
}
