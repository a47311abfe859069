package cluster

import (
	"fmt"
	"testing"

	"github.com/spillway/spillway/balancer"
)

// Equal shares add up to exactly the limit for any membership and backend, differ by at most
// one, and spread the remainders over the members.
func TestEqualSharesAddUp(t *testing.T) {
	for n := 1; n <= 7; n++ {
		members := map[string]int64{}
		for i := range n {
			members[fmt.Sprintf("node-%d", i)] = int64(i + 1)
		}
		v := newView(members)
		extra := map[string]int{}
		for b := range 50 {
			id := balancer.BackendID{Site: "idc1", Addr: fmt.Sprintf("http://10.0.0.%d:80", b)}
			for _, limit := range []int64{0, 1, 2, 5, 7, 100, 101} {
				var sum, lo, hi int64 = 0, limit, 0
				for _, node := range v.nodes {
					s := v.of(node, id, limit)
					sum += s
					lo, hi = min(lo, s), max(hi, s)
					if limit == 7 && s > 7/int64(n) {
						extra[node]++
					}
				}
				if sum != limit || hi-lo > 1 {
					t.Fatalf("%d members, limit %d at %s: shares add up to %d, spread %d..%d", n, limit, id, sum, lo, hi)
				}
			}
		}
		if n > 1 && 7%n != 0 && len(extra) < 2 {
			t.Errorf("%d members: the remainders of 7 went to %v only", n, extra)
		}
	}
	if s := noView.of("a", balancer.BackendID{}, 10); s != 0 {
		t.Fatalf("no view: %d", s)
	}
}

// A share holding several views is the least of them: a member can only shrink until the
// older views are dropped.
func TestShareIsTheLeastOfItsViews(t *testing.T) {
	two := newView(map[string]int64{"a": 1, "b": 2})
	three := newView(map[string]int64{"a": 1, "b": 2, "c": 3})
	id := balancer.BackendID{Site: "s", Addr: "x"}
	s := (&Share{node: "c", views: []view{noView}}).with(three)
	if got := s.Of(id, 9); got != 0 {
		t.Fatalf("a joiner before the hand-over holds %d", got)
	}
	s = s.only(three)
	if got := s.Of(id, 9); got != 3 {
		t.Fatalf("a joiner after the hand-over holds %d, want 3", got)
	}
	a := (&Share{node: "a", views: []view{two}}).with(three)
	if got := a.Of(id, 9); got != three.of("a", id, 9) || got > two.of("a", id, 9) {
		t.Fatalf("a during the hand-over holds %d", got)
	}
}

func BenchmarkShareOf(b *testing.B) {
	v := newView(map[string]int64{"a": 1, "b": 2, "c": 3})
	s := &Share{node: "b", views: []view{v}}
	id := balancer.BackendID{Site: "idc1", Addr: "http://10.0.1.10:8080"}
	b.ReportAllocs()
	for b.Loop() {
		s.Of(id, 257)
	}
}

// Weighted shares add up to exactly each limit and follow the weights; weigh keeps a floor
// for every member and keeps the old table unless a weight moved by more than 5%.
func TestWeightedShares(t *testing.T) {
	v := newView(map[string]int64{"a": 1, "b": 2, "c": 3})
	tb, changed := weigh(v, map[string]float64{"a": 60, "b": 30, "c": 0}, nil)
	if !changed || tb.Weights["c"] < 50 || tb.Weights["a"] <= tb.Weights["b"] {
		t.Fatalf("weights %v", tb.Weights)
	}
	w := v.withWeights(tb)
	if w.weights == nil || w.id == v.id {
		t.Fatalf("the table does not apply to its membership: %+v", w)
	}
	for b := range 30 {
		id := balancer.BackendID{Site: "s", Addr: fmt.Sprint(b)}
		for _, limit := range []int64{0, 1, 2, 3, 7, 10, 100, 257} {
			var sum int64
			for _, n := range w.nodes {
				sum += w.of(n, id, limit)
			}
			if sum != limit {
				t.Fatalf("limit %d at %s: weighted shares add up to %d", limit, id, sum)
			}
		}
	}
	id := balancer.BackendID{Site: "s", Addr: "x"}
	if a, b, c := w.of("a", id, 100), w.of("b", id, 100), w.of("c", id, 100); a < 55 || b < 25 || c < 4 || a+b+c != 100 {
		t.Fatalf("shares of 100 for demand 60:30:0: %d %d %d", a, b, c)
	}
	if same, changed := weigh(v, map[string]float64{"a": 62, "b": 29, "c": 0}, tb); changed || same != tb {
		t.Fatalf("a small move of demand made a new table: %v", same.Weights)
	}
	other := newView(map[string]int64{"a": 1, "b": 2})
	if got := other.withWeights(tb); got.weights != nil {
		t.Fatal("a table for another membership applied")
	}
}
