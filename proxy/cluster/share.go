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
	// weights, aligned with nodes, divide each limit in proportion (demand-following
	// shares); nil: equally.
	weights []int64
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

// withWeights is v with the weights of t, when t was made for v's members (else v: equal
// shares until the coordinator has weighed this membership). Its ID names the weights too,
// so that new weights are a new view, handed over like a change of members.
func (v view) withWeights(t *table) view {
	if t == nil || t.Members != v.id || len(t.Weights) != len(v.nodes) {
		return v
	}
	w := make([]int64, len(v.nodes))
	var b strings.Builder
	b.WriteString(v.id)
	b.WriteByte('|')
	for i, n := range v.nodes {
		x, ok := t.Weights[n]
		if !ok || x < 1 {
			return v
		}
		w[i] = x
		b.WriteString(strconv.FormatInt(x, 10))
		b.WriteByte(',')
	}
	return view{id: b.String(), nodes: v.nodes, weights: w}
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
	if v.weights != nil {
		return v.weighted(i, id, limit)
	}
	share := limit / n
	if rem := limit % n; rem > 0 && (int64(i)+int64(spread(id)%uint32(n)))%n < rem {
		share++
	}
	return share
}

// weighted is member i's share of limit in proportion to the weights: the whole part of
// limit × w_i / W each, and what remains one each to the members with the largest fractions
// (ties by a rotation that depends on the backend). The shares add up to exactly limit. No
// allocation: it runs on the request path.
func (v view) weighted(i int, id balancer.BackendID, limit int64) int64 {
	n := int64(len(v.nodes))
	var total int64
	for _, w := range v.weights {
		total += w
	}
	rot := int64(spread(id) % uint32(n))
	var sum int64
	rank := int64(0) // members ahead of i for a remainder
	myFrac := (limit * v.weights[i]) % total
	myPos := (int64(i) + rot) % n
	for j, w := range v.weights {
		sum += limit * w / total
		if j == i {
			continue
		}
		f, pos := (limit*w)%total, (int64(j)+rot)%n
		if f > myFrac || (f == myFrac && pos < myPos) {
			rank++
		}
	}
	share := limit * v.weights[i] / total
	if rank < limit-sum {
		share++
	}
	return share
}

// table is the coordinator's division of the limits among the members, in proportion to
// their demand: weights (per mille) for the membership Members (a view ID).
type table struct {
	Members string           `json:"members"`
	Weights map[string]int64 `json:"weights"`
}

// weigh divides 1000 among the members in proportion to their demand, at least minWeight
// each (a replica with no traffic now may get some at once), and reports whether the result
// differs from old by more than hysteresis for any member (else the old table stands: a new
// one is a hand-over for the whole fleet).
func weigh(v view, demand map[string]float64, old *table) (*table, bool) {
	const minWeight, hysteresis = 50, 50 // per mille
	var sum float64
	for _, n := range v.nodes {
		sum += max(demand[n], 0)
	}
	t := &table{Members: v.id, Weights: map[string]int64{}}
	spare := float64(1000 - minWeight*len(v.nodes))
	for _, n := range v.nodes {
		w := float64(1000) / float64(len(v.nodes))
		if sum > 0 && spare > 0 {
			w = minWeight + spare*max(demand[n], 0)/sum
		}
		t.Weights[n] = max(int64(w+0.5), 1)
	}
	if old == nil || old.Members != v.id {
		return t, true
	}
	for _, n := range v.nodes {
		if d := t.Weights[n] - old.Weights[n]; d > hysteresis || d < -hysteresis {
			return t, true
		}
	}
	return old, false
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
