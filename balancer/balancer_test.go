package balancer

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func opts532() Options {
	return Options{Sites: []SiteOptions{
		{Name: "idc1", Weight: 5, Backends: []string{"http://a1", "http://a2"}, MaxInflight: 1000},
		{Name: "idc2", Weight: 3, Backends: []string{"http://b1", "http://b2"}, MaxInflight: 1000},
		{Name: "aws", Weight: 2, Backends: []string{"http://c1", "http://c2"}, MaxInflight: 1000},
	}}
}

// countWindows checks that every window of len(weights)-sum consecutive picks holds exactly
// weights[i] picks of site i.
func checkWindows(t *testing.T, picks []int, weights []int) {
	t.Helper()
	total := 0
	for _, w := range weights {
		total += w
	}
	for start := 0; start+total <= len(picks); start++ {
		got := make([]int, len(weights))
		for _, s := range picks[start : start+total] {
			got[s]++
		}
		if !slices.Equal(got, weights) {
			t.Fatalf("window [%d,%d) = %v, want %v", start, start+total, got, weights)
		}
	}
}

func TestScheduleExactOverEveryWindow(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []int
		period  int
	}{
		{"5:3:2", []int{5, 3, 2}, 10},
		{"gcd reduced 50:30:20", []int{50, 30, 20}, 10},
		{"one site", []int{7}, 1},
		{"zero weight skipped", []int{5, 0, 2}, 7},
		{"skewed 999:1", []int{999, 1}, 1000},
		{"equal", []int{1, 1, 1, 1}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq := schedule(tc.weights)
			if len(seq) != tc.period {
				t.Fatalf("period %d, want %d", len(seq), tc.period)
			}
			g := 0
			for _, w := range tc.weights {
				g = gcd(g, w)
			}
			reduced := make([]int, len(tc.weights))
			for i, w := range tc.weights {
				reduced[i] = w / g
			}
			// Walk three periods cyclically, as the picker does.
			var picks []int
			for n := range 3 * len(seq) {
				picks = append(picks, int(seq[n%len(seq)]))
			}
			checkWindows(t, picks, reduced)
		})
	}
}

func TestScheduleIsSmooth(t *testing.T) {
	// nginx's smooth WRR spreads a site's picks instead of bursting them.
	got := schedule([]int{5, 3, 2})
	want := []int32{0, 1, 2, 0, 0, 1, 0, 2, 1, 0}
	if !slices.Equal(got, want) {
		t.Fatalf("schedule(5,3,2) = %v, want %v", got, want)
	}
	if s := schedule([]int{0, 0}); len(s) != 0 {
		t.Fatalf("all-zero weights give %v, want empty", s)
	}
}

// bi is the index of l's backend among its site's members.
func bi(p *Balancer, l *Lease) int {
	return slices.Index(p.Picker().plan.members[l.SiteIndex], l.Backend)
}

// member is backend j of site i.
func member(p *Balancer, i, j int) *Backend { return p.Picker().plan.members[i][j] }

func pick(t *testing.T, p *Balancer) *Lease {
	t.Helper()
	l := new(Lease)
	if err := p.Picker().Pick(l, 0); err != nil {
		t.Fatalf("Pick: %v", err)
	}
	return l
}

func TestPickExactSplitAndReleases(t *testing.T) {
	reg := NewRegistry()
	p, err := New(reg, opts532())
	if err != nil {
		t.Fatal(err)
	}
	var picks []int
	var leases []*Lease
	for range 1000 {
		l := pick(t, p)
		picks = append(picks, l.SiteIndex)
		leases = append(leases, l)
	}
	checkWindows(t, picks, []int{5, 3, 2})
	if got := reg.Site("idc1").Inflight(); got != 500 {
		t.Fatalf("idc1 in-flight %d, want 500", got)
	}
	for _, l := range leases {
		if !l.Done(Result{Status: 200}) {
			t.Fatal("first Done returned false")
		}
		if l.Done(Result{Status: 200}) {
			t.Fatal("second Done returned true")
		}
	}
	for _, s := range p.Sites() {
		if s.Inflight() != 0 {
			t.Fatalf("site %s in-flight %d after release, want 0", s.Name, s.Inflight())
		}
	}
	for _, id := range []string{"http://a1", "http://a2"} {
		if n := reg.Backend(BackendID{"idc1", id}).Inflight(); n != 0 {
			t.Fatalf("backend %s in-flight %d, want 0", id, n)
		}
	}
	var unused Lease
	if unused.Done(Result{}) {
		t.Fatal("Done on a lease never picked returned true")
	}
}

func TestPickConcurrentKeepsExactCounts(t *testing.T) {
	reg := NewRegistry()
	p, err := New(reg, opts532())
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 1250 // 10000 picks: a whole number of periods
	counts := make([][3]int, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range each {
				var l Lease
				if err := p.Picker().Pick(&l, 0); err != nil {
					t.Error(err)
					return
				}
				counts[w][l.SiteIndex]++
				l.Done(Result{})
			}
		})
	}
	wg.Wait()
	var total [3]int
	for _, c := range counts {
		for i := range c {
			total[i] += c[i]
		}
	}
	if total != [3]int{5000, 3000, 2000} {
		t.Fatalf("concurrent split %v, want [5000 3000 2000]", total)
	}
}

func TestPowerOfTwoChoicesPrefersLessLoaded(t *testing.T) {
	reg := NewRegistry()
	p, err := New(reg, Options{Sites: []SiteOptions{
		{Name: "s", Weight: 1, Backends: []string{"http://a", "http://b", "http://c", "http://d"}, MaxInflight: 1000},
	}})
	if err != nil {
		t.Fatal(err)
	}
	// Hold leases without releasing: P2C must spread them, never letting one backend get
	// more than one ahead of the least loaded of any pair it compared.
	var held []*Lease
	for range 400 {
		held = append(held, pick(t, p))
	}
	per := map[int]int{}
	for _, l := range held {
		per[bi(p, l)]++
	}
	for i := range 4 {
		if per[i] < 80 || per[i] > 120 {
			t.Fatalf("backend %d holds %d of 400 leases; P2C should keep each near 100: %v", i, per[i], per)
		}
	}
	for _, l := range held {
		l.Done(Result{})
	}
}

func TestPowerOfTwoChoicesExact(t *testing.T) {
	reg := NewRegistry()
	// A scripted IntN makes the two candidates backends 0 and 1 on every pick.
	p, err := New(reg, Options{
		Sites: []SiteOptions{{Name: "s", Weight: 1, Backends: []string{"http://a", "http://b", "http://c"}}},
		IntN:  func(int) int { return 0 },
	})
	if err != nil {
		t.Fatal(err)
	}
	l1 := pick(t, p) // tie: first candidate (0)
	l2 := pick(t, p) // 0 has one in flight, 1 none
	if bi(p, l1) != 0 || bi(p, l2) != 1 {
		t.Fatalf("picks %d,%d; want 0 then 1 (less loaded)", bi(p, l1), bi(p, l2))
	}
	l1.Done(Result{})
	l2.Done(Result{})
}

func TestDownSiteShareGoesToOthersByWeight(t *testing.T) {
	reg := NewRegistry()
	p, err := New(reg, opts532())
	if err != nil {
		t.Fatal(err)
	}
	reg.SetUp("idc2", "http://b1", false)
	// idc2 still has b2: it keeps its share, and only b2 gets its requests.
	for range 30 {
		l := pick(t, p)
		if l.SiteIndex == 1 && bi(p, l) != 1 {
			t.Fatalf("picked down backend b1")
		}
		l.Done(Result{})
	}
	reg.SetUp("idc2", "http://b2", false)
	counts := [3]int{}
	for range 700 { // 100 periods of 5:2
		l := pick(t, p)
		counts[l.SiteIndex]++
		l.Done(Result{})
	}
	if counts != [3]int{500, 0, 200} {
		t.Fatalf("with idc2 down the split is %v, want [500 0 200]", counts)
	}
	reg.SetUp("idc2", "http://b1", true)
	counts = [3]int{}
	for range 1000 {
		l := pick(t, p)
		counts[l.SiteIndex]++
		l.Done(Result{})
	}
	if counts != [3]int{500, 300, 200} {
		t.Fatalf("after idc2 returns the split is %v, want [500 300 200]", counts)
	}
	for _, s := range []string{"idc1", "aws"} {
		for _, a := range []string{"http://a1", "http://a2", "http://c1", "http://c2"} {
			reg.SetUp(s, a, false)
		}
	}
	reg.SetUp("idc2", "http://b1", false)
	if err := p.Picker().Pick(new(Lease), 0); err != ErrNoBackend {
		t.Fatalf("all down: Pick = %v, want ErrNoBackend", err)
	}
}

func TestPositionAndStateSurviveNewBalancer(t *testing.T) {
	reg := NewRegistry()
	p1, err := New(reg, opts532())
	if err != nil {
		t.Fatal(err)
	}
	var picks []int
	held := pick(t, p1)
	picks = append(picks, held.SiteIndex)
	for range 6 {
		l := pick(t, p1)
		picks = append(picks, l.SiteIndex)
		l.Done(Result{})
	}
	// A reload with the same sites continues the schedule where p1 left it.
	p2, err := New(reg, opts532())
	if err != nil {
		t.Fatal(err)
	}
	for range 93 {
		l := pick(t, p2)
		picks = append(picks, l.SiteIndex)
		l.Done(Result{})
	}
	checkWindows(t, picks, []int{5, 3, 2})
	// The lease taken under p1 counts in the state p2 sees, and releases into it.
	if got := p2.Sites()[held.SiteIndex].Inflight(); got != 1 {
		t.Fatalf("in-flight seen by the new picker %d, want 1", got)
	}
	held.Done(Result{})
	if got := p2.Sites()[held.SiteIndex].Inflight(); got != 0 {
		t.Fatalf("in-flight after release %d, want 0", got)
	}
}

func TestNewRefusesDuplicates(t *testing.T) {
	reg := NewRegistry()
	for _, o := range []Options{
		{Sites: []SiteOptions{{Name: "a", Weight: 1}, {Name: "a", Weight: 1}}},
		{Sites: []SiteOptions{{Name: "a", Weight: 1, Backends: []string{"http://x", "http://x"}}}},
		{Sites: []SiteOptions{{Name: "a", Weight: -1}}},
	} {
		if _, err := New(reg, o); err == nil {
			t.Fatalf("New(%+v) = nil error", o)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	p, err := New(NewRegistry(), opts532())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			var l Lease
			if err := p.Picker().Pick(&l, 0); err != nil {
				b.Fatal(err)
			}
			l.Done(Result{Status: 200})
		}
	})
}

func BenchmarkSchedule(b *testing.B) {
	weights := make([]int, 16)
	for i := range weights {
		weights[i] = 1 + rand.IntN(1000)
	}
	b.ReportAllocs()
	for b.Loop() {
		schedule(weights)
	}
}

func TestHealthFlapsWhilePicking(t *testing.T) {
	reg := NewRegistry()
	p, err := New(reg, opts532())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				var l Lease
				if err := p.Picker().Pick(&l, 0); err != nil {
					t.Error(err) // aws and idc1 never go down: there is always a backend
					return
				}
				l.Done(Result{})
			}
		})
	}
	for i := range 2000 {
		reg.SetUp("idc2", "http://b1", i%2 == 1)
		reg.SetUp("idc2", "http://b2", i%3 == 0)
	}
	close(stop)
	wg.Wait()
	// The last flips leave b1 up (1999 is odd) and b2 down (1999 % 3 != 0): the plan made by
	// the last SetUp must say so, and idc2 keeps its share on b1 alone.
	idc2 := 0
	for range 20 {
		l := pick(t, p)
		if l.SiteIndex == 1 {
			idc2++
			if bi(p, l) != 0 {
				t.Fatalf("picked idc2 backend %d, which is down", bi(p, l))
			}
		}
		l.Done(Result{})
	}
	if idc2 != 6 {
		t.Fatalf("idc2 got %d of 20 picks, want 6", idc2)
	}
}

func TestClosedBalancerIsNotRebuilt(t *testing.T) {
	reg := NewRegistry()
	p, err := New(reg, opts532())
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	before := p.Picker()
	reg.SetUp("idc2", "http://b1", false)
	if p.Picker() != before {
		t.Fatal("a closed Balancer built a new Picker")
	}
	if len(reg.open) != 0 {
		t.Fatalf("registry still holds %d balancers", len(reg.open))
	}
}

func TestPickRetryPrefersAnotherSiteByWeight(t *testing.T) {
	reg := NewRegistry()
	p, err := New(reg, opts532())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// After a failure in idc1, retries go to idc2 and aws in proportion 3:2.
	counts := [3]int{}
	for range 5000 {
		var l Lease
		if err := p.Picker().PickRetry(&l, 0, member(p, 0, 0)); err != nil {
			t.Fatal(err)
		}
		counts[l.SiteIndex]++
		l.Done(Result{})
	}
	if counts[0] != 0 || counts[1] < 2700 || counts[1] > 3300 {
		t.Fatalf("retries after idc1 failed: %v, want none on idc1 and idc2:aws near 3:2", counts)
	}
	// Retries leave the split's position alone: first tries stay exact.
	var picks []int
	for range 100 {
		l := pick(t, p)
		picks = append(picks, l.SiteIndex)
		l.Done(Result{})
	}
	checkWindows(t, picks, []int{5, 3, 2})
}

func TestPickRetrySameSiteOtherBackend(t *testing.T) {
	reg := NewRegistry()
	p, err := New(reg, Options{Sites: []SiteOptions{{Name: "only", Weight: 1, Backends: []string{"http://a", "http://b"}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for range 50 {
		var l Lease
		if err := p.Picker().PickRetry(&l, 0, member(p, 0, 1)); err != nil {
			t.Fatal(err)
		}
		if bi(p, &l) != 0 {
			t.Fatalf("retry went back to the failed backend")
		}
		l.Done(Result{})
	}
	reg.SetEjected("only", "http://a", true)
	if err := p.Picker().PickRetry(new(Lease), 0, member(p, 0, 1)); err != ErrNoBackend {
		t.Fatalf("no other backend up: %v, want ErrNoBackend", err)
	}
	if reg.Backend(BackendID{"only", "http://a"}).Up() {
		t.Fatal("ejected backend reports up")
	}
	if !reg.Backend(BackendID{"only", "http://a"}).Healthy() {
		t.Fatal("ejection changed the active-health state")
	}
}
