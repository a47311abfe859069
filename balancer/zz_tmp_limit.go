package balancer

import (
	"hash/fnv"
	"math"
	"sync/atomic"
	"time"
)

// TEMPORARY until the limit branch merges.
type AdaptiveOptions struct{ Floor, Cap, Initial int }

type AdaptiveLimit struct{ l atomic.Int64 }

func NewAdaptiveLimit(o AdaptiveOptions) *AdaptiveLimit {
	a := &AdaptiveLimit{}
	a.l.Store(int64(o.Initial))
	return a
}
func (a *AdaptiveLimit) Limit() int64                       { return a.l.Load() }
func (a *AdaptiveLimit) Observe(time.Duration, int64, bool) {}
func (a *AdaptiveLimit) SetBounds(floor, cap int)           {}
func HashKey(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64() | 1
}
func Rendezvous(key uint64, n int, siteHash func(int) uint64, weight func(int) int) int {
	best, bestScore := -1, 0.0
	for i := 0; i < n; i++ {
		w := weight(i)
		if w <= 0 {
			continue
		}
		x := key ^ siteHash(i)
		x ^= x >> 33
		x *= 0xff51afd7ed558ccd
		x ^= x >> 33
		u := (float64(x>>11) + 0.5) / (1 << 53)
		s := -float64(w) / math.Log(u)
		if best < 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}
