// Package store keeps the operators' runtime state — weight overrides with their ramps, and
// drains — and the audit trail of every change, where they outlive the process: in a file on
// a single node (File), in etcd for a fleet, or only in memory (Memory) when nothing is
// configured. The proxy's runtime is the only writer on a node; it applies what Load (and, for
// a fleet, a Watcher) returns.
package store

import (
	"context"
	"errors"
	"time"
)

// ErrUnavailable is returned by a store that cannot take a change now (the cluster store is
// unreachable): the change is refused, and nothing was applied.
var ErrUnavailable = errors.New("the runtime state store is unavailable")

// Store keeps State and the audit trail. Implementations are safe for concurrent use.
type Store interface {
	// Load returns the stored state. A store that exists but cannot be read or understood
	// is an error, never an empty state: a dropped drain would put a site under
	// maintenance back into rotation.
	Load(ctx context.Context) (State, error)
	// Commit applies the edits and appends c to the trail, together: after a nil error both
	// are stored; after an error, neither. c.ID and c.Time are set by the caller's clock
	// (Time) and the store (ID); Commit returns c as stored.
	Commit(ctx context.Context, c Change, edits ...Edit) (Change, error)
	// Changes returns up to limit entries of the trail, newest first, with IDs below before
	// (0: from the newest), and the total number of entries kept.
	Changes(ctx context.Context, before uint64, limit int) ([]Change, int, error)
	// Durable reports whether what is committed survives a restart of this process.
	Durable() bool
	// Close releases what the store holds.
	Close() error
}

// Watcher is a Store that others change too (a fleet's): Watch calls fn with the whole state
// whenever it changes, by any replica, until ctx ends. fn runs on Watch's goroutine, one call
// at a time.
type Watcher interface {
	Watch(ctx context.Context, fn func(State)) error
}

// State is the operators' runtime state: what a restart (or a joining replica) must apply
// over the config file.
type State struct {
	Overrides map[string]Override `json:"overrides"` // by site
	Drains    map[string]Drain    `json:"drains"`    // by site
	// Revision orders the states a Watcher delivers and the changes Commit stores (etcd's
	// revision); 0 where there is no order to keep (a store only this process changes).
	Revision int64 `json:"-"`
}

// Clone returns a copy of s that shares nothing with it.
func (s State) Clone() State {
	c := State{Overrides: make(map[string]Override, len(s.Overrides)), Drains: make(map[string]Drain, len(s.Drains)),
		Revision: s.Revision}
	for k, v := range s.Overrides {
		c.Overrides[k] = v
	}
	for k, v := range s.Drains {
		c.Drains[k] = v
	}
	return c
}

// Apply makes the edits on s (which must have been made by Clone or be non-nil maps).
func (s State) Apply(edits ...Edit) {
	for _, e := range edits {
		switch {
		case e.Override != nil:
			s.Overrides[e.Site] = *e.Override
		case e.ClearOverride:
			delete(s.Overrides, e.Site)
		}
		switch {
		case e.Drain != nil:
			s.Drains[e.Site] = *e.Drain
		case e.Undrain:
			delete(s.Drains, e.Site)
		}
	}
}

// Override is an operator's weight for a site: From at Start, moving linearly to Weight at
// End (End == Start: at once). Start and End are stored, not the steps, so a ramp goes on
// where it was after a restart, and moves the same on every replica.
type Override struct {
	Weight    int       `json:"weight"`
	From      float64   `json:"from"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	By        string    `json:"by"`
	Persisted bool      `json:"persisted,omitempty"` // written to the config file too: dropped once the ramp is over
}

// At is the override's weight at time now.
func (o Override) At(now time.Time) float64 {
	if !now.Before(o.End) || !o.End.After(o.Start) {
		return float64(o.Weight)
	}
	f := max(float64(now.Sub(o.Start))/float64(o.End.Sub(o.Start)), 0)
	return o.From + (float64(o.Weight)-o.From)*f
}

// Ramp is the length of the override's ramp (0: none).
func (o Override) Ramp() time.Duration { return max(o.End.Sub(o.Start), 0) }

// Drain is a drained site: who drained it and when.
type Drain struct {
	By    string    `json:"by"`
	Since time.Time `json:"since"`
}

// Edit is one edit of the state: at most one of the override fields and one of the drain
// fields is set.
type Edit struct {
	Site          string
	Override      *Override
	ClearOverride bool
	Drain         *Drain
	Undrain       bool
}

// Change is one entry of the audit trail: an operator's change, a reload (by API, signal or
// file watch) with the list of what it changed, or a refused attempt with its reason.
type Change struct {
	ID     uint64    `json:"id"`
	Time   time.Time `json:"time"`
	Who    string    `json:"who"`              // the operator ("alice (10.0.0.7:5123)") or the source ("sighup", "file")
	Node   string    `json:"node,omitempty"`   // the replica that made it (fleet)
	Action string    `json:"action"`           // weight, clear_weight, drain, undrain, reload, override_dropped
	Result string    `json:"result,omitempty"` // "" or "applied"; "refused"; "dry_run"
	Reason string    `json:"reason,omitempty"` // why it was refused, or a warning (an override that still wins)
	Site   string    `json:"site,omitempty"`
	Before string    `json:"before"`
	After  string    `json:"after"`
	Items  []Item    `json:"items,omitempty"` // a reload's changes, one per changed key
	// Revision is the store's revision of the commit that stored it (see State.Revision).
	Revision int64 `json:"-"`
}

// Item is one changed key of a reload: a site's weight, a site or backend added or removed,
// a limit, or any other key by its path in the config file.
type Item struct {
	Path   string `json:"path"` // "sites.idc1.weight", "sites.aws.backends", "spillover.queue.size"
	Before string `json:"before,omitempty"`
	After  string `json:"after,omitempty"`
	Note   string `json:"note,omitempty"` // "the override (7) still wins"
}
