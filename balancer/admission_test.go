package balancer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// The tests of the admission contract (DESIGN.md, request path step 3): static per-backend
// limits, spill order, hysteresis, the FIFO queue, slow start, health, retries and affinity.
// Capacity comes from static MaxInflight only: the adaptive limit is not under test here.

// admPicker builds a Picker on reg and closes it when the test ends.
func admPicker(t testing.TB, reg *Registry, o Options) *Balancer {
	t.Helper()
	p, err := New(reg, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// steer makes the split prefer site i for the next Pick without a key.
func steer(t testing.TB, p *Balancer, i int) {
	t.Helper()
	seq := p.Picker().plan.seq
	c := p.cursor.Load()
	for k := range uint64(len(seq)) {
		if int(seq[(c+k)%uint64(len(seq))]) == i {
			p.cursor.Store(c + k)
			return
		}
	}
	t.Fatalf("site %d is not in the split %v", i, seq)
}

// pickPreferring picks with the split steered to site i.
func pickPreferring(t testing.TB, p *Balancer, i int) (*Lease, error) {
	t.Helper()
	steer(t, p, i)
	l := new(Lease)
	return l, p.Picker().Pick(l, 0)
}

// fillSite takes every free slot of site i with requests that prefer it, checking that each
// lands there without spilling.
func fillSite(t testing.TB, p *Balancer, i int) []*Lease {
	t.Helper()
	var out []*Lease
	for p.Status()[i].Inflight < p.Status()[i].Limit {
		l, err := pickPreferring(t, p, i)
		if err != nil {
			t.Fatalf("filling site %d: %v", i, err)
		}
		if l.SiteIndex != i || l.Spill != SpillNone {
			t.Fatalf("filling site %d: went to %d (spill %q)", i, l.SiteIndex, l.Spill)
		}
		out = append(out, l)
	}
	return out
}

// admMember is backend j of site i.
func admMember(p *Balancer, i, j int) *Backend { return p.Picker().plan.members[i][j] }

func doneAll(ls []*Lease) {
	for _, l := range ls {
		l.Done(Result{Status: 200})
	}
}

// assertIdle checks that nothing is held or waiting anywhere in reg.
func assertIdle(t testing.TB, reg *Registry) {
	t.Helper()
	reg.mu.Lock()
	defer reg.mu.Unlock()
	for id, b := range reg.backends {
		if n := b.Inflight(); n != 0 {
			t.Errorf("backend %s: %d in flight at the end, want 0", id, n)
		}
	}
	for name, s := range reg.sites {
		if n := s.Inflight(); n != 0 {
			t.Errorf("site %s: %d in flight at the end, want 0", name, n)
		}
	}
	if n := reg.queue.len.Load(); n != 0 {
		t.Errorf("%d requests still queued, want 0", n)
	}
}

type spillKeyReason struct {
	from, to string
	reason   SpillReason
}

func spillCounts(reg *Registry) map[spillKeyReason]uint64 {
	out := map[spillKeyReason]uint64{}
	for _, c := range reg.Spills() {
		if c.N > 0 { // Spills lists zeros too
			out[spillKeyReason{c.From, c.To, c.Reason}] += c.N
		}
	}
	return out
}

// fakeClock is an injected Registry.now.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := new(fakeClock)
	c.ns.Store(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// maxTracker records the highest in-flight count each backend was seen with right after a
// successful pick.
type maxTracker struct {
	max   map[*Backend]*atomic.Int64
	limit map[*Backend]int64
}

// newMaxTracker tracks every backend reg knows now, with the limit of its site.
func newMaxTracker(reg *Registry, limits map[string]int64) *maxTracker {
	m := &maxTracker{max: map[*Backend]*atomic.Int64{}, limit: map[*Backend]int64{}}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	for id, b := range reg.backends {
		m.max[b] = new(atomic.Int64)
		m.limit[b] = limits[id.Site]
	}
	return m
}

func (m *maxTracker) observe(t testing.TB, l *Lease) {
	a, ok := m.max[l.Backend]
	if !ok {
		t.Errorf("picked a backend the test does not know: %s", l.Backend.ID)
		return
	}
	n := l.Backend.Inflight()
	for {
		old := a.Load()
		if n <= old || a.CompareAndSwap(old, n) {
			return
		}
	}
}

// check reports every backend seen above its limit, and how many reached it.
func (m *maxTracker) check(t testing.TB) (atLimit int) {
	t.Helper()
	for b, a := range m.max {
		switch n := a.Load(); {
		case n > m.limit[b]:
			t.Errorf("backend %s reached %d in flight, limit %d", b.ID, n, m.limit[b])
		case n == m.limit[b]:
			atLimit++
		}
	}
	return atLimit
}

// --- 1. Per-backend static limits -------------------------------------------------------

// TestPickFillsEveryFreeSlotAndNoMore: sequential picks are admitted exactly as long as some
// site that may take them has a free slot: each backend ends at its limit, never above it,
// and weight-0 non-elastic sites and backends out of rotation take nothing.
func TestPickFillsEveryFreeSlotAndNoMore(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		down []BackendID // SetUp(false)
		ejec []BackendID // SetEjected(true)
		want map[string]int64
	}{
		{
			name: "5:3:2",
			opts: Options{Sites: []SiteOptions{
				{Name: "idc1", Weight: 5, Backends: []string{"a1", "a2"}, MaxInflight: 3},
				{Name: "idc2", Weight: 3, Backends: []string{"b1"}, MaxInflight: 2},
				{Name: "aws", Weight: 2, Elastic: true, Backends: []string{"c1", "c2"}, MaxInflight: 1},
			}},
			want: map[string]int64{"a1": 3, "a2": 3, "b1": 2, "c1": 1, "c2": 1},
		},
		{
			name: "burst-only elastic",
			opts: Options{Sites: []SiteOptions{
				{Name: "home", Weight: 1, Backends: []string{"h1"}, MaxInflight: 2},
				{Name: "aws", Elastic: true, Backends: []string{"e1", "e2", "e3"}, MaxInflight: 2},
			}},
			want: map[string]int64{"h1": 2, "e1": 2, "e2": 2, "e3": 2},
		},
		{
			name: "weight-0 non-elastic takes nothing",
			opts: Options{Sites: []SiteOptions{
				{Name: "home", Weight: 1, Backends: []string{"h1"}, MaxInflight: 2},
				{Name: "dr", Backends: []string{"d1"}, MaxInflight: 5},
			}},
			want: map[string]int64{"h1": 2, "d1": 0},
		},
		{
			name: "down and ejected",
			opts: Options{Sites: []SiteOptions{
				{Name: "idc1", Weight: 2, Backends: []string{"a1", "a2", "a3"}, MaxInflight: 2},
				{Name: "idc2", Weight: 1, Backends: []string{"b1", "b2"}, MaxInflight: 1},
			}},
			down: []BackendID{{"idc1", "a2"}},
			ejec: []BackendID{{"idc1", "a3"}, {"idc2", "b2"}},
			want: map[string]int64{"a1": 2, "a2": 0, "a3": 0, "b1": 1, "b2": 0},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for round := range 20 { // the in-site choice is random: try several orders
				reg := NewRegistry()
				p := admPicker(t, reg, tc.opts)
				for _, id := range tc.down {
					reg.SetUp(id.Site, id.Addr, false)
				}
				for _, id := range tc.ejec {
					reg.SetEjected(id.Site, id.Addr, true)
				}
				var total int64
				for _, n := range tc.want {
					total += n
				}
				var held []*Lease
				for {
					l := new(Lease)
					err := p.Picker().Pick(l, 0)
					if err != nil {
						if !errors.Is(err, ErrSaturated) {
							t.Fatalf("round %d: Pick: %v, want ErrSaturated", round, err)
						}
						break
					}
					held = append(held, l)
					if int64(len(held)) > total {
						t.Fatalf("round %d: more than %d admitted", round, total)
					}
				}
				if int64(len(held)) != total {
					t.Errorf("round %d: %d admitted before ErrSaturated, want %d", round, len(held), total)
				}
				for _, b := range p.Backends() {
					if got := b.Inflight(); got != tc.want[b.ID.Addr] {
						t.Errorf("round %d: %s holds %d, want %d", round, b.ID, got, tc.want[b.ID.Addr])
					}
				}
				doneAll(held)
				assertIdle(t, reg)
			}
		})
	}
}

// TestPickRefusesOnlyWhenFull is a model check: random picks and releases, one at a time;
// every admitted request finds its backend within its limit, and a refusal happens only
// when every slot that may take the request is held, hysteresis or not.
func TestPickRefusesOnlyWhenFull(t *testing.T) {
	for _, resume := range []float64{1, 0.5} {
		t.Run(fmt.Sprintf("resume=%v", resume), func(t *testing.T) {
			reg := NewRegistry()
			p := admPicker(t, reg, Options{Resume: resume, Sites: []SiteOptions{
				{Name: "idc1", Weight: 5, Backends: []string{"a1", "a2"}, MaxInflight: 4},
				{Name: "idc2", Weight: 3, Backends: []string{"b1", "b2"}, MaxInflight: 2},
				{Name: "aws", Weight: 2, Elastic: true, Backends: []string{"c1"}, MaxInflight: 3},
				{Name: "dr", Backends: []string{"d1"}, MaxInflight: 3},
			}})
			const capacity = 8 + 4 + 3
			limits := map[string]int64{"idc1": 4, "idc2": 2, "aws": 3}
			r := rand.New(rand.NewPCG(1, uint64(resume*10)))
			var held []*Lease
			for step := range 20000 {
				if len(held) > 0 && r.IntN(2) == 0 {
					k := r.IntN(len(held))
					held[k].Done(Result{})
					held = slices.Delete(held, k, k+1)
					continue
				}
				l := new(Lease)
				if err := p.Picker().Pick(l, 0); err != nil {
					if !errors.Is(err, ErrSaturated) {
						t.Fatalf("step %d: %v", step, err)
					}
					if len(held) != capacity {
						t.Fatalf("step %d: refused with %d of %d slots held", step, len(held), capacity)
					}
					continue
				}
				if l.Site.Name == "dr" {
					t.Fatalf("step %d: weight-0 site dr took a request", step)
				}
				if n := l.Backend.Inflight(); n > limits[l.Site.Name] {
					t.Fatalf("step %d: %s at %d in flight", step, l.Backend.ID, n)
				}
				held = append(held, l)
			}
			doneAll(held)
			assertIdle(t, reg)
		})
	}
}

// TestStaticLimitsUnderConcurrency: many goroutines pick, retry, hold and release at random;
// no backend is ever seen above its MaxInflight.
func TestStaticLimitsUnderConcurrency(t *testing.T) {
	reg := NewRegistry()
	p := admPicker(t, reg, Options{Resume: 0.75, Sites: []SiteOptions{
		{Name: "idc1", Weight: 5, Backends: []string{"a1", "a2"}, MaxInflight: 3},
		{Name: "idc2", Weight: 3, Backends: []string{"b1", "b2"}, MaxInflight: 2},
		{Name: "aws", Weight: 2, Elastic: true, Backends: []string{"c1", "c2", "c3"}, MaxInflight: 1},
	}})
	limits := map[string]int64{"idc1": 3, "idc2": 2, "aws": 1}
	tr := newMaxTracker(reg, limits)
	all := p.Backends()
	const workers, ops = 24, 3000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 42))
			var held []*Lease
			for range ops {
				if len(held) > 0 && (len(held) >= 3 || r.IntN(3) == 0) {
					k := r.IntN(len(held))
					held[k].Done(Result{Latency: time.Duration(1+r.IntN(5)) * time.Millisecond})
					held = slices.Delete(held, k, k+1)
					continue
				}
				l := new(Lease)
				var err error
				if r.IntN(5) == 0 {
					prev := all[r.IntN(len(all))]
					err = p.Picker().PickRetry(l, p.siteIndex(prev.ID.Site), prev)
				} else {
					err = p.Picker().Pick(l, 0)
				}
				if err != nil {
					if !errors.Is(err, ErrSaturated) && !errors.Is(err, ErrNoBackend) {
						t.Errorf("pick: %v", err)
						return
					}
					continue
				}
				tr.observe(t, l)
				held = append(held, l)
			}
			doneAll(held)
		})
	}
	wg.Wait()
	if n := tr.check(t); n == 0 {
		t.Error("no backend ever reached its limit: the test did not saturate")
	}
	assertIdle(t, reg)
}

// --- 2. Spill order -----------------------------------------------------------------------

// spillTargets is where the contract sends a request preferring pref that pref cannot
// take, with no hysteresis: the first elastic site (in config order) with a free slot, else
// the non-elastic sites of the split with the most free slots; none when all are full.
func spillTargets(p *Balancer, pref int) []int {
	st := p.Status()
	free := func(i int) int64 { return st[i].Limit - st[i].Inflight }
	for i, s := range st {
		if s.Elastic && i != pref && free(i) > 0 {
			return []int{i}
		}
	}
	var best int64
	var out []int
	for i, s := range st {
		if s.Elastic || s.Weight == 0 || i == pref || free(i) <= 0 {
			continue
		}
		switch f := free(i); {
		case f > best:
			best, out = f, []int{i}
		case f == best:
			out = append(out, i)
		}
	}
	return out
}

func TestSpillOrder(t *testing.T) {
	tests := []struct {
		name   string
		sites  []SiteOptions
		pref   int
		spills int // requests that spill before ErrSaturated
	}{
		{
			name: "burst-only elastic first, then most headroom",
			sites: []SiteOptions{
				{Name: "idc1", Weight: 5, Backends: []string{"a1", "a2"}, MaxInflight: 2},
				{Name: "idc2", Weight: 3, Backends: []string{"b1"}, MaxInflight: 3},
				{Name: "idc3", Weight: 2, Backends: []string{"c1", "c2"}, MaxInflight: 3},
				{Name: "aws", Elastic: true, Backends: []string{"e1"}, MaxInflight: 2},
				{Name: "dr", Backends: []string{"d1"}, MaxInflight: 5},
			},
			pref:   0,
			spills: 2 + 3 + 6,
		},
		{
			name: "weighted elastic before a roomier non-elastic site",
			sites: []SiteOptions{
				{Name: "idc1", Weight: 5, Backends: []string{"a1"}, MaxInflight: 2},
				{Name: "idc2", Weight: 3, Backends: []string{"b1"}, MaxInflight: 10},
				{Name: "aws", Weight: 2, Elastic: true, Backends: []string{"c1"}, MaxInflight: 2},
			},
			pref:   0,
			spills: 2 + 10,
		},
		{
			name: "elastic preferred site spills to non-elastic by headroom",
			sites: []SiteOptions{
				{Name: "idc1", Weight: 5, Backends: []string{"a1"}, MaxInflight: 2},
				{Name: "idc2", Weight: 3, Backends: []string{"b1"}, MaxInflight: 10},
				{Name: "aws", Weight: 2, Elastic: true, Backends: []string{"c1"}, MaxInflight: 2},
			},
			pref:   2,
			spills: 2 + 10,
		},
		{
			name: "elastic sites in config order",
			sites: []SiteOptions{
				{Name: "idc1", Weight: 1, Backends: []string{"a1"}, MaxInflight: 1},
				{Name: "aws1", Elastic: true, Backends: []string{"e1"}, MaxInflight: 1},
				{Name: "aws2", Elastic: true, Backends: []string{"f1"}, MaxInflight: 3},
				{Name: "idc2", Weight: 1, Backends: []string{"b1"}, MaxInflight: 5},
				{Name: "dr", Backends: []string{"d1"}, MaxInflight: 5},
			},
			pref:   0,
			spills: 1 + 3 + 5,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := NewRegistry()
			p := admPicker(t, reg, Options{Sites: tc.sites})
			held := fillSite(t, p, tc.pref)
			to := map[string]uint64{}
			for n := 0; ; n++ {
				want := spillTargets(p, tc.pref)
				l, err := pickPreferring(t, p, tc.pref)
				if len(want) == 0 {
					if !errors.Is(err, ErrSaturated) {
						t.Fatalf("spill %d: every site full: %v (site %d), want ErrSaturated", n, err, l.SiteIndex)
					}
					if n != tc.spills {
						t.Errorf("%d requests spilled, want %d", n, tc.spills)
					}
					break
				}
				if err != nil {
					t.Fatalf("spill %d: %v, want one of sites %v", n, err, want)
				}
				held = append(held, l)
				if !slices.Contains(want, l.SiteIndex) {
					t.Fatalf("spill %d went to site %d, want one of %v (status %+v)", n, l.SiteIndex, want, p.Status())
				}
				if l.Preferred != tc.pref || l.Spill == SpillNone || l.Site != p.Sites()[l.SiteIndex] {
					t.Fatalf("spill %d: lease says site %d preferred %d spill %q", n, l.SiteIndex, l.Preferred, l.Spill)
				}
				if n == 0 && l.Spill != SpillSaturated {
					t.Errorf("first spill from a full site: reason %q, want saturated", l.Spill)
				}
				to[l.Site.Name]++
			}
			// The counters agree with the leases, whatever the reason.
			got := map[string]uint64{}
			for k, n := range spillCounts(reg) {
				if k.from != tc.sites[tc.pref].Name {
					t.Errorf("spill counted from %s, only %s spilled", k.from, tc.sites[tc.pref].Name)
				}
				got[k.to] += n
			}
			if fmt.Sprint(got) != fmt.Sprint(to) {
				t.Errorf("Spills() by destination %v, leases %v", got, to)
			}
			for i, so := range tc.sites {
				if so.Weight == 0 && !so.Elastic {
					if n := p.Sites()[i].Inflight(); n != 0 {
						t.Errorf("weight-0 non-elastic site %s took %d requests", so.Name, n)
					}
				}
			}
			doneAll(held)
			assertIdle(t, reg)
		})
	}
}

// TestSpillReasons: a request spills "saturated" when its preferred site has no free slot,
// and "hysteresis" only when the site has a slot but is holding back after filling up.
func TestSpillReasons(t *testing.T) {
	tests := []struct {
		name   string
		resume float64
	}{
		{"no hysteresis", 1},
		{"resume 0.5", 0.5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := NewRegistry()
			p := admPicker(t, reg, Options{Resume: tc.resume, Sites: []SiteOptions{
				{Name: "home", Weight: 1, Backends: []string{"h1"}, MaxInflight: 4},
				{Name: "aws", Elastic: true, Backends: []string{"e1"}, MaxInflight: 100},
			}})
			held := fillSite(t, p, 0)
			// home is full: every request that prefers it now finds no free slot there.
			for n := range 3 {
				l := new(Lease)
				if err := p.Picker().Pick(l, 0); err != nil {
					t.Fatal(err)
				}
				if l.SiteIndex != 1 || l.Spill != SpillSaturated {
					t.Errorf("spill %d while home has no free slot: site %d reason %q, want aws saturated",
						n, l.SiteIndex, l.Spill)
				}
				l.Done(Result{})
			}
			if got := spillCounts(reg); got[spillKeyReason{"home", "aws", SpillHysteresis}] != 0 {
				t.Errorf("Spills() %v: hysteresis counted while home had no free slot", got)
			}
			doneAll(held)
		})
	}
}

// --- 3. Hysteresis ------------------------------------------------------------------------

func TestHysteresis(t *testing.T) {
	// home's limit is 4 (two backends of 2); aws is a roomy burst-only pool.
	opts := func(resume float64) Options {
		return Options{Resume: resume, Sites: []SiteOptions{
			{Name: "home", Weight: 1, Backends: []string{"h1", "h2"}, MaxInflight: 2},
			{Name: "aws", Elastic: true, Backends: []string{"e1"}, MaxInflight: 100},
		}}
	}
	tests := []struct {
		name   string
		resume float64
		// backAt is home's in-flight count below which requests return to it.
		backAt int
	}{
		{"resume 0.5", 0.5, 2},
		{"resume 1", 1, 4},
		{"resume 0 means 1", 0, 4},
		{"resume above 1 means 1", 1.5, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := NewRegistry()
			p := admPicker(t, reg, opts(tc.resume))
			home := p.Sites()[0]
			held := fillSite(t, p, 0)
			l := new(Lease)
			if err := p.Picker().Pick(l, 0); err != nil || l.SiteIndex != 1 || l.Spill != SpillSaturated || l.Preferred != 0 {
				t.Fatalf("home full: %v site %d preferred %d spill %q, want aws/saturated", err, l.SiteIndex, l.Preferred, l.Spill)
			}
			l.Done(Result{})
			if !home.Spilling() || !p.Status()[0].Spilling {
				t.Fatal("home filled up but is not spilling")
			}
			for len(held) > 0 {
				held[0].Done(Result{})
				held = held[1:]
				inflight := int(home.Inflight())
				l := new(Lease)
				if err := p.Picker().Pick(l, 0); err != nil {
					t.Fatalf("home at %d: %v", inflight, err)
				}
				if inflight < tc.backAt {
					if l.SiteIndex != 0 || l.Spill != SpillNone || home.Spilling() {
						t.Fatalf("home at %d of 4: site %d spill %q spilling %v, want home again",
							inflight, l.SiteIndex, l.Spill, home.Spilling())
					}
					l.Done(Result{})
					break
				}
				if l.SiteIndex != 1 || l.Preferred != 0 || l.Spill != SpillHysteresis {
					t.Fatalf("home at %d of 4 (resume %v): site %d preferred %d spill %q, want aws/hysteresis",
						inflight, tc.resume, l.SiteIndex, l.Preferred, l.Spill)
				}
				l.Done(Result{})
			}
			if tc.backAt < 4 {
				want := spillKeyReason{"home", "aws", SpillHysteresis}
				if n := spillCounts(reg)[want]; n != uint64(4-tc.backAt) {
					t.Errorf("Spills()[%v] = %d, want %d", want, n, 4-tc.backAt)
				}
			}
			doneAll(held)
			assertIdle(t, reg)
		})
	}
}

// TestHysteresisNeverRefusesAFreeSlot: a site that holds back still takes requests when no
// other site has room (the last-resort pass), its own preferred ones included.
func TestHysteresisNeverRefusesAFreeSlot(t *testing.T) {
	t.Run("preferred site's own slot", func(t *testing.T) {
		reg := NewRegistry()
		p := admPicker(t, reg, Options{Resume: 0.5, Sites: []SiteOptions{
			{Name: "home", Weight: 1, Backends: []string{"h1"}, MaxInflight: 4},
			{Name: "aws", Elastic: true, Backends: []string{"e1"}, MaxInflight: 1},
		}})
		home := fillSite(t, p, 0)
		l := new(Lease)
		if err := p.Picker().Pick(l, 0); err != nil || l.SiteIndex != 1 {
			t.Fatalf("home full: %v, site %d; want aws", err, l.SiteIndex)
		}
		aws := l
		if err := p.Picker().Pick(new(Lease), 0); !errors.Is(err, ErrSaturated) {
			t.Fatalf("everything full: %v, want ErrSaturated", err)
		}
		home[0].Done(Result{}) // home at 3 of 4: held back, but the only free slot
		l = new(Lease)
		if err := p.Picker().Pick(l, 0); err != nil {
			t.Fatalf("home held back with a free slot, nothing else free: %v", err)
		}
		if l.SiteIndex != 0 || l.Preferred != 0 || l.Spill != SpillNone {
			t.Errorf("last resort: site %d preferred %d spill %q, want home/none", l.SiteIndex, l.Preferred, l.Spill)
		}
		if !p.Sites()[0].Spilling() {
			t.Error("the last-resort pass ended home's hysteresis")
		}
		if err := p.Picker().Pick(new(Lease), 0); !errors.Is(err, ErrSaturated) {
			t.Fatalf("full again: %v, want ErrSaturated", err)
		}
		doneAll(append(home[1:], aws, l))
		assertIdle(t, reg)
	})
	t.Run("another site held back", func(t *testing.T) {
		reg := NewRegistry()
		p := admPicker(t, reg, Options{Resume: 0.5, Sites: []SiteOptions{
			{Name: "home", Weight: 1, Backends: []string{"h1"}, MaxInflight: 2},
			{Name: "idc2", Weight: 1, Backends: []string{"i1"}, MaxInflight: 2},
		}})
		idc2 := fillSite(t, p, 1)
		l, err := pickPreferring(t, p, 1) // idc2 full: spills to home and starts holding back
		if err != nil || l.SiteIndex != 0 || !p.Sites()[1].Spilling() {
			t.Fatalf("idc2 full: %v site %d spilling %v", err, l.SiteIndex, p.Sites()[1].Spilling())
		}
		homeLeases := []*Lease{l}
		idc2[0].Done(Result{}) // idc2 at 1 of 2: still held back (needs < 1)
		idc2 = idc2[1:]
		l, err = pickPreferring(t, p, 0)
		if err != nil || l.SiteIndex != 0 {
			t.Fatalf("home has room: %v site %d", err, l.SiteIndex)
		}
		homeLeases = append(homeLeases, l)
		l, err = pickPreferring(t, p, 0) // home full; idc2 held back but has a slot
		if err != nil {
			t.Fatalf("idc2 has a free slot: %v", err)
		}
		if l.SiteIndex != 1 || l.Preferred != 0 || l.Spill != SpillSaturated {
			t.Errorf("last resort: site %d preferred %d spill %q, want idc2/saturated", l.SiteIndex, l.Preferred, l.Spill)
		}
		doneAll(append(append(idc2, homeLeases...), l))
		assertIdle(t, reg)
	})
}

// --- 4. Queue -----------------------------------------------------------------------------

type admitResult struct {
	l   *Lease
	err error
}

// admitAsync runs Admit in a goroutine; its result arrives on the returned channel.
func admitAsync(ctx context.Context, p *Balancer, key uint64) <-chan admitResult {
	ch := make(chan admitResult, 1)
	go func() {
		l := new(Lease)
		err := p.Picker().Admit(ctx, l, key)
		ch <- admitResult{l, err}
	}()
	return ch
}

func recvNow(ch <-chan admitResult) (admitResult, bool) {
	select {
	case r := <-ch:
		return r, true
	default:
		return admitResult{}, false
	}
}

// queueOpts is one site of one backend with limit n.
func queueOpts(n, size int, timeout time.Duration) Options {
	return Options{QueueSize: size, QueueTimeout: timeout, Sites: []SiteOptions{
		{Name: "s", Weight: 1, Backends: []string{"s1"}, MaxInflight: n},
	}}
}

func TestAdmitQueue(t *testing.T) {
	t.Run("FIFO", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			reg := NewRegistry()
			p := admPicker(t, reg, queueOpts(1, 10, 0))
			first := new(Lease)
			if err := p.Picker().Admit(t.Context(), first, 0); err != nil || first.Queued != 0 {
				t.Fatalf("free slot: %v, queued %v", err, first.Queued)
			}
			const n = 5
			waiters := make([]<-chan admitResult, n)
			for i := range n {
				waiters[i] = admitAsync(t.Context(), p, 0)
				synctest.Wait()
				if got := reg.QueueLen(); got != i+1 {
					t.Fatalf("after %d waiters QueueLen = %d", i+1, got)
				}
			}
			// Less than the congestion interval (100 ms without a timeout): a queue that
			// has stood longer serves the newest first (see TestAdmitCongestedQueue).
			time.Sleep(50 * time.Millisecond)
			holder := first
			for i := range n {
				holder.Done(Result{})
				synctest.Wait()
				r, ok := recvNow(waiters[i])
				if !ok {
					t.Fatalf("slot freed: waiter %d (the oldest) did not get it", i)
				}
				if r.err != nil {
					t.Fatalf("waiter %d: %v", i, r.err)
				}
				if r.l.Queued != 50*time.Millisecond {
					t.Errorf("waiter %d: Queued %v, want 50ms", i, r.l.Queued)
				}
				for j := i + 1; j < n; j++ {
					if _, ok := recvNow(waiters[j]); ok {
						t.Fatalf("waiter %d returned before older waiter %d had its slot", j, i)
					}
				}
				if got := reg.QueueLen(); got != n-i-1 {
					t.Errorf("QueueLen %d, want %d", got, n-i-1)
				}
				holder = r.l
			}
			holder.Done(Result{})
			assertIdle(t, reg)
		})
	})

	t.Run("blocks until a slot frees", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			reg := NewRegistry()
			p := admPicker(t, reg, Options{QueueSize: 4, Sites: []SiteOptions{
				{Name: "idc1", Weight: 1, Backends: []string{"a1"}, MaxInflight: 1},
				{Name: "aws", Elastic: true, Backends: []string{"e1"}, MaxInflight: 1},
			}})
			a, b := new(Lease), new(Lease)
			if p.Picker().Admit(t.Context(), a, 0) != nil || p.Picker().Admit(t.Context(), b, 0) != nil {
				t.Fatal("free slots refused")
			}
			w := admitAsync(t.Context(), p, 0)
			time.Sleep(time.Hour)
			if _, ok := recvNow(w); ok || reg.QueueLen() != 1 {
				t.Fatalf("all full: Admit returned or is not queued (QueueLen %d)", reg.QueueLen())
			}
			b.Done(Result{}) // frees the elastic site's slot
			synctest.Wait()
			r, ok := recvNow(w)
			if !ok || r.err != nil || r.l.Site.Name != "aws" || r.l.Queued != time.Hour {
				t.Fatalf("slot freed on aws: %+v %v", r, ok)
			}
			doneAll([]*Lease{a, r.l})
			assertIdle(t, reg)
		})
	})

	t.Run("queue full", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			reg := NewRegistry()
			p := admPicker(t, reg, queueOpts(1, 2, 0))
			held := new(Lease)
			if err := p.Picker().Admit(t.Context(), held, 0); err != nil {
				t.Fatal(err)
			}
			w1 := admitAsync(t.Context(), p, 0)
			synctest.Wait()
			w2 := admitAsync(t.Context(), p, 0)
			synctest.Wait()
			err := p.Picker().Admit(t.Context(), new(Lease), 0)
			if !errors.Is(err, ErrQueueFull) || !errors.Is(err, ErrSaturated) {
				t.Fatalf("third waiter with QueueSize 2: %v, want ErrQueueFull matching ErrSaturated", err)
			}
			if reg.QueueLen() != 2 || reg.Sheds()[ShedQueueFull] != 1 {
				t.Fatalf("QueueLen %d, sheds %v", reg.QueueLen(), reg.Sheds())
			}
			held.Done(Result{})
			synctest.Wait()
			r1, ok := recvNow(w1)
			if !ok || r1.err != nil {
				t.Fatalf("first waiter: %+v", r1)
			}
			r1.l.Done(Result{})
			synctest.Wait()
			r2, ok := recvNow(w2)
			if !ok || r2.err != nil {
				t.Fatalf("second waiter: %+v", r2)
			}
			r2.l.Done(Result{})
			assertIdle(t, reg)
		})
	})

	t.Run("queue size 0", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			reg := NewRegistry()
			p := admPicker(t, reg, queueOpts(1, 0, time.Second))
			held := new(Lease)
			if err := p.Picker().Admit(t.Context(), held, 0); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err := p.Picker().Admit(t.Context(), new(Lease), 0)
			if !errors.Is(err, ErrQueueFull) || !errors.Is(err, ErrSaturated) || time.Since(start) != 0 {
				t.Fatalf("no queue: %v after %v, want ErrQueueFull at once", err, time.Since(start))
			}
			if reg.QueueLen() != 0 || reg.Sheds()[ShedQueueFull] != 1 {
				t.Fatalf("QueueLen %d, sheds %v", reg.QueueLen(), reg.Sheds())
			}
			held.Done(Result{})
			assertIdle(t, reg)
		})
	})

	t.Run("timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			reg := NewRegistry()
			p := admPicker(t, reg, queueOpts(1, 4, 250*time.Millisecond))
			held := new(Lease)
			if err := p.Picker().Admit(t.Context(), held, 0); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err := p.Picker().Admit(t.Context(), new(Lease), 0)
			if !errors.Is(err, ErrQueueTimeout) || !errors.Is(err, ErrSaturated) {
				t.Fatalf("waited without a slot: %v, want ErrQueueTimeout matching ErrSaturated", err)
			}
			if d := time.Since(start); d != 250*time.Millisecond {
				t.Errorf("timed out after %v, want 250ms", d)
			}
			if reg.QueueLen() != 0 || reg.Sheds()[ShedQueueTimeout] != 1 {
				t.Fatalf("QueueLen %d, sheds %v", reg.QueueLen(), reg.Sheds())
			}
			held.Done(Result{})
			l := new(Lease)
			if err := p.Picker().Admit(t.Context(), l, 0); err != nil {
				t.Fatalf("after the timeout, a free slot: %v", err)
			}
			l.Done(Result{})
			assertIdle(t, reg)
		})
	})

	t.Run("context", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			reg := NewRegistry()
			p := admPicker(t, reg, queueOpts(1, 4, time.Hour))
			held := new(Lease)
			if err := p.Picker().Admit(t.Context(), held, 0); err != nil {
				t.Fatal(err)
			}
			ctx1, cancel1 := context.WithCancel(t.Context())
			w1 := admitAsync(ctx1, p, 0)
			synctest.Wait()
			ctx2, cancel2 := context.WithTimeout(t.Context(), time.Minute)
			defer cancel2()
			w2 := admitAsync(ctx2, p, 0)
			synctest.Wait()
			w3 := admitAsync(t.Context(), p, 0)
			synctest.Wait()
			if reg.QueueLen() != 3 {
				t.Fatalf("QueueLen %d, want 3", reg.QueueLen())
			}
			start := time.Now()
			cancel1() // the oldest leaves
			synctest.Wait()
			r, ok := recvNow(w1)
			if !ok || !errors.Is(r.err, context.Canceled) || time.Since(start) != 0 {
				t.Fatalf("cancelled waiter: %+v returned=%v after %v", r, ok, time.Since(start))
			}
			if reg.QueueLen() != 2 {
				t.Fatalf("QueueLen %d after a cancel, want 2", reg.QueueLen())
			}
			time.Sleep(time.Minute) // the second one's deadline passes
			synctest.Wait()
			r, ok = recvNow(w2)
			if !ok || !errors.Is(r.err, context.DeadlineExceeded) {
				t.Fatalf("waiter past its deadline: %+v returned=%v", r, ok)
			}
			if reg.QueueLen() != 1 || reg.Sheds()[ShedClientGone] != 2 {
				t.Fatalf("QueueLen %d sheds %v, want 1 queued and 2 client_gone", reg.QueueLen(), reg.Sheds())
			}
			held.Done(Result{}) // the slot goes to the one left
			synctest.Wait()
			r, ok = recvNow(w3)
			if !ok || r.err != nil {
				t.Fatalf("remaining waiter after cancels: %+v returned=%v", r, ok)
			}
			r.l.Done(Result{})
			assertIdle(t, reg)
		})
	})

	t.Run("new arrival queues behind waiters", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			reg := NewRegistry()
			p := admPicker(t, reg, queueOpts(1, 4, 0))
			held := new(Lease)
			if err := p.Picker().Admit(t.Context(), held, 0); err != nil {
				t.Fatal(err)
			}
			old := admitAsync(t.Context(), p, 0)
			synctest.Wait()
			held.Done(Result{}) // the slot is the old waiter's, even if it has not run yet
			late := admitAsync(t.Context(), p, 0)
			synctest.Wait()
			r, ok := recvNow(old)
			if !ok || r.err != nil {
				t.Fatalf("old waiter: %+v returned=%v", r, ok)
			}
			if _, ok := recvNow(late); ok {
				t.Fatal("a new arrival took the slot freed for the waiter ahead of it")
			}
			r.l.Done(Result{})
			synctest.Wait()
			r, ok = recvNow(late)
			if !ok || r.err != nil {
				t.Fatalf("late arrival: %+v returned=%v", r, ok)
			}
			r.l.Done(Result{})
			assertIdle(t, reg)
		})
	})

	t.Run("no backend", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			reg := NewRegistry()
			p := admPicker(t, reg, queueOpts(1, 4, time.Second))
			reg.SetUp("s", "s1", false)
			if err := p.Picker().Admit(t.Context(), new(Lease), 0); !errors.Is(err, ErrNoBackend) {
				t.Fatalf("nothing up: %v, want ErrNoBackend", err)
			}
			if reg.QueueLen() != 0 {
				t.Fatalf("QueueLen %d", reg.QueueLen())
			}
			for r, n := range reg.Sheds() {
				if n != 0 {
					t.Errorf("ErrNoBackend counted as shed %s", r)
				}
			}
		})
	})
}

// TestAdmitCapacityGrowthWakesWaiters: waiters get slots that appear without any request
// finishing: new members, a backend back up or back from ejection.
func TestAdmitCapacityGrowthWakesWaiters(t *testing.T) {
	tests := []struct {
		name  string
		setup func(reg *Registry, p *Balancer) // before the waiters queue
		grow  func(t *testing.T, reg *Registry, p *Balancer)
		slots int // slots the growth adds
	}{
		{
			name: "SetMembers",
			grow: func(t *testing.T, reg *Registry, p *Balancer) {
				if _, err := p.SetMembers("aws", []string{"e1", "e2"}, true); err != nil {
					t.Fatal(err)
				}
			},
			slots: 2,
		},
		{
			name:  "SetUp",
			setup: func(reg *Registry, p *Balancer) { reg.SetUp("idc1", "a2", false) },
			grow:  func(t *testing.T, reg *Registry, p *Balancer) { reg.SetUp("idc1", "a2", true) },
			slots: 2,
		},
		{
			name:  "SetEjected",
			setup: func(reg *Registry, p *Balancer) { reg.SetEjected("aws", "e1", true) },
			grow:  func(t *testing.T, reg *Registry, p *Balancer) { reg.SetEjected("aws", "e1", false) },
			slots: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				reg := NewRegistry()
				p := admPicker(t, reg, Options{QueueSize: 10, Sites: []SiteOptions{
					{Name: "idc1", Weight: 1, Backends: []string{"a1", "a2"}, MaxInflight: 2},
					{Name: "aws", Elastic: true, Backends: []string{"e1"}, MaxInflight: 2},
				}})
				if tc.setup != nil {
					tc.setup(reg, p)
				}
				var held []*Lease
				for {
					l := new(Lease)
					if p.Picker().Pick(l, 0) != nil {
						break
					}
					held = append(held, l)
				}
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				waiters := make([]<-chan admitResult, tc.slots+1)
				for i := range waiters {
					waiters[i] = admitAsync(ctx, p, 0)
					synctest.Wait()
				}
				tc.grow(t, reg, p)
				synctest.Wait()
				for i, w := range waiters {
					r, ok := recvNow(w)
					if i < tc.slots {
						if !ok || r.err != nil {
							t.Fatalf("waiter %d of %d after %d new slots: %+v returned=%v", i, len(waiters), tc.slots, r, ok)
						}
						held = append(held, r.l)
					} else if ok {
						t.Fatalf("waiter %d got a slot beyond the new capacity: %+v", i, r)
					}
				}
				if reg.QueueLen() != 1 {
					t.Fatalf("QueueLen %d, want 1", reg.QueueLen())
				}
				cancel()
				synctest.Wait()
				if r, ok := recvNow(waiters[tc.slots]); !ok || !errors.Is(r.err, context.Canceled) {
					t.Fatalf("last waiter: %+v returned=%v", r, ok)
				}
				doneAll(held)
				assertIdle(t, reg)
			})
		})
	}
}

// TestAdmitLeavingWaiterPassesOnItsWakeUp: a waiter that leaves (client gone, timeout) must
// pass on a wake-up it received and did not use, or a freed slot stays idle while the next
// waiter waits. The window: the oldest waiter's first look for a slot (Admit, try :=
// q.isHead(w)) fails, a slot frees during that look (Lease.Done → wake signals it), and the
// client goes away; the waiter's select sees both and may take ctx.Done.
func TestAdmitLeavingWaiterPassesOnItsWakeUp(t *testing.T) {
	cancelled := 0
	for iter := 0; iter < 200 && cancelled < 20; iter++ {
		synctest.Test(t, func(t *testing.T) {
			reg := NewRegistry()
			var hook atomic.Pointer[func()]
			reg.now = func() time.Time {
				if f := hook.Load(); f != nil && reg.QueueLen() == 1 && hook.CompareAndSwap(f, nil) {
					(*f)()
				}
				return time.Now()
			}
			p := admPicker(t, reg, Options{QueueSize: 4, Sites: []SiteOptions{
				{Name: "home", Weight: 1, Backends: []string{"h1"}, MaxInflight: 1},
				{Name: "aws", Elastic: true, MaxInflight: 1, SlowStart: time.Hour},
			}})
			// e1 joins after the first Picker, so it ramps and its limit reads the clock: the
			// hook runs inside the waiter's first look, after home was found full.
			if _, err := p.SetMembers("aws", []string{"e1"}, true); err != nil {
				t.Fatal(err)
			}
			home, aws := new(Lease), new(Lease)
			if p.Picker().Pick(home, 0) != nil || p.Picker().Pick(aws, 0) != nil || home.Site.Name != "home" || aws.Site.Name != "aws" {
				t.Fatal("setup: could not fill home and aws")
			}
			ctx1, cancel1 := context.WithCancel(t.Context())
			defer cancel1()
			ctx2, cancel2 := context.WithCancel(t.Context())
			defer cancel2()
			var w2 <-chan admitResult
			f := func() {
				w2 = admitAsync(ctx2, p, 0) // queues behind the first waiter
				synctest.Wait()
				home.Done(Result{}) // a slot frees during the first waiter's look
				cancel1()           // and its client goes away
			}
			hook.Store(&f)
			r1 := <-admitAsync(ctx1, p, 0)
			synctest.Wait()
			if w2 == nil {
				t.Fatal("the hook did not run during the first waiter's look")
			}
			if r1.err == nil {
				r1.l.Done(Result{}) // it took the slot: nothing to check this time
				synctest.Wait()
				if r, ok := recvNow(w2); ok {
					r.l.Done(Result{})
				}
			} else {
				cancelled++
				r2, ok := recvNow(w2)
				if !ok {
					t.Errorf("first waiter left (%v) with home's slot free (in flight %d): the second waiter "+
						"(QueueLen %d) was never woken", r1.err, p.Sites()[0].Inflight(), reg.QueueLen())
				} else if r2.err != nil {
					t.Errorf("second waiter: %v", r2.err)
				} else {
					r2.l.Done(Result{})
				}
			}
			cancel2()
			synctest.Wait()
			aws.Done(Result{})
		})
		if t.Failed() {
			return
		}
	}
	// A waiter woken during its own look looks again (waitQueue.unsignal), so it usually
	// takes the slot itself rather than leave with the wake-up: both outcomes are checked.
	t.Logf("the first waiter left by its context in %d runs and took the slot in the others", cancelled)
}

// TestAdmitWithoutSplitSpillsFromNowhere: when only burst-only elastic sites are up there is
// no preferred site (Lease.Preferred -1, as Pick reports). A request that queues must not be
// treated as preferring site 0: it must not take a slot on a weight-0 non-elastic site nor
// count a spill from a site that is down.
func TestAdmitWithoutSplitSpillsFromNowhere(t *testing.T) {
	t.Run("weight-0 non-elastic site first", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			reg := NewRegistry()
			p := admPicker(t, reg, Options{QueueSize: 4, Sites: []SiteOptions{
				{Name: "dr", Backends: []string{"d1"}, MaxInflight: 5},
				{Name: "idc", Weight: 1, Backends: []string{"i1"}, MaxInflight: 5},
				{Name: "aws", Elastic: true, Backends: []string{"e1"}, MaxInflight: 1},
			}})
			reg.SetUp("idc", "i1", false)
			held := new(Lease)
			if err := p.Picker().Pick(held, 0); err != nil || held.Site.Name != "aws" || held.Preferred != -1 {
				t.Fatalf("only aws up: %v site %v preferred %d", err, held.Site, held.Preferred)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			w := admitAsync(ctx, p, 0)
			synctest.Wait()
			if r, ok := recvNow(w); ok {
				if r.err == nil {
					t.Errorf("aws full: Admit took a slot on %s (preferred %d); weight-0 site dr must never receive requests",
						r.l.Site.Name, r.l.Preferred)
					r.l.Done(Result{})
				} else {
					t.Errorf("aws full: %v, want to wait", r.err)
				}
			} else {
				held.Done(Result{})
				synctest.Wait()
				r, ok := recvNow(w)
				if !ok || r.err != nil || r.l.Site.Name != "aws" {
					t.Fatalf("aws freed: %+v returned=%v", r, ok)
				}
				held = r.l
			}
			cancel()
			held.Done(Result{})
			assertIdle(t, reg)
		})
	})
	t.Run("down site first", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			reg := NewRegistry()
			p := admPicker(t, reg, Options{QueueSize: 4, Sites: []SiteOptions{
				{Name: "idc", Weight: 1, Backends: []string{"i1"}, MaxInflight: 5},
				{Name: "aws", Elastic: true, Backends: []string{"e1"}, MaxInflight: 1},
			}})
			reg.SetUp("idc", "i1", false)
			held := new(Lease)
			if err := p.Picker().Pick(held, 0); err != nil || held.Site.Name != "aws" {
				t.Fatalf("only aws up: %v", err)
			}
			w := admitAsync(t.Context(), p, 0)
			synctest.Wait()
			held.Done(Result{})
			synctest.Wait()
			r, ok := recvNow(w)
			if !ok || r.err != nil {
				t.Fatalf("aws freed: %+v returned=%v", r, ok)
			}
			if r.l.Preferred != -1 || r.l.Spill != SpillNone {
				t.Errorf("queued with no split: preferred %d spill %q, want -1 and none (as Pick)", r.l.Preferred, r.l.Spill)
			}
			if s := spillCounts(reg); len(s) != 0 {
				t.Errorf("Spills() %v: a spill counted from a site that is down and preferred nothing", s)
			}
			r.l.Done(Result{})
			assertIdle(t, reg)
		})
	})
}

// --- 5. No slot leaks -------------------------------------------------------------------

// TestAdmissionNoSlotLeaks hammers Admit, Pick and PickRetry with random holds, context
// cancellations and short queue timeouts while health flaps and the elastic pool changes
// members. At the end nothing is held or queued anywhere, and no backend ever went above
// its limit.
func TestAdmissionNoSlotLeaks(t *testing.T) {
	total := int64(100_000)
	if testing.Short() {
		total = 20_000
	}
	const workers = 32
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	reg := NewRegistry()
	pool := []string{"c1", "c2", "c3", "c4", "c5", "c6"}
	// Every backend the test may list exists before the tracker is made.
	for _, a := range pool {
		reg.Backend(BackendID{"aws", a})
	}
	p := admPicker(t, reg, Options{Resume: 0.8, QueueSize: 24, QueueTimeout: time.Millisecond, Sites: []SiteOptions{
		{Name: "idc1", Weight: 5, Backends: []string{"a1", "a2", "a3"}, MaxInflight: 6},
		{Name: "idc2", Weight: 3, Backends: []string{"b1", "b2"}, MaxInflight: 4},
		{Name: "aws", Weight: 2, Elastic: true, Backends: pool[:2], MaxInflight: 3},
		{Name: "dr", Backends: []string{"d1"}, MaxInflight: 4},
	}})
	tr := newMaxTracker(reg, map[string]int64{"idc1": 6, "idc2": 4, "aws": 3, "dr": 0})
	keys := []uint64{0, 0, 0, HashKey("session-1"), HashKey("session-2"), HashKey("session-3")}
	flappable := []BackendID{{"idc1", "a2"}, {"idc1", "a3"}, {"idc2", "b1"}, {"idc2", "b2"}}
	for _, a := range pool {
		flappable = append(flappable, BackendID{"aws", a})
	}

	var (
		next    atomic.Int64
		queued  atomic.Int64
		outcome sync.Map // error text → *atomic.Int64
	)
	count := func(err error) {
		k := "ok"
		if err != nil {
			k = err.Error()
		}
		c, _ := outcome.LoadOrStore(k, new(atomic.Int64))
		c.(*atomic.Int64).Add(1)
	}
	ctx, stop := context.WithCancel(t.Context())
	var control sync.WaitGroup
	control.Go(func() { // the control plane: flaps and membership changes
		r := rand.New(rand.NewPCG(seed, 0))
		tick := time.NewTicker(50 * time.Microsecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			switch r.IntN(3) {
			case 0:
				id := flappable[r.IntN(len(flappable))]
				reg.SetUp(id.Site, id.Addr, r.IntN(2) == 0)
			case 1:
				id := flappable[r.IntN(len(flappable))]
				reg.SetEjected(id.Site, id.Addr, r.IntN(3) == 0)
			case 2:
				m := slices.Clone(pool)
				r.Shuffle(len(m), func(i, j int) { m[i], m[j] = m[j], m[i] })
				if _, err := p.SetMembers("aws", m[:r.IntN(len(m)+1)], true); err != nil {
					t.Error(err)
				}
			}
		}
	})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(seed, uint64(w)+1))
			var held []*Lease
			release := func(k int) {
				held[k].Done(Result{Latency: time.Duration(1+r.IntN(1000)) * time.Microsecond})
				held = slices.Delete(held, k, k+1)
			}
			for next.Add(1) <= total {
				if len(held) > 0 && r.IntN(3) == 0 {
					release(r.IntN(len(held)))
				}
				rctx, cancel := context.Background(), context.CancelFunc(func() {})
				switch x := r.IntN(100); {
				case x < 5:
					rctx, cancel = context.WithCancel(rctx)
					cancel()
				case x < 15:
					rctx, cancel = context.WithTimeout(rctx, time.Duration(r.IntN(300))*time.Microsecond)
				}
				l := new(Lease)
				var err error
				switch x := r.IntN(100); {
				case x < 85:
					err = p.Picker().Admit(rctx, l, keys[r.IntN(len(keys))])
				case x < 95:
					err = p.Picker().Pick(l, keys[r.IntN(len(keys))])
				default:
					bs := p.Backends()
					prev := bs[r.IntN(len(bs))]
					err = p.Picker().PickRetry(l, p.siteIndex(prev.ID.Site), prev)
				}
				cancel()
				count(err)
				if err != nil {
					if !errors.Is(err, ErrSaturated) && !errors.Is(err, context.Canceled) &&
						!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrNoBackend) {
						t.Errorf("unexpected error %v", err)
					}
					if l.Done(Result{}) {
						t.Error("Done of a lease that Pick refused released something")
					}
					continue
				}
				tr.observe(t, l)
				if l.Queued > 0 {
					queued.Add(1)
				}
				switch x := r.IntN(100); {
				case x < 70:
					l.Done(Result{Status: 200})
				case x < 85:
					held = append(held, l)
					if len(held) > 1 {
						release(r.IntN(len(held)))
					}
				default:
					runtime.Gosched()
					l.Done(Result{Status: 200})
					if l.Done(Result{}) {
						t.Error("second Done released again")
					}
				}
			}
			for len(held) > 0 {
				release(0)
			}
		})
	}
	wg.Wait()
	stop()
	control.Wait()
	tr.check(t)
	assertIdle(t, reg)
	if n := p.Sites()[3].Inflight(); n != 0 {
		t.Errorf("dr took %d", n)
	}
	var summary []string
	outcome.Range(func(k, v any) bool {
		summary = append(summary, fmt.Sprintf("%s: %d", k, v.(*atomic.Int64).Load()))
		return true
	})
	slices.Sort(summary)
	t.Logf("outcomes %v; %d waited in the queue; sheds %v; pending wakes %d", summary, queued.Load(), reg.Sheds(), reg.queue.pending)
	if queued.Load() == 0 {
		t.Error("no request ever waited in the queue: the test did not saturate")
	}
}

// --- 6. Slow start ------------------------------------------------------------------------

func TestSlowStart(t *testing.T) {
	const ramp = 10 * time.Second
	for _, max := range []int{1, 4, 10, 20, 30, 100, 256} {
		t.Run(fmt.Sprintf("max_inflight=%d", max), func(t *testing.T) {
			atJoin := int64(max+9) / 10 // ceil(10%)
			half := 0.55 * float64(max)
			reg := NewRegistry()
			clk := newFakeClock()
			reg.now = clk.now
			p := admPicker(t, reg, Options{Sites: []SiteOptions{
				{Name: "aws", Weight: 1, Elastic: true, Backends: []string{"c1"}, MaxInflight: max, SlowStart: ramp},
			}})
			backend := func(addr string) BackendStatus {
				t.Helper()
				for _, b := range p.Status()[0].Backends {
					if b.Addr == addr {
						return b
					}
				}
				t.Fatalf("no backend %s in Status", addr)
				return BackendStatus{}
			}
			if b := backend("c1"); b.Ramp != 1 || b.Limit != int64(max) {
				t.Fatalf("first config's member: ramp %v limit %d, want 1 and %d", b.Ramp, b.Limit, max)
			}
			if _, err := p.SetMembers("aws", []string{"c1", "c2"}, true); err != nil {
				t.Fatal(err)
			}
			if b := backend("c2"); b.Ramp != slowStartFloor || b.Limit != atJoin {
				t.Errorf("at join: ramp %v limit %d, want %v and %d", b.Ramp, b.Limit, slowStartFloor, atJoin)
			}
			if got := p.Status()[0].Limit; got != int64(max)+atJoin {
				t.Errorf("site limit at join %d, want %d", got, int64(max)+atJoin)
			}
			// The ramped limit is what admission honours: fill the site, then count.
			var held []*Lease
			for {
				l := new(Lease)
				if p.Picker().Pick(l, 0) != nil {
					break
				}
				held = append(held, l)
			}
			if c1, c2 := backend("c1").Inflight, backend("c2").Inflight; c1 != int64(max) || c2 != atJoin {
				t.Errorf("full at join: c1 %d c2 %d in flight, want %d and %d", c1, c2, max, atJoin)
			}
			doneAll(held)

			clk.advance(ramp / 2)
			b := backend("c2")
			if math.Abs(b.Ramp-0.55) > 1e-9 || math.Abs(float64(b.Limit)-half) > 1 || b.Limit < 1 {
				t.Errorf("half-way: ramp %v limit %d, want 0.55 and about %.2f", b.Ramp, b.Limit, half)
			}
			if got, want := p.Status()[0].Limit, int64(max)+b.Limit; got != want {
				t.Errorf("site limit half-way %d, want %d", got, want)
			}
			clk.advance(ramp / 2)
			if b := backend("c2"); b.Ramp != 1 || b.Limit != int64(max) {
				t.Errorf("after SlowStart: ramp %v limit %d, want 1 and %d", b.Ramp, b.Limit, max)
			}
			if got := p.Status()[0].Limit; got != 2*int64(max) {
				t.Errorf("site limit after the ramp %d, want %d", got, 2*max)
			}

			// A third member grows the site's limit by its floor at once.
			if _, err := p.SetMembers("aws", []string{"c1", "c2", "c3"}, true); err != nil {
				t.Fatal(err)
			}
			if got := p.Status()[0].Limit; got != 2*int64(max)+atJoin {
				t.Errorf("site limit after c3 joined %d, want %d", got, 2*int64(max)+atJoin)
			}

			// Down and up again, or ejected and back: the ramp starts over.
			for _, flap := range []struct {
				name    string
				out, in func()
			}{
				{"down/up", func() { reg.SetUp("aws", "c1", false) }, func() { reg.SetUp("aws", "c1", true) }},
				{"ejected/back", func() { reg.SetEjected("aws", "c1", true) }, func() { reg.SetEjected("aws", "c1", false) }},
			} {
				flap.out()
				clk.advance(time.Minute)
				flap.in()
				if b := backend("c1"); b.Ramp != slowStartFloor || b.Limit != atJoin {
					t.Errorf("%s: ramp %v limit %d, want %v and %d", flap.name, b.Ramp, b.Limit, slowStartFloor, atJoin)
				}
				clk.advance(ramp)
				if b := backend("c1"); b.Ramp != 1 || b.Limit != int64(max) {
					t.Errorf("%s then SlowStart: ramp %v limit %d, want 1 and %d", flap.name, b.Ramp, b.Limit, max)
				}
			}
			assertIdle(t, reg)
		})
	}
}

// TestSlowStartOnReload: a Picker built for a new config (a reload) ramps the backends it
// adds, not those the registry already had.
func TestSlowStartOnReload(t *testing.T) {
	reg := NewRegistry()
	clk := newFakeClock()
	reg.now = clk.now
	site := func(addrs ...string) Options {
		return Options{Sites: []SiteOptions{{Name: "s", Weight: 1, Backends: addrs, MaxInflight: 50, SlowStart: time.Minute}}}
	}
	p1 := admPicker(t, reg, site("s1"))
	p2 := admPicker(t, reg, site("s1", "s2"))
	p1.Close()
	got := map[string]int64{}
	for _, b := range p2.Status()[0].Backends {
		got[b.Addr] = b.Limit
	}
	if got["s1"] != 50 || got["s2"] != 5 {
		t.Fatalf("limits after the reload %v, want s1 50 (kept) and s2 5 (ramping)", got)
	}
}

// --- 7. Health ----------------------------------------------------------------------------

func TestDownAndEjectedBackendsAreNotPicked(t *testing.T) {
	reg := NewRegistry()
	p := admPicker(t, reg, Options{Sites: []SiteOptions{
		{Name: "idc1", Weight: 5, Backends: []string{"a1", "a2"}, MaxInflight: 100},
		{Name: "idc2", Weight: 3, Backends: []string{"b1", "b2"}, MaxInflight: 100},
		{Name: "aws", Weight: 2, Elastic: true, Backends: []string{"c1", "c2"}, MaxInflight: 100},
	}})
	reg.SetUp("idc1", "a2", false)
	reg.SetEjected("aws", "c1", true)
	out := map[string]bool{"a2": true, "c1": true}
	var held []*Lease
	for range 250 { // holding them all spreads picks over every backend
		l := new(Lease)
		if err := p.Picker().Pick(l, 0); err != nil {
			t.Fatal(err)
		}
		if out[l.Backend.ID.Addr] {
			t.Fatalf("picked %s, which is out of rotation", l.Backend.ID)
		}
		held = append(held, l)
	}
	doneAll(held)

	t.Run("site with every backend down has weight 0", func(t *testing.T) {
		reg.SetUp("idc2", "b1", false)
		reg.SetEjected("idc2", "b2", true)
		if w := p.Picker().plan.weights; w[1] != 0 {
			t.Fatalf("split weights %v, want idc2 at 0", w)
		}
		var sites []int
		for range 70 {
			l := new(Lease)
			if err := p.Picker().Pick(l, 0); err != nil {
				t.Fatal(err)
			}
			if l.Spill != SpillNone {
				t.Fatalf("spill with room everywhere: %q", l.Spill)
			}
			sites = append(sites, l.SiteIndex)
			l.Done(Result{})
		}
		// 5:2 over every window of 7.
		for start := 0; start+7 <= len(sites); start++ {
			var n [3]int
			for _, s := range sites[start : start+7] {
				n[s]++
			}
			if n != [3]int{5, 0, 2} {
				t.Fatalf("window at %d holds %v, want [5 0 2]", start, n)
			}
		}
	})

	t.Run("nothing up", func(t *testing.T) {
		for _, a := range []string{"a1", "a2"} {
			reg.SetUp("idc1", a, false)
		}
		reg.SetUp("aws", "c2", false)
		if err := p.Picker().Pick(new(Lease), 0); !errors.Is(err, ErrNoBackend) {
			t.Errorf("Pick: %v, want ErrNoBackend", err)
		}
		if err := p.Picker().Pick(new(Lease), HashKey("session-1")); !errors.Is(err, ErrNoBackend) {
			t.Errorf("Pick with key: %v, want ErrNoBackend", err)
		}
		if err := p.Picker().Admit(t.Context(), new(Lease), 0); !errors.Is(err, ErrNoBackend) || reg.QueueLen() != 0 {
			t.Errorf("Admit: %v (QueueLen %d), want ErrNoBackend", err, reg.QueueLen())
		}
		if err := p.Picker().PickRetry(new(Lease), 0, admMember(p, 0, 0)); !errors.Is(err, ErrNoBackend) {
			t.Errorf("PickRetry: %v, want ErrNoBackend", err)
		}
		if errors.Is(ErrNoBackend, ErrSaturated) {
			t.Error("ErrNoBackend matches ErrSaturated")
		}
	})
	assertIdle(t, reg)
}

// --- 8. PickRetry -------------------------------------------------------------------------

func TestPickRetryHonoursLimits(t *testing.T) {
	reg := NewRegistry()
	p := admPicker(t, reg, Options{Sites: []SiteOptions{
		{Name: "idc1", Weight: 1, Backends: []string{"a1", "a2"}, MaxInflight: 1},
		{Name: "idc2", Weight: 1, Backends: []string{"b1"}, MaxInflight: 1},
		{Name: "dr", Backends: []string{"d1"}, MaxInflight: 5},
	}})
	a1, a2, b1 := admMember(p, 0, 0), admMember(p, 0, 1), admMember(p, 1, 0)
	retry := func() (*Lease, error) {
		l := new(Lease)
		return l, p.Picker().PickRetry(l, 0, a1) // the last try failed on a1
	}
	l, err := retry()
	if err != nil || l.Backend != b1 || l.Preferred != 0 {
		t.Fatalf("idc2 free: %v backend %v preferred %d, want b1 (another site)", err, l.Backend, l.Preferred)
	}
	onB1 := l
	l, err = retry() // idc2 full: another backend of idc1, never a1
	if err != nil || l.Backend != a2 {
		t.Fatalf("idc2 full: %v backend %v, want a2", err, l.Backend)
	}
	onA2 := l
	for range 20 {
		l, err = retry() // a1 is free but excluded; b1 and a2 full; dr takes no spill
		if !errors.Is(err, ErrNoBackend) || l.Backend != nil {
			t.Fatalf("only the failed backend free: %v backend %v, want ErrNoBackend", err, l.Backend)
		}
	}
	if a1.Inflight() != 0 || b1.Inflight() != 1 || a2.Inflight() != 1 || admMember(p, 2, 0).Inflight() != 0 {
		t.Fatalf("in flight a1 %d a2 %d b1 %d dr %d", a1.Inflight(), a2.Inflight(), b1.Inflight(), admMember(p, 2, 0).Inflight())
	}
	onB1.Done(Result{})
	l, err = retry()
	if err != nil || l.Backend != b1 {
		t.Fatalf("b1 free again: %v backend %v", err, l.Backend)
	}
	doneAll([]*Lease{l, onA2})
	assertIdle(t, reg)
}

// --- 9. Affinity --------------------------------------------------------------------------

func TestAffinity(t *testing.T) {
	reg := NewRegistry()
	opts := Options{Sites: []SiteOptions{
		{Name: "idc1", Weight: 5, Backends: []string{"a1", "a2"}, MaxInflight: 2},
		{Name: "idc2", Weight: 3, Backends: []string{"b1", "b2"}, MaxInflight: 2},
		{Name: "aws", Weight: 2, Elastic: true, Backends: []string{"c1", "c2"}, MaxInflight: 2},
	}}
	p := admPicker(t, reg, opts)
	key := HashKey("session-1")
	pickKey := func(key uint64) *Lease {
		t.Helper()
		l := new(Lease)
		if err := p.Picker().Pick(l, key); err != nil {
			t.Fatal(err)
		}
		return l
	}
	l := pickKey(key)
	pinned := l.Preferred
	l.Done(Result{})
	for n := range 50 {
		pickKey(0).Done(Result{}) // the split moves on; the key does not
		l := pickKey(key)
		if l.Preferred != pinned || l.SiteIndex != pinned || l.Spill != SpillNone {
			t.Fatalf("pick %d: key went to site %d preferred %d, pinned %d", n, l.SiteIndex, l.Preferred, pinned)
		}
		l.Done(Result{})
	}
	// A new Picker for the same config (a reload) pins the key to the same site.
	p2 := admPicker(t, reg, opts)
	l = new(Lease)
	if err := p2.Picker().Pick(l, key); err != nil || l.Preferred != pinned {
		t.Fatalf("after a reload: %v preferred %d, want %d", err, l.Preferred, pinned)
	}
	l.Done(Result{})
	p2.Close()

	t.Run("keys spread over sites", func(t *testing.T) {
		seen := map[int]bool{}
		for i := range 300 {
			l := pickKey(HashKey(fmt.Sprintf("session-%d", i)))
			seen[l.Preferred] = true
			l.Done(Result{})
		}
		if len(seen) != 3 {
			t.Errorf("300 keys preferred only sites %v", seen)
		}
	})

	t.Run("pinned site full", func(t *testing.T) {
		var held []*Lease
		for range 4 {
			l := pickKey(key)
			if l.SiteIndex != pinned {
				t.Fatalf("pinned site with room: went to %d", l.SiteIndex)
			}
			held = append(held, l)
		}
		l := pickKey(key)
		if l.Preferred != pinned || l.SiteIndex == pinned || l.Spill != SpillSaturated {
			t.Errorf("pinned site full: site %d preferred %d spill %q, want a spill that keeps preferred %d",
				l.SiteIndex, l.Preferred, l.Spill, pinned)
		}
		doneAll(append(held, l))
		// Hysteresis ended (resume 1, nothing in flight): the key goes home again.
		l = pickKey(key)
		if l.SiteIndex != pinned {
			t.Errorf("pinned site empty again: went to %d", l.SiteIndex)
		}
		l.Done(Result{})
	})

	t.Run("pinned site down", func(t *testing.T) {
		name := p.Sites()[pinned].Name
		addrs := opts.Sites[pinned].Backends
		for _, a := range addrs {
			reg.SetUp(name, a, false)
		}
		l := pickKey(key)
		moved := l.Preferred
		l.Done(Result{})
		if moved == pinned || moved < 0 {
			t.Fatalf("pinned site down: key still preferred %d", moved)
		}
		for range 20 {
			l := pickKey(key)
			if l.Preferred != moved || l.SiteIndex != moved {
				t.Fatalf("site down: key went to %d preferred %d, want %d every time", l.SiteIndex, l.Preferred, moved)
			}
			l.Done(Result{})
		}
		for _, a := range addrs {
			reg.SetUp(name, a, true)
		}
		l = pickKey(key)
		if l.Preferred != pinned {
			t.Errorf("pinned site back up: key preferred %d, want %d", l.Preferred, pinned)
		}
		l.Done(Result{})
	})
	assertIdle(t, reg)
}

// --- 10. Benchmarks -----------------------------------------------------------------------

func benchPicker(b *testing.B, sites []SiteOptions) *Balancer {
	p, err := New(NewRegistry(), Options{Sites: sites})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Close)
	return p
}

func benchPicks(b *testing.B, p *Balancer, wantSpill bool) {
	one := func() {
		var l Lease
		if err := p.Picker().Pick(&l, 0); err != nil {
			b.Fatal(err)
		}
		if wantSpill && l.Spill == SpillNone {
			b.Fatal("did not spill")
		}
		l.Done(Result{Status: 200})
	}
	b.Run("single", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			one()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				one()
			}
		})
	})
}

// BenchmarkPickAdmission is Pick and Done on 5:3:2 with static limits, always with room.
func BenchmarkPickAdmission(b *testing.B) {
	benchPicks(b, benchPicker(b, []SiteOptions{
		{Name: "idc1", Weight: 5, Backends: []string{"a1", "a2", "a3"}, MaxInflight: 256},
		{Name: "idc2", Weight: 3, Backends: []string{"b1", "b2"}, MaxInflight: 256},
		{Name: "aws", Weight: 2, Elastic: true, Backends: []string{"c1", "c2", "c3", "c4"}, MaxInflight: 128},
	}), false)
}

// BenchmarkPickSpill: the only site of the split is full, so every pick spills to the
// burst-only elastic pool.
func BenchmarkPickSpill(b *testing.B) {
	p := benchPicker(b, []SiteOptions{
		{Name: "home", Weight: 1, Backends: []string{"h1", "h2"}, MaxInflight: 1},
		{Name: "aws", Elastic: true, Backends: []string{"c1", "c2", "c3", "c4"}, MaxInflight: 1 << 20},
	})
	var held []*Lease
	for range 2 {
		l := new(Lease)
		if err := p.Picker().Pick(l, 0); err != nil || l.Site.Name != "home" {
			b.Fatalf("filling home: %v", err)
		}
		held = append(held, l)
	}
	b.Cleanup(func() { doneAll(held) })
	benchPicks(b, p, true)
}
