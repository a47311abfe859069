package balancer

// Share is the part of each backend's limit that this proxy may use when several replicas
// enforce one limit together (a fleet): the limit is a budget for the whole fleet, and the
// parts the replicas hold add up to at most the limit. Of returns this replica's part of
// limit for the backend id, in [0, limit]; it is called on the request path, so it must not
// block. A Share is immutable: a change of the fleet is a new Share (SetShare).
type Share interface {
	Of(id BackendID, limit int64) int64
}

// shareOf holds a Share behind an atomic pointer.
type shareOf struct{ Share }

// SetShare makes s this replica's part of every backend's limit, at once for every Picker
// (nil: the whole limit, as for a single proxy). Requests waiting in the queue are woken, so
// that a grown share admits them. A request in flight keeps its slot when a share shrinks:
// the caller waits for the in-flight counts to fall (Picker.Status) before it counts the
// smaller share as in force.
func (r *Registry) SetShare(s Share) {
	if s == nil {
		r.share.Store(nil)
	} else {
		r.share.Store(&shareOf{s})
	}
	r.queue.wake()
}
