package sim

import (
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// Dist is a service-time distribution.
type Dist interface {
	// Sample draws one service time using r.
	Sample(r Rand) time.Duration
}

// Rand is the randomness a Dist draws from; safe for concurrent use.
type Rand interface {
	Float64() float64
	NormFloat64() float64
}

// Fixed is a constant service time.
type Fixed time.Duration

// Sample returns d.
func (d Fixed) Sample(Rand) time.Duration { return time.Duration(d) }

// LogNormal is a log-normal service time, the usual shape of a server's latency: most
// requests near the median, a long tail. Make it with NewLogNormal.
type LogNormal struct {
	Median, P99 time.Duration
	mu, sigma   float64
}

// z99 is the standard normal's 99th percentile.
const z99 = 2.326347874

// NewLogNormal returns the log-normal distribution with the given median and 99th
// percentile (p99 >= median > 0).
func NewLogNormal(median, p99 time.Duration) LogNormal {
	p99 = max(p99, median)
	return LogNormal{Median: median, P99: p99, mu: math.Log(float64(median)),
		sigma: (math.Log(float64(p99)) - math.Log(float64(median))) / z99}
}

// Sample draws one service time.
func (d LogNormal) Sample(r Rand) time.Duration {
	return time.Duration(math.Exp(d.mu + d.sigma*r.NormFloat64()))
}

// Mean is the distribution's mean, exp(mu + sigma²/2).
func (d LogNormal) Mean() time.Duration {
	return time.Duration(math.Exp(d.mu + d.sigma*d.sigma/2))
}

// lockedRand is a seeded source shared by a backend's concurrent requests.
type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func newLockedRand(seed uint64) *lockedRand {
	return &lockedRand{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (l *lockedRand) Float64() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Float64()
}

func (l *lockedRand) NormFloat64() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.NormFloat64()
}
