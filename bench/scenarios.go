package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/spillway/spillway/bench/sim"
)

// The capacity model every scenario shares. Each backend serves requests in a log-normal
// time (median 100 ms, p99 250 ms, mean about 108 ms) and at most Limit at once; the proxy
// has the same max_inflight. Capacities are in slots (concurrent requests), and in
// requests per second slots / mean service time. The standard deployment's slots are
// 30:18:12, in proportion to the 5:3:2 split, so that at a given share of total capacity
// every site is equally busy.
var service = sim.NewLogNormal(100*time.Millisecond, 250*time.Millisecond)

func standardSites() []SiteSpec {
	return []SiteSpec{
		{Name: "idc1", Weight: 5, Backends: 2, Limit: 15},
		{Name: "idc2", Weight: 3, Backends: 2, Limit: 9},
		{Name: "aws", Weight: 2, Elastic: true, Backends: 2, Limit: 6},
	}
}

// slots is a site's capacity in concurrent requests.
func slots(s SiteSpec) int { return s.Backends * s.Limit }

// rps is a number of slots in requests per second.
func rps(slots int) float64 { return float64(slots) / service.Mean().Seconds() }

func totalSlots(sites []SiteSpec) int {
	n := 0
	for _, s := range sites {
		n += slots(s)
	}
	return n
}

var defaultTarget = targetShare([]int{5, 3, 2})

// start starts an Env with the suite's service times (unless o has its own), health checks
// and seed.
func (c *runContext) start(o EnvOptions) (*Env, error) {
	if o.Service == nil {
		o.Service = service
	}
	o.HealthInterval = c.healthInterval()
	o.Seed = c.Seed
	o.Dir = c.dir
	o.Log = c.Log
	if o.QueueSize == 0 {
		o.QueueSize = 1000
	}
	return StartEnv(o)
}

func (c *runContext) drive(ctx context.Context, name string, env *Env, p Profile, actions ...action) (*runData, error) {
	d := &drive{scenario: name, env: env, duration: c.duration, profile: p, arrivals: Poisson,
		actions: actions, seed: c.Seed, progress: c.Progress}
	data, err := d.run(ctx)
	if err != nil {
		return nil, err
	}
	c.lastRun = data
	if len(data.errs) > 0 {
		return data, errors.Join(data.errs...)
	}
	return data, nil
}

// frac is a fraction of the scenario's duration.
func (c *runContext) frac(f float64) time.Duration {
	return time.Duration(f * float64(c.duration)).Round(time.Millisecond)
}

// baseParams are the parameters every scenario shares.
func (c *runContext) baseParams(sites []SiteSpec, rate float64) map[string]any {
	p := map[string]any{
		"duration_s":        c.duration.Seconds(),
		"arrivals":          Poisson.String(),
		"service_median_ms": ms(service.Median),
		"service_p99_ms":    ms(service.P99),
		"service_mean_ms":   ms(service.Mean()),
		"health_interval":   c.healthInterval().String(),
		"rate_rps":          math.Round(rate),
	}
	for _, s := range sites {
		if s.Group != nil {
			p["site."+s.Name] = fmt.Sprintf("weight %d, elastic, autoscaling %d..%d instances x max_inflight %d (%.0f..%.0f req/s)",
				s.Weight, s.Group.Min, s.Group.Max, s.Limit, rps(s.Group.Min*s.Limit), rps(s.Group.Max*s.Limit))
			continue
		}
		el := ""
		if s.Elastic {
			el = ", elastic"
		}
		p["site."+s.Name] = fmt.Sprintf("weight %d%s, %d backends x max_inflight %d (%.0f req/s)",
			s.Weight, el, s.Backends, s.Limit, rps(slots(s)))
	}
	return p
}

// figures are the measurements every scenario reports for a window.
func figures(w *window, sites []string) map[string]float64 {
	f := map[string]float64{
		"requests":  float64(w.n),
		"ok":        float64(w.ok),
		"errors":    float64(w.errors()),
		"p50_ms":    ms(w.hist.Quantile(0.5)),
		"p90_ms":    ms(w.hist.Quantile(0.9)),
		"p99_ms":    ms(w.hist.Quantile(0.99)),
		"p999_ms":   ms(w.hist.Quantile(0.999)),
		"max_ms":    ms(w.hist.Max()),
		"mean_ms":   ms(w.hist.Mean()),
		"shed_503":  float64(w.outcomes[Shed]),
		"other_5xx": float64(w.outcomes[Status5xx]),
		"failed":    float64(w.outcomes[Failed]),
		"not_sent":  float64(w.outcomes[Overflow]),
	}
	for i, s := range sites {
		f["share."+s] = round3(w.share(i))
	}
	return f
}

// envFigures adds the proxy's counters.
func envFigures(f map[string]float64, env *Env) {
	total, by := env.Spills()
	f["spills"] = float64(total)
	for k, n := range by {
		f["spills."+k] = float64(n)
	}
	f["sheds"] = float64(env.Sheds())
	for k, n := range env.Retries() {
		f["retries."+k] = float64(n)
	}
}

// shareChecks checks each site's share of w against target, within tol percentage points.
func shareChecks(w *window, sites []string, target []float64, tol float64, when string) []Check {
	var out []Check
	for i, s := range sites {
		out = append(out, Near(fmt.Sprintf("%s share %s", s, when), w.share(i), round3(target[i]), tol, "%"))
	}
	return out
}

func noErrors(w *window, when string) Check {
	return AtMost("requests not answered 2xx "+when, float64(w.errors()), 0, "")
}

// backendPeaks is the highest number of requests any backend of site was serving at once,
// and how many it refused for being over its capacity.
func backendPeaks(env *Env, site string) (peak, rejected int64) {
	for _, b := range env.Backends[site] {
		st := b.Stats()
		peak = max(peak, st.Peak)
		rejected += st.Rejected
	}
	return peak, rejected
}
