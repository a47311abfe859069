package cluster

import (
	"slices"
	"strconv"
	"strings"

	"github.com/spillway/spillway/balancer"
)

// view is one membership of the fleet: its members' node names, sorted, and an ID that
// names this membership uniquely (each member's name with the etcd revision its key was
// created at, so that a replica that left and came back is another view).
type view struct {
	id    string
	nodes []string
}

// noView is the view a replica holds before it has joined: its share of every limit is 0.
var noView = view{id: ""}

func newView(members map[string]int64) view {
	nodes := make([]string, 0, len(members))
	for n := range members {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	var b strings.Builder
	for _, n := range nodes {
		b.WriteString(n)
		b.WriteByte('@')
		b.WriteString(strconv.FormatInt(members[n], 10))
		b.WriteByte(',')
	}
	return view{id: b.String(), nodes: nodes}
}

// of is node's equal share of limit in v: limit/n each, and the remainder one each to r of
// the members, which ones depending on the backend so that the remainders spread over the
// fleet. The shares of v's members add up to exactly limit. A node not in v gets 0.
func (v view) of(node string, id balancer.BackendID, limit int64) int64 {
	n := int64(len(v.nodes))
	i, ok := slices.BinarySearch(v.nodes, node)
	if !ok || n == 0 {
		return 0
	}
	share := limit / n
	if rem := limit % n; rem > 0 && (int64(i)+int64(spread(id)%uint32(n)))%n < rem {
		share++
	}
	return share
}

// spread is a hash of the backend's ID (FNV-1a, inline: Of is on the request path and
// must not allocate), so that which members get a remainder differs by backend.
func spread(id balancer.BackendID) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(id.Site); i++ {
		h = (h ^ uint32(id.Site[i])) * 16777619
	}
	h = (h ^ 0) * 16777619
	for i := 0; i < len(id.Addr); i++ {
		h = (h ^ uint32(id.Addr[i])) * 16777619
	}
	return h
}

// Share is a replica's part of each backend's limit while the fleet moves between
// memberships: the least of its shares in every view it holds. A replica adds a new view to
// those it holds at once (its share can only shrink), and drops the older ones only once
// every member of the new view holds it too, so that no replica grows into a share another
// still uses. It implements balancer.Share; it is immutable.
type Share struct {
	node  string
	views []view
}

var _ balancer.Share = (*Share)(nil)

// Of is this replica's part of limit at the backend id.
func (s *Share) Of(id balancer.BackendID, limit int64) int64 {
	share := limit
	for _, v := range s.views {
		share = min(share, v.of(s.node, id, limit))
	}
	return share
}

// Members is how many replicas the newest view counts (0 before joining).
func (s *Share) Members() int { return len(s.views[len(s.views)-1].nodes) }

// settled reports whether the share is one view's, no longer the least of several.
func (s *Share) settled() bool { return len(s.views) == 1 && s.views[0].id != "" }

func (s *Share) latest() view { return s.views[len(s.views)-1] }

// with returns the share that also holds v, as its newest (if it is not the newest
// already). A view held already (members that left and came back the same) is moved, not
// added twice: the views held stay as many as the distinct memberships since the last
// hand-over that completed.
func (s *Share) with(v view) *Share {
	if s.latest().id == v.id {
		return s
	}
	views := slices.DeleteFunc(slices.Clone(s.views), func(h view) bool { return h.id == v.id })
	return &Share{node: s.node, views: append(views, v)}
}

// only returns the share of v alone.
func (s *Share) only(v view) *Share { return &Share{node: s.node, views: []view{v}} }
