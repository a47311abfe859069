package balancer

import (
	"errors"
	"testing"
)

// fraction is a Share of num/den of every limit, rounded down (0 of a small limit).
type fraction struct{ num, den int64 }

func (f fraction) Of(_ BackendID, limit int64) int64 { return limit * f.num / f.den }

// With a share, a backend admits up to this replica's part of its limit, the status shows
// both, a share of 0 admits nothing there (the request spills), and a grown share admits
// at once; nil gives the whole limit back.
func TestShareScalesEachLimit(t *testing.T) {
	reg := NewRegistry()
	bal, err := New(reg, Options{Sites: []SiteOptions{
		{Name: "idc1", Weight: 1, Backends: []string{"http://a"}, MaxInflight: 9},
		{Name: "aws", Weight: 0, Elastic: true, Backends: []string{"http://c"}, MaxInflight: 2},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer bal.Close()
	p := bal.Picker()
	reg.SetShare(fraction{1, 3})
	st := p.Status()
	if b := st[0].Backends[0]; b.Limit != 3 || b.FleetLimit != 9 {
		t.Fatalf("idc1's backend: limit %d of %d, want 3 of 9", b.Limit, b.FleetLimit)
	}
	if st[1].Backends[0].Limit != 0 {
		t.Fatalf("a third of 2 is %d, want 0", st[1].Backends[0].Limit)
	}
	var leases []*Lease
	defer func() {
		for _, l := range leases {
			l.Done(Result{Status: 200})
		}
	}()
	for range 3 {
		l := new(Lease)
		if err := p.Pick(l, 0); err != nil || l.Site.Name != "idc1" {
			t.Fatalf("pick within the share: %v", err)
		}
		leases = append(leases, l)
	}
	// idc1's share is full and aws's is 0: nowhere to go.
	if err := p.Pick(new(Lease), 0); !errors.Is(err, ErrSaturated) {
		t.Fatalf("pick over the share: %v, want ErrSaturated", err)
	}
	reg.SetShare(nil) // a single proxy again: the whole limit
	l := new(Lease)
	if err := p.Pick(l, 0); err != nil {
		t.Fatalf("pick after the share grew: %v", err)
	}
	leases = append(leases, l)
	if b := p.Status()[0].Backends[0]; b.Limit != 9 || b.FleetLimit != 9 || b.Inflight != 4 {
		t.Fatalf("without a share: %+v", b)
	}
}

// A learned limit is the fleet's: the in-flight a completion reports to it is this replica's
// scaled up by its share, so that every replica learns the same fleet-wide limit.
func TestShareScalesWhatTheLearnedLimitSees(t *testing.T) {
	reg := NewRegistry()
	bal, err := New(reg, Options{Sites: []SiteOptions{
		{Name: "idc1", Weight: 1, Backends: []string{"http://a"}, Adaptive: AdaptiveOptions{Floor: 30, Cap: 30, Initial: 30}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer bal.Close()
	p := bal.Picker()
	reg.SetShare(fraction{1, 3})
	l := new(Lease)
	if err := p.Pick(l, 0); err != nil {
		t.Fatal(err)
	}
	defer l.Done(Result{Status: 200})
	if l.sent != 3 || l.limit == nil {
		t.Fatalf("the first request of a replica holding a third reports %d in flight, want 3 (1 × 30/10)", l.sent)
	}
}
