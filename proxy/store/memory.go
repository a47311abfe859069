package store

import (
	"context"
	"slices"
	"sync"
)

// DefaultTrail is how many audit entries a store keeps by default; the oldest go first.
const DefaultTrail = 2000

// trail is the audit trail, newest first, bounded; the zero value keeps DefaultTrail.
type trail struct {
	entries []Change // newest first
	next    uint64   // the ID of the next entry, from 1
	max     int
}

func (t *trail) add(c Change) Change {
	if t.next == 0 {
		t.next = 1
	}
	c.ID = t.next
	t.next++
	t.entries = slices.Insert(t.entries, 0, c)
	if n := cmp0(t.max, DefaultTrail); len(t.entries) > n {
		t.entries = t.entries[:n]
	}
	return c
}

func (t *trail) page(before uint64, limit int) ([]Change, int) {
	i := 0
	if before > 0 {
		// IDs fall as the index grows.
		i, _ = slices.BinarySearchFunc(t.entries, before, func(c Change, id uint64) int {
			switch {
			case c.ID > id:
				return -1
			case c.ID < id:
				return 1
			}
			return 0
		})
		if i < len(t.entries) && t.entries[i].ID == before {
			i++
		}
	}
	end := i + min(max(limit, 0), len(t.entries)-i)
	return slices.Clone(t.entries[i:end]), len(t.entries)
}

func cmp0(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// Memory is a Store that keeps everything in memory: what a node without `state` or
// `cluster` has. Nothing survives a restart (Durable is false).
type Memory struct {
	mu    sync.Mutex
	state State
	trail trail
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty Memory store that keeps up to keep audit entries (0:
// DefaultTrail).
func NewMemory(keep int) *Memory {
	return &Memory{state: State{}.Clone(), trail: trail{max: keep}}
}

// Load returns the state.
func (m *Memory) Load(context.Context) (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.Clone(), nil
}

// Commit applies the edits and appends c.
func (m *Memory) Commit(_ context.Context, c Change, edits ...Edit) (Change, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.state.Apply(edits...)
	return m.trail.add(c), nil
}

// Changes returns a page of the trail, newest first.
func (m *Memory) Changes(_ context.Context, before uint64, limit int) ([]Change, int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	page, total := m.trail.page(before, limit)
	return page, total, nil
}

// Durable is false: nothing survives a restart.
func (m *Memory) Durable() bool { return false }

// Close does nothing.
func (m *Memory) Close() error { return nil }
