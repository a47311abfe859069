package balancer

import (
	"slices"
	"testing"
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
