package balancer

import (
	"fmt"
	"math"
)

// Session affinity by weighted rendezvous (highest random weight) hashing: a session key
// goes to the eligible site with the highest score −weight / ln(u), u a hash of key and
// site mapped into (0, 1). −ln(u) / weight is an exponential variable of rate weight, so
// the site with the smallest one — the highest score — wins with probability
// weight / Σ weights. What makes it the right tool for sticky sessions:
//
//   - A key's scores depend only on the key and each site's own name and weight, so a
//     change to one site moves only the keys that change touches: a site going down moves
//     just its own keys, spread over the rest by weight; a site's weight rising moves keys
//     to it only, and no more than the share it gains. Sessions elsewhere stay put.
//   - Sites are identified by the hash of their name, not their position, so a reload
//     that reorders the config keeps every session where it was.
//   - No table to build or rebuild: a pick is one hash mix and one logarithm per site,
//     which for the handful of sites in a split is cheaper than a lookup would be worth.

// HashKey hashes a session key (a cookie or header value) for Rendezvous and
// Affinity.Pick, and a site's name for its site hash: 64-bit FNV-1a. It does not allocate.
// FNV-1a alone mixes its last bytes weakly; the scores pass it through a finaliser.
func HashKey(key string) uint64 {
	const offset64, prime64 = 14695981039346656037, 1099511628211
	h := uint64(offset64)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= prime64
	}
	return h
}

// Rendezvous returns the index i in [0, n) whose site has the highest weighted rendezvous
// score for key among those with weight(i) > 0, or -1 if there is none; ties go to the
// lower index. siteHash(i) is HashKey of site i's name, precomputed by the caller; a caller
// excludes a site that is down by giving it weight 0. It does not allocate (the funcs do not
// escape), so the caller's closures can live on its stack.
func Rendezvous(key uint64, n int, siteHash func(i int) uint64, weight func(i int) int) int {
	best, bestScore := -1, 0.0
	for i := range n {
		w := weight(i)
		if w <= 0 {
			continue
		}
		if s := score(key, siteHash(i), float64(w)); best < 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}

// Affinity is an immutable weighted-rendezvous table over a split's sites, built by the
// control plane with the snapshot and read by any number of requests at once. It holds
// what Rendezvous would otherwise ask for by callback: each site's name hash and weight.
type Affinity struct {
	hashes  []uint64
	weights []float64
}

// NewAffinity returns the Affinity of the sites called names with these weights (a weight
// of 0 or less takes no sessions). It panics if the two lengths differ.
func NewAffinity(names []string, weights []int) *Affinity {
	if len(names) != len(weights) {
		panic(fmt.Sprintf("balancer: NewAffinity: %d names but %d weights", len(names), len(weights)))
	}
	a := &Affinity{hashes: make([]uint64, len(names)), weights: make([]float64, len(names))}
	for i, name := range names {
		a.hashes[i] = HashKey(name)
		a.weights[i] = float64(max(weights[i], 0))
	}
	return a
}

// Pick returns the index of the site a session with key (from HashKey) belongs to, among
// those with weight > 0 for which eligible(i) is true (a nil eligible admits every site),
// or -1 if there is none. The same key gets the same site for as long as that site stays
// eligible and the weights are unchanged. It does not allocate.
func (a *Affinity) Pick(key uint64, eligible func(i int) bool) int {
	best, bestScore := -1, 0.0
	for i, w := range a.weights {
		if w <= 0 || eligible != nil && !eligible(i) {
			continue
		}
		if s := score(key, a.hashes[i], w); best < 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}

// Len is the number of sites a was built over.
func (a *Affinity) Len() int { return len(a.weights) }

// score is key's weighted rendezvous score at the site with hash site and weight w > 0.
func score(key, site uint64, w float64) float64 {
	h := mix64(key ^ site)
	// The top 53 bits, centred in their interval: u is in (0, 1), never 0 or 1, so ln(u)
	// is finite and negative and the score positive.
	u := (float64(h>>11) + 0.5) * 0x1p-53
	return -w / math.Log(u)
}

// mix64 is the splitmix64 finaliser: a bijection in which every input bit flips each
// output bit with probability about ½, so key ^ site for two sites gives independent-
// looking scores even for keys that differ in a single byte.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
