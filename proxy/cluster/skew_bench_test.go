package cluster

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/spillway/spillway/balancer"
)

// The choice between equal shares and shares that follow each replica's demand, measured on a
// model: three replicas in front of one backend of limit 30 that holds each request 10 ticks
// (capacity 3 a tick), offered 90% of that capacity, split among the replicas evenly or
// skewed (what an L4 balancer with few long-lived client connections may do). A replica
// admits a request while its in flight is under its share, else the request goes elsewhere
// (spills). "global" is one shared counter, the best any split of the limit can do; "demand"
// re-divides the limit every 1000 ticks (a second, at a millisecond a tick) in proportion to
// what each replica was offered the second before, at least 1 each.
//
//	go test -run '^$' -bench ShareSkew ./proxy/cluster/
//
// What it measured (admitted, of what was offered; the rest spills to other backends or
// sites):
//
//	split      global  equal  demand
//	even        93.2%  84.9%   84.9%
//	50:30:20    93.2%  79.2%   85.2%
//
// Any split of a limit loses against one shared counter (each replica's part fills at its own
// peaks: about 8 points here, at 90% load); with an even split, demand-following shares gain
// nothing over equal ones; with a 50:30:20 split they win back the 6 points equal shares
// lose at the busy replica. Spillway uses equal shares by default: they need no demand
// reports and no hand-over when demand moves (each needs every member's acknowledgement
// before anyone grows), and behind a balancer that spreads requests evenly (a Kubernetes
// Service, an L4 balancer over many connections) they lose nothing to demand-following
// ones; cluster.shares: demand (Options.Demand, weigh) is for traffic that reaches the
// replicas skewed.
func BenchmarkShareSkew(b *testing.B) {
	for _, split := range []struct {
		name string
		p    []float64
	}{{"even", []float64{1. / 3, 1. / 3, 1. / 3}}, {"skewed_50_30_20", []float64{0.5, 0.3, 0.2}}} {
		for _, policy := range []string{"global", "equal", "demand"} {
			b.Run(split.name+"/"+policy, func(b *testing.B) {
				var admitted float64
				for b.Loop() {
					admitted = simulateShares(split.p, policy, 200_000)
				}
				b.ReportMetric(100*admitted, "%admitted")
			})
		}
	}
}

// TestShareSkewModel pins what the benchmark measures: equal shares never beat the global
// counter, and under a skewed split the demand-following shares admit more than equal ones.
func TestShareSkewModel(t *testing.T) {
	skew := []float64{0.5, 0.3, 0.2}
	g, e, d := simulateShares(skew, "global", 100_000), simulateShares(skew, "equal", 100_000), simulateShares(skew, "demand", 100_000)
	t.Logf("skewed 50:30:20: global %.1f%%, equal %.1f%%, demand %.1f%%", 100*g, 100*e, 100*d)
	if e > g || d <= e {
		t.Fatalf("global %.3f equal %.3f demand %.3f: want equal <= global and demand > equal", g, e, d)
	}
}

// simulateShares returns the fraction of offered requests the backend took.
func simulateShares(split []float64, policy string, ticks int) float64 {
	const (
		limit   = 30
		hold    = 10   // ticks a request holds its slot
		load    = 0.9  // of the backend's capacity, limit/hold a tick
		period  = 1000 // ticks between demand reports
		members = 3
	)
	rng := rand.New(rand.NewPCG(1, 2))
	v := newView(map[string]int64{"r0": 1, "r1": 2, "r2": 3})
	id := balancer.BackendID{Site: "idc1", Addr: "http://10.0.0.1:80"}
	shares := make([]int64, members)
	for i, n := range v.nodes {
		shares[i] = v.of(n, id, limit)
	}
	inflight := make([]int64, members)
	offeredNow := make([]float64, members)
	done := make([][]int64, hold) // done[t%hold][i]: requests of replica i that end at tick t
	for i := range done {
		done[i] = make([]int64, members)
	}
	var offered, taken float64
	for t := range ticks {
		slot := done[t%hold]
		for i := range members {
			inflight[i] -= slot[i]
			slot[i] = 0
		}
		if policy == "demand" && t > 0 && t%period == 0 {
			shares = demandShares(offeredNow, limit)
			clear(offeredNow)
		}
		var total int64
		for _, n := range inflight {
			total += n
		}
		for i := range members {
			arrivals := poisson(rng, load*limit/hold*split[i])
			offered += float64(arrivals)
			offeredNow[i] += float64(arrivals)
			for range arrivals {
				ok := total < limit
				if policy != "global" {
					ok = inflight[i] < shares[i]
				}
				if ok {
					inflight[i]++
					total++
					taken++
					done[t%hold][i]++ // ends hold ticks from now: this slot comes round again then
				}
			}
		}
	}
	return taken / offered
}

// demandShares divides limit in proportion to demand, at least 1 each, adding up to at most
// limit (largest remainders first).
func demandShares(demand []float64, limit int64) []int64 {
	n := int64(len(demand))
	var sum float64
	for _, d := range demand {
		sum += d
	}
	out := make([]int64, n)
	rest := limit - n
	if sum == 0 || rest < 0 {
		for i := range out {
			out[i] = limit / n
		}
		return out
	}
	frac := make([]float64, n)
	used := int64(0)
	for i, d := range demand {
		x := float64(rest) * d / sum
		out[i] = 1 + int64(math.Floor(x))
		frac[i] = x - math.Floor(x)
		used += out[i]
	}
	for used < limit {
		best := 0
		for i := range frac {
			if frac[i] > frac[best] {
				best = i
			}
		}
		out[best]++
		frac[best] = -1
		used++
	}
	return out
}

func poisson(rng *rand.Rand, mean float64) int {
	l, k, p := math.Exp(-mean), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}
