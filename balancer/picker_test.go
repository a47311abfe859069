package balancer

import (
	"runtime"
	"slices"
	"testing"
	"weak"
)

// A Picker is a snapshot: every change the control plane makes (weight, drain, members,
// health) builds a new one, and a request that holds the old one keeps picking from what it
// saw (issue 13: Picker carried setters and replanned itself in place).
func TestPickerIsASnapshot(t *testing.T) {
	reg := NewRegistry()
	b, err := New(reg, opts532())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	status := func(p *Picker) (weights []float64, drained []bool, members [][]string, up []int) {
		for _, s := range p.Status() {
			weights, drained = append(weights, s.Weight), append(drained, s.Drained)
			var addrs []string
			for _, be := range s.Backends {
				addrs = append(addrs, be.Addr)
			}
			members = append(members, addrs)
		}
		for _, u := range p.plan.up {
			up = append(up, len(u))
		}
		return
	}
	changes := []struct {
		name   string
		change func() error
	}{
		{"weight", func() error { return b.SetWeight("idc1", 7) }},
		{"drain", func() error { return b.SetDrained("idc2", true) }},
		{"members", func() error {
			_, err := b.SetMembers("aws", []string{"http://c1", "http://c2", "http://c3"}, true)
			return err
		}},
		{"health", func() error { reg.SetUp("idc1", "http://a1", false); return nil }},
	}
	for _, c := range changes {
		before := b.Picker()
		w, d, m, u := status(before)
		if err := c.change(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if b.Picker() == before {
			t.Errorf("%s: the Balancer kept its Picker", c.name)
		}
		w2, d2, m2, u2 := status(before)
		if !slices.Equal(w, w2) || !slices.Equal(d, d2) || !slices.EqualFunc(m, m2, slices.Equal) || !slices.Equal(u, u2) {
			t.Errorf("%s changed the Picker taken before it: weights %v→%v, drained %v→%v, members %v→%v, up %v→%v",
				c.name, w, w2, d, d2, m, m2, u, u2)
		}
	}
	w, d, m, u := status(b.Picker())
	want := [][]string{{"http://a1", "http://a2"}, {"http://b1", "http://b2"}, {"http://c1", "http://c2", "http://c3"}}
	if !slices.Equal(w, []float64{7, 3, 2}) || !slices.Equal(d, []bool{false, true, false}) ||
		!slices.EqualFunc(m, want, slices.Equal) || !slices.Equal(u, []int{1, 0, 3}) {
		t.Errorf("the current Picker: weights %v, drained %v, members %v, up %v", w, d, m, u)
	}
}

// A Balancer that a reload replaced (closed, no lease left on it) is collected: neither the
// Registry nor its successor keeps it, or its Pickers, alive (issue 13: generations kept
// alive by what they share).
func TestReplacedBalancersAreCollected(t *testing.T) {
	reg := NewRegistry()
	var old []weak.Pointer[Balancer]
	var cur *Balancer
	for i := range 50 {
		b, err := New(reg, opts532())
		if err != nil {
			t.Fatal(err)
		}
		b.MakeCurrent()
		if cur != nil {
			cur.Close()
			old = append(old, weak.Make(cur))
		}
		var l Lease
		if err := b.Picker().Pick(&l, uint64(i)); err != nil {
			t.Fatal(err)
		}
		l.Done(Result{Status: 200})
		cur = b
		reg.Prune()
	}
	for range 3 {
		runtime.GC()
	}
	alive := 0
	for _, w := range old {
		if w.Value() != nil {
			alive++
		}
	}
	if alive > 0 {
		t.Errorf("%d of %d replaced Balancers still reachable", alive, len(old))
	}
	runtime.KeepAlive(cur)
}
