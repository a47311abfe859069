package balancer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// sessionKeys returns n hashed session keys: random 128-bit hex IDs from a fixed seed, or
// sequential ones ("session-0", "session-1", …), which differ in a byte or two.
func sessionKeys(n int, sequential bool) []uint64 {
	r := rand.New(rand.NewPCG(3, 4))
	keys := make([]uint64, n)
	for i := range keys {
		if sequential {
			keys[i] = HashKey(fmt.Sprintf("session-%d", i))
		} else {
			keys[i] = HashKey(fmt.Sprintf("%016x%016x", r.Uint64(), r.Uint64()))
		}
	}
	return keys
}

var siteNames = []string{"idc1", "idc2", "aws"}

func shares(counts []int) []float64 {
	total := 0
	for _, c := range counts {
		total += c
	}
	out := make([]float64, len(counts))
	for i, c := range counts {
		out[i] = float64(c) / float64(total)
	}
	return out
}

func TestHashKeyIsFNV1a64(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
	}{
		{"", 0xcbf29ce484222325},
		{"a", 0xaf63dc4c8601ec8c},
		{"foobar", 0x85944171f73967e8},
	} {
		if got := HashKey(tc.in); got != tc.want {
			t.Errorf("HashKey(%q) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
}

func TestRendezvousDistributionFollowsWeights(t *testing.T) {
	for _, sequential := range []bool{false, true} {
		t.Run(fmt.Sprintf("sequential=%v", sequential), func(t *testing.T) {
			a := NewAffinity(siteNames, []int{5, 3, 2})
			counts := make([]int, 3)
			for _, k := range sessionKeys(100_000, sequential) {
				counts[a.Pick(k, nil)]++
			}
			got := shares(counts)
			t.Logf("shares %.2f%% / %.2f%% / %.2f%%", 100*got[0], 100*got[1], 100*got[2])
			for i, want := range []float64{0.5, 0.3, 0.2} {
				if math.Abs(got[i]-want) > 0.01 {
					t.Errorf("site %s share %.2f%%, want %.0f%% ± 1pp", siteNames[i], 100*got[i], 100*want)
				}
			}
		})
	}
}

func TestRendezvousWeightRiseMovesKeysOnlyToThatSite(t *testing.T) {
	// 5:3:2 → 5:3:3: only the keys the raised site now wins may move, all of them to it,
	// and as few as possible: its share rises from 2/10 to 3/11, by 7.27 points.
	before, after := NewAffinity(siteNames, []int{5, 3, 2}), NewAffinity(siteNames, []int{5, 3, 3})
	keys := sessionKeys(10_000, false)
	moved := 0
	for _, k := range keys {
		from, to := before.Pick(k, nil), after.Pick(k, nil)
		if from == to {
			continue
		}
		moved++
		if to != 2 {
			t.Fatalf("key %#x moved %s → %s; only moves to aws, whose weight rose, are allowed",
				k, siteNames[from], siteNames[to])
		}
	}
	ideal := 3.0/11 - 2.0/10
	got := float64(moved) / float64(len(keys))
	t.Logf("moved %.2f%% of keys, ideal %.2f%%", 100*got, 100*ideal)
	if math.Abs(got-ideal) > 0.01 {
		t.Errorf("moved %.2f%% of keys, want %.2f%% ± 1pp", 100*got, 100*ideal)
	}
}

func TestRendezvousDownSiteMovesOnlyItsKeys(t *testing.T) {
	// idc1 goes down: its sessions spread over idc2 and aws 3:2; nobody else's move.
	a := NewAffinity(siteNames, []int{5, 3, 2})
	up := func(i int) bool { return i != 0 }
	counts := make([]int, 3)
	for _, k := range sessionKeys(100_000, false) {
		from, to := a.Pick(k, nil), a.Pick(k, up)
		if from != 0 {
			if to != from {
				t.Fatalf("key %#x on %s moved to %s when idc1 went down", k, siteNames[from], siteNames[to])
			}
			continue
		}
		counts[to]++
	}
	if counts[0] != 0 {
		t.Fatalf("%d keys still on the down site", counts[0])
	}
	got := shares(counts[1:])
	t.Logf("idc1's keys: %.2f%% to idc2, %.2f%% to aws", 100*got[0], 100*got[1])
	if math.Abs(got[0]-0.6) > 0.01 || math.Abs(got[1]-0.4) > 0.01 {
		t.Errorf("idc1's keys went %.2f%% idc2, %.2f%% aws; want 60%%/40%% ± 1pp", 100*got[0], 100*got[1])
	}
}

func TestRendezvousStable(t *testing.T) {
	// Same key, same site: on every call, in a table rebuilt by a reload, and in one
	// whose config lists the sites in another order (sites are known by name).
	a := NewAffinity(siteNames, []int{5, 3, 2})
	rebuilt := NewAffinity(siteNames, []int{5, 3, 2})
	reordered := NewAffinity([]string{"aws", "idc1", "idc2"}, []int{2, 5, 3})
	toReordered := []int{1, 2, 0}
	for _, k := range sessionKeys(10_000, false) {
		i := a.Pick(k, nil)
		if a.Pick(k, nil) != i || rebuilt.Pick(k, nil) != i {
			t.Fatalf("key %#x: picks differ between calls or tables", k)
		}
		if got := reordered.Pick(k, nil); got != toReordered[i] {
			t.Fatalf("key %#x: %s in config order, %s when the config lists sites in another order",
				k, siteNames[i], []string{"aws", "idc1", "idc2"}[got])
		}
	}
}

func TestRendezvousMatchesAffinity(t *testing.T) {
	weights := []int{5, 0, 2, 3}
	names := []string{"idc1", "dr", "aws", "idc2"}
	a := NewAffinity(names, weights)
	hashes := make([]uint64, len(names))
	for i, n := range names {
		hashes[i] = HashKey(n)
	}
	down := 3
	for _, k := range sessionKeys(10_000, true) {
		got := Rendezvous(k, len(names), func(i int) uint64 { return hashes[i] }, func(i int) int {
			if i == down {
				return 0
			}
			return weights[i]
		})
		if want := a.Pick(k, func(i int) bool { return i != down }); got != want {
			t.Fatalf("key %#x: Rendezvous %d, Affinity.Pick %d", k, got, want)
		}
		if got == 1 || got == down {
			t.Fatalf("key %#x picked site %d with weight 0 or down", k, got)
		}
	}
}

func TestRendezvousNowhere(t *testing.T) {
	k := HashKey("session")
	hash := func(i int) uint64 { return uint64(i) }
	for _, tc := range []struct {
		name string
		got  int
	}{
		{"no sites", Rendezvous(k, 0, hash, func(int) int { return 1 })},
		{"all weight 0", Rendezvous(k, 3, hash, func(int) int { return 0 })},
		{"negative weight", Rendezvous(k, 2, hash, func(int) int { return -1 })},
		{"empty Affinity", NewAffinity(nil, nil).Pick(k, nil)},
		{"none eligible", NewAffinity(siteNames, []int{5, 3, 2}).Pick(k, func(int) bool { return false })},
		{"eligible but weight 0", NewAffinity(siteNames, []int{0, 0, 0}).Pick(k, nil)},
	} {
		if tc.got != -1 {
			t.Errorf("%s: picked %d, want -1", tc.name, tc.got)
		}
	}
	if got := NewAffinity([]string{"only"}, []int{1}).Pick(k, nil); got != 0 {
		t.Errorf("one site: picked %d, want 0", got)
	}
}

func TestAffinityDoesNotAllocate(t *testing.T) {
	a := NewAffinity(siteNames, []int{5, 3, 2})
	hashes := []uint64{HashKey("idc1"), HashKey("idc2"), HashKey("aws")}
	weights := []int{5, 3, 2}
	down := 1
	cookie := "0123456789abcdef0123456789abcdef"
	if n := testing.AllocsPerRun(100, func() {
		k := HashKey(cookie)
		a.Pick(k, func(i int) bool { return i != down })
		Rendezvous(k, 3, func(i int) uint64 { return hashes[i] }, func(i int) int { return weights[i] })
	}); n != 0 {
		t.Fatalf("%.0f allocations per pick, want 0", n)
	}
}

func TestNewAffinityRefusesMismatchedLengths(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	NewAffinity(siteNames, []int{5, 3})
}

func BenchmarkHashKey(b *testing.B) {
	cookie := "0123456789abcdef0123456789abcdef"
	b.ReportAllocs()
	for b.Loop() {
		HashKey(cookie)
	}
}

func BenchmarkRendezvous(b *testing.B) {
	hashes := []uint64{HashKey("idc1"), HashKey("idc2"), HashKey("aws")}
	weights := []int{5, 3, 2}
	b.ReportAllocs()
	for i := uint64(0); b.Loop(); i++ {
		Rendezvous(i, 3, func(i int) uint64 { return hashes[i] }, func(i int) int { return weights[i] })
	}
}

func BenchmarkAffinityPick(b *testing.B) {
	a := NewAffinity(siteNames, []int{5, 3, 2})
	cookie := "0123456789abcdef0123456789abcdef"
	down := -1
	b.ReportAllocs()
	for b.Loop() {
		a.Pick(HashKey(cookie), func(i int) bool { return i != down })
	}
}

// README (Affinity): "If the session's site is full, this request spills ...; the session
// stays pinned, and its next request goes home again." With hysteresis the next request
// (and every one until home is below resume × limit) spills too, though home has room.
func TestDownBackendsInflightDoesNotHideFreeSlots(t *testing.T) {
	reg := NewRegistry()
	p := admPicker(t, reg, Options{Sites: []SiteOptions{
		{Name: "idc1", Weight: 1, Backends: []string{"a1", "a2"}, MaxInflight: 10},
		{Name: "idc2", Weight: 1, Backends: []string{"b1"}, MaxInflight: 10},
	}})
	var held []*Lease
	a1 := admMember(p, 0, 0)
	for range 10 { // 10 requests stuck on a1 (a black-holed backend, waiting for their timeout)
		l := new(Lease)
		if !p.Picker().take(l, 0, a1) {
			t.Fatal("take")
		}
		held = append(held, l)
	}
	reg.SetUp("idc1", "a1", false) // probes fail: a1 goes down, its 10 requests still in flight
	held = append(held, fillSite(t, p, 1)...)
	defer doneAll(held)
	l, err := pickPreferring(t, p, 1)
	if err != nil {
		t.Errorf("idc2 full, idc1's a2 idle with 10 free slots: Pick = %v", err)
		return
	}
	l.Done(Result{})
}
