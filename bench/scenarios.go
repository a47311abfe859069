package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync"
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

var steadyScenario = Scenario{
	Name:  "steady",
	Title: "steady load at half of capacity",
	Description: "Poisson arrivals at 50% of the total capacity of idc1, idc2 and aws (slots 30:18:12, split 5:3:2). " +
		"Every site has room, so nothing spills: each site's share of the answers must be within 1 percentage point " +
		"of 50/30/20, and every request must be answered 2xx.",
	run: func(ctx context.Context, c *runContext) (*Result, error) {
		sites := standardSites()
		rate := 0.5 * rps(totalSlots(sites))
		env, err := c.start(EnvOptions{Sites: sites})
		if err != nil {
			return nil, err
		}
		defer env.Close()
		data, err := c.drive(ctx, "steady", env, Constant(rate))
		if err != nil {
			return nil, err
		}
		w := data.window(0, c.duration)
		r := &Result{Params: c.baseParams(sites, rate), Figures: figures(w, env.Sites), Series: data.series()}
		envFigures(r.Figures, env)
		r.Checks = append(shareChecks(w, env.Sites, defaultTarget, 1, "over the run"), noErrors(w, "over the run"))
		return r, nil
	},
}

var spikeScenario = Scenario{
	Name:  "spike",
	Title: "a spike of 3x the IDCs' capacity spills to aws",
	Description: "Half of capacity, then for 30% of the run 3x what idc1 and idc2 together can serve, then half again. " +
		"aws is a large elastic pool, so total capacity suffices. No IDC backend may ever serve more than its limit " +
		"(none answers 503 for being over capacity), the IDCs stay full while the excess goes to aws (aws answers at " +
		"least half of the spike, and at least 95% of spills go to aws), no request fails, and from 1 s after the " +
		"spike the split is back to 5:3:2 within 2 points.",
	run: func(ctx context.Context, c *runContext) (*Result, error) {
		sites := standardSites()
		base := 0.5 * rps(totalSlots(sites))
		sites[2].Backends, sites[2].Limit = 4, 40
		idc := slots(sites[0]) + slots(sites[1])
		peak := 3 * rps(idc)
		from, to := c.frac(0.25), c.frac(0.55)
		env, err := c.start(EnvOptions{Sites: sites})
		if err != nil {
			return nil, err
		}
		defer env.Close()
		data, err := c.drive(ctx, "spike", env, Spike(base, peak, from, to))
		if err != nil {
			return nil, err
		}
		data.marks = append(data.marks, Mark{T: from.Seconds(), Label: "spike"}, Mark{T: to.Seconds(), Label: "spike ends"})
		all := data.window(0, c.duration)
		during := data.window(from, to)
		after := data.window(to+time.Second, c.duration)
		r := &Result{Params: c.baseParams(sites, base), Figures: figures(all, env.Sites), Series: data.series()}
		r.Params["peak_rps"] = math.Round(peak)
		r.Params["spike"] = fmt.Sprintf("%s to %s", from, to)
		envFigures(r.Figures, env)
		r.Figures["spike.p99_ms"] = ms(during.hist.Quantile(0.99))
		r.Figures["spike.share.aws"] = round3(during.share(2))
		total, by := env.Spills()
		toAWS := by["idc1>aws"] + by["idc2>aws"]
		for i, s := range []string{"idc1", "idc2"} {
			peakIn, rejected := backendPeaks(env, s)
			r.Figures[s+".backend_peak_inflight"] = float64(peakIn)
			r.Checks = append(r.Checks,
				AtMost(fmt.Sprintf("highest in-flight at one %s backend", s), float64(peakIn), float64(sites[i].Limit), "requests"),
				AtMost(fmt.Sprintf("%s backends' 503s for being over capacity", s), float64(rejected), 0, ""))
		}
		idc1Max := data.sampleMax(0, from, to)
		r.Checks = append(r.Checks,
			AtLeast("idc1 in-flight at its fullest during the spike, % of its limit", pct(int(idc1Max), slots(sites[0])), 90, "%"),
			AtLeast("aws share of the answers during the spike", during.share(2), 50, "%"),
			AtLeast("spills that went to aws", 100*float64(toAWS)/math.Max(float64(total), 1), 95, "%"),
			noErrors(all, "over the run"))
		r.Checks = append(r.Checks, shareChecks(after, env.Sites, defaultTarget, 2, "from 1 s after the spike")...)
		return r, nil
	},
}

var outageScenario = Scenario{
	Name:  "outage",
	Title: "idc1 dies and comes back",
	Description: "25% of capacity (so that idc2 and aws, at half of theirs when idc1 is gone, have room for its retries); at a third of the run both idc1 backends are killed (listeners closed, " +
		"connections cut: new connections are refused), at two thirds restored on the same ports. Requests to idc1 " +
		"are retried elsewhere (GET, retries.attempts 2) and health checks (every 100 ms, fall 3, rise 2) take it out. " +
		"Requests not answered 2xx may be at most those in flight at idc1 when it died; while it is down (from the " +
		"settle time after the kill) idc1 answers nothing and idc2:aws keep 3:2 (idc2 60% of the answers, within 3 " +
		"points); from the settle time after the restore the split is 5:3:2 again within 2 points.",
	run: func(ctx context.Context, c *runContext) (*Result, error) {
		sites := standardSites()
		rate := 0.25 * rps(totalSlots(sites))
		env, err := c.start(EnvOptions{Sites: sites})
		if err != nil {
			return nil, err
		}
		defer env.Close()
		kill, restore := c.frac(1.0/3), c.frac(2.0/3)
		var cut int64
		data, err := c.drive(ctx, "outage", env, Constant(rate),
			action{at: kill, label: "idc1 killed", do: func() error {
				for _, b := range env.Backends["idc1"] {
					n, err := b.Kill()
					cut += n
					if err != nil {
						return err
					}
				}
				return nil
			}},
			action{at: restore, label: "idc1 restored", do: func() error {
				for _, b := range env.Backends["idc1"] {
					if err := b.Restore(); err != nil {
						return err
					}
				}
				return nil
			}})
		if err != nil {
			return nil, err
		}
		all := data.window(0, c.duration)
		down := data.window(kill+c.settle(), restore)
		after := data.window(restore+c.settle(), c.duration)
		r := &Result{Params: c.baseParams(sites, rate), Figures: figures(all, env.Sites), Series: data.series()}
		r.Params["kill_at"] = kill.String()
		r.Params["restore_at"] = restore.String()
		r.Params["settle"] = c.settle().String()
		envFigures(r.Figures, env)
		r.Figures["inflight_at_kill"] = float64(cut)
		r.Figures["down.share.idc2"] = round3(down.share(1))
		r.Figures["down.share.aws"] = round3(down.share(2))
		r.Figures["down.p99_ms"] = ms(down.hist.Quantile(0.99))
		idc2OfRest := pct(down.bySite[1], down.bySite[1]+down.bySite[2])
		r.Checks = append(r.Checks,
			AtMost("requests not answered 2xx, over the run (bound: in flight at idc1 when killed)", float64(all.errors()), float64(cut), ""),
			AtMost("idc1 share while down", down.share(0), 0.5, "%"),
			Near("idc2 share of idc2+aws while idc1 is down", idc2OfRest, 60, 3, "%"))
		r.Checks = append(r.Checks, shareChecks(after, env.Sites, defaultTarget, 2, "after the restore")...)
		return r, nil
	},
}

var brownoutScenario = Scenario{
	Name:  "brownout",
	Title: "idc2 slows down 10x",
	Description: "50% of capacity; for the middle third of the run every idc2 service time is 10x longer. idc2's " +
		"slots fill and it takes only what it can finish: no idc2 backend serves more than its limit (none answers " +
		"503 for being over capacity), idc2's share while slow is at most twice what its slowed capacity can serve, " +
		"its excess spills (to aws first, then idc1), and every request is answered 2xx.",
	run: func(ctx context.Context, c *runContext) (*Result, error) {
		sites := standardSites()
		rate := 0.5 * rps(totalSlots(sites))
		env, err := c.start(EnvOptions{Sites: sites})
		if err != nil {
			return nil, err
		}
		defer env.Close()
		from, to := c.frac(1.0/3), c.frac(2.0/3)
		const factor = 10
		slow := func(f float64) func() error {
			return func() error {
				for _, b := range env.Backends["idc2"] {
					b.SetSlowdown(f)
				}
				return nil
			}
		}
		data, err := c.drive(ctx, "brownout", env, Constant(rate),
			action{at: from, label: "idc2 x10 slower", do: slow(factor)},
			action{at: to, label: "idc2 normal", do: slow(1)})
		if err != nil {
			return nil, err
		}
		all := data.window(0, c.duration)
		slowW := data.window(from+c.settle(), to)
		r := &Result{Params: c.baseParams(sites, rate), Figures: figures(all, env.Sites), Series: data.series()}
		r.Params["slowdown"] = fmt.Sprintf("x%d from %s to %s", factor, from, to)
		envFigures(r.Figures, env)
		capShare := 100 * rps(slots(sites[1])) / factor / rate
		r.Figures["brownout.share.idc2"] = round3(slowW.share(1))
		r.Figures["brownout.idc2_capacity_share"] = round3(capShare)
		r.Figures["brownout.p99_ms"] = ms(slowW.hist.Quantile(0.99))
		peak, rejected := backendPeaks(env, "idc2")
		_, by := env.Spills()
		fromIDC2 := by["idc2>aws"] + by["idc2>idc1"]
		r.Checks = append(r.Checks,
			AtMost("highest in-flight at one idc2 backend", float64(peak), float64(sites[1].Limit), "requests"),
			AtMost("idc2 backends' 503s for being over capacity", float64(rejected), 0, ""),
			AtMost("idc2 share while slow", slowW.share(1), round3(2*capShare), "%"),
			AtLeast("requests spilled from idc2", float64(fromIDC2), 1, ""),
			noErrors(all, "over the run"))
		return r, nil
	},
}

var scaleOutScenario = Scenario{
	Name:  "scale-out",
	Title: "aws scales out during a spike",
	Description: "aws is an autoscaling group found by file discovery, starting with one instance. A spike of about " +
		"1.8x the starting capacity fills every site; the queue (size 50, 250 ms) overflows and requests are shed. " +
		"The group adds an instance each time it has been saturated (>= 75% busy) for its boot delay, writing the " +
		"targets file; each new instance slow-starts. Judged: the group grew to at least 3 instances, the spike did " +
		"saturate at first (requests shed in the first quarter of the spike), shedding in the last quarter is at most " +
		"a quarter of the first quarter's, and no request fails other than by being shed.",
	run: func(ctx context.Context, c *runContext) (*Result, error) {
		g := &GroupSpec{Min: 1, Max: 10, ScaleOutDelay: time.Second, ScaleInDelay: 2 * time.Second,
			Drain: time.Second, SlowStart: time.Second, Interval: time.Second}
		if c.Short {
			g.ScaleOutDelay, g.ScaleInDelay, g.Drain, g.SlowStart, g.Interval =
				250*time.Millisecond, time.Second, 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
		}
		var mu sync.Mutex
		var changes []struct {
			at    time.Time
			label string
		}
		g.OnChange = func(n int, added bool) {
			mu.Lock()
			defer mu.Unlock()
			verb := "aws +1"
			if !added {
				verb = "aws -1"
			}
			changes = append(changes, struct {
				at    time.Time
				label string
			}{time.Now(), fmt.Sprintf("%s (%d)", verb, n)})
		}
		sites := standardSites()
		base := 0.5 * rps(totalSlots(sites))
		sites[2] = SiteSpec{Name: "aws", Weight: 2, Elastic: true, Limit: 12, Group: g}
		startSlots := slots(sites[0]) + slots(sites[1]) + g.Min*sites[2].Limit
		peak := 1.8 * rps(startSlots)
		from, to := c.frac(0.1), c.frac(0.9)
		env, err := c.start(EnvOptions{Sites: sites, QueueSize: 50, QueueTimeout: 250 * time.Millisecond})
		if err != nil {
			return nil, err
		}
		defer env.Close()
		start := time.Now()
		data, err := c.drive(ctx, "scale-out", env, Spike(base, peak, from, to))
		if err != nil {
			return nil, err
		}
		data.marks = append(data.marks, Mark{T: from.Seconds(), Label: "spike"}, Mark{T: to.Seconds(), Label: "spike ends"})
		mu.Lock()
		for _, ch := range changes {
			data.marks = append(data.marks, Mark{T: round3(ch.at.Sub(start).Seconds()), Label: ch.label})
		}
		mu.Unlock()
		all := data.window(0, c.duration)
		q := (to - from) / 4
		first, last := data.window(from, from+q), data.window(to-q, to)
		gs := env.Group.Stats()
		r := &Result{Params: c.baseParams(sites, base), Figures: figures(all, env.Sites), Series: data.series()}
		r.Params["peak_rps"] = math.Round(peak)
		r.Params["spike"] = fmt.Sprintf("%s to %s", from, to)
		r.Params["queue"] = "size 50, timeout 250ms"
		r.Params["scale_out"] = fmt.Sprintf(">= 75%% busy for %s; slow_start %s; discovery file, interval %s", g.ScaleOutDelay, g.SlowStart, g.Interval)
		envFigures(r.Figures, env)
		r.Figures["instances.peak"] = float64(gs.Peak)
		r.Figures["instances.added"] = float64(gs.Added)
		r.Figures["instances.removed"] = float64(gs.Removed)
		r.Figures["shed.first_quarter"] = float64(first.outcomes[Shed])
		r.Figures["shed.last_quarter"] = float64(last.outcomes[Shed])
		firstShed, lastShed := float64(first.outcomes[Shed]), float64(last.outcomes[Shed])
		nonShed := all.errors() - all.outcomes[Shed]
		r.Checks = append(r.Checks,
			AtLeast("aws instances at the most", float64(gs.Peak), 3, ""),
			AtLeast("requests shed in the first quarter of the spike", firstShed, 1, ""),
			AtMost("shed in the last quarter of the spike, % of the first quarter's", 100*lastShed/math.Max(firstShed, 1), 25, "%"),
			AtMost("requests failed other than by shedding", float64(nonShed), 0, ""))
		return r, nil
	},
}

// reloadWeights are the splits the reload scenario cycles through.
var reloadWeights = [][]int{{6, 3, 1}, {4, 4, 2}, {5, 2, 3}, {7, 2, 1}, {3, 4, 3}, {4, 3, 3}, {6, 2, 2}, {5, 3, 2}}

var reloadScenario = Scenario{
	Name:  "reload",
	Title: "50 weight changes under load",
	Description: "25% of capacity while the weights change 50 times (10 with -short), evenly from 10% to 90% of the " +
		"run, cycling through 6:3:1, 4:4:2, 5:2:3, 7:2:1, 3:4:3, 4:3:3, 6:2:2, 5:3:2. Each change rewrites the " +
		"config file and reloads it, as an operator's tooling would (the Reloader builds the new Table over the same " +
		"Registry, starts it, swaps it in and stops the old one). Every request must be " +
		"answered 2xx, and between every two changes (requests sent more than 5 ms from a change) each site's count " +
		"must be within 2 requests + 2% of the interval's requests of what its weight asks.",
	run: func(ctx context.Context, c *runContext) (*Result, error) {
		sites := standardSites()
		rate := 0.25 * rps(totalSlots(sites))
		env, err := c.start(EnvOptions{Sites: sites})
		if err != nil {
			return nil, err
		}
		defer env.Close()
		n := 50
		if c.Short {
			n = 10
		}
		var actions []action
		for k := range n {
			w := reloadWeights[k%len(reloadWeights)]
			at := c.frac(0.1 + 0.8*float64(k)/float64(n-1))
			actions = append(actions, action{at: at, label: fmt.Sprintf("%d:%d:%d", w[0], w[1], w[2]),
				do: func() error { return env.SetWeights(w) }, done: env.Swapped})
		}
		data, err := c.drive(ctx, "reload", env, Constant(rate), actions...)
		if err != nil {
			return nil, err
		}
		all := data.window(0, c.duration)
		const margin = 5 * time.Millisecond
		sent := func(r *Record) time.Duration { return r.Sent }
		off, intervals, worst := 0, 0, 0.0
		var absDev, counted float64
		for i, wa := range data.weights {
			end := c.duration
			if i+1 < len(data.weights) {
				end = data.weights[i+1].t
			}
			w := data.windowBy(wa.t+margin, end-margin, sent)
			if w.ok == 0 {
				continue
			}
			intervals++
			target := targetShare(wa.w)
			tol := 2 + 0.02*float64(w.ok)
			bad := false
			for s := range env.Sites {
				dev := math.Abs(float64(w.bySite[s]) - float64(w.ok)*target[s]/100)
				absDev += dev
				worst = max(worst, dev)
				if dev > tol {
					bad = true
				}
			}
			counted += float64(w.ok)
			if bad {
				off++
			}
		}
		r := &Result{Params: c.baseParams(sites, rate), Figures: figures(all, env.Sites), Series: data.series()}
		r.Params["weight_changes"] = n
		r.Params["weights"] = "6:3:1 4:4:2 5:2:3 7:2:1 3:4:3 4:3:3 6:2:2 5:3:2 (cycled)"
		envFigures(r.Figures, env)
		r.Figures["intervals"] = float64(intervals)
		r.Figures["intervals_off_split"] = float64(off)
		r.Figures["misplaced_requests_pct"] = round3(100 * absDev / 2 / math.Max(counted, 1))
		r.Figures["worst_interval_site_deviation_requests"] = round3(worst)
		r.Checks = append(r.Checks,
			AtLeast("weight changes made", float64(len(data.weights)-1), float64(n), ""),
			noErrors(all, "over the run"),
			AtMost("intervals between changes where the split did not follow the weights", float64(off), 0, ""))
		return r, nil
	},
}

var blackholeScenario = Scenario{
	Name:  "blackhole",
	Title: "an idc1 backend answers 500 at once while its health endpoint passes",
	Description: "50% of capacity; from the start one of idc1's two backends answers every request 500 at once, " +
		"while its health endpoint passes (a black hole: the fastest-looking backend of all). Failures weigh in " +
		"a backend's cost and 5xx answers count towards ejection (outlier.on_5xx, on by default), so from 2 s on " +
		"at most 10% of idc1's answers may be that backend's 500s, and over the run at most 2% of all requests " +
		"may be answered other than 2xx.",
	run: func(ctx context.Context, c *runContext) (*Result, error) {
		sites := standardSites()
		rate := 0.5 * rps(totalSlots(sites))
		env, err := c.start(EnvOptions{Sites: sites})
		if err != nil {
			return nil, err
		}
		defer env.Close()
		bad := env.Backends["idc1"][1]
		bad.SetFailFast(true)
		data, err := c.drive(ctx, "blackhole", env, Constant(rate))
		if err != nil {
			return nil, err
		}
		const after = 2 * time.Second
		data.marks = append(data.marks, Mark{T: after.Seconds(), Label: "judged from here"})
		all := data.window(0, c.duration)
		var answered, failed int // idc1's answers from 2 s on, and of them 500s
		for i := range data.records {
			r := &data.records[i]
			if r.Sched < after || r.Site != 0 {
				continue
			}
			answered++
			if r.Status == http.StatusInternalServerError {
				failed++
			}
		}
		r := &Result{Params: c.baseParams(sites, rate), Figures: figures(all, env.Sites), Series: data.series()}
		r.Params["black_hole"] = "idc1-2: every request 500 at once, /healthz 200"
		envFigures(r.Figures, env)
		share := pct(failed, answered)
		r.Figures["blackhole.idc1_answers_after_2s"] = float64(answered)
		r.Figures["blackhole.idc1_500s_after_2s"] = float64(failed)
		r.Figures["blackhole.idc1_500_share_after_2s"] = round3(share)
		r.Figures["blackhole.requests_to_bad_backend"] = float64(bad.Stats().Injected)
		r.Checks = append(r.Checks,
			AtLeast("idc1 answers from 2 s on", float64(answered), 1, ""),
			AtMost("the black hole's 500s, % of idc1's answers from 2 s on", share, 10, "%"),
			AtMost("requests not answered 2xx over the run, %", pct(all.errors(), all.n), 2, "%"))
		return r, nil
	},
}

var lowloadScenario = Scenario{
	Name:  "lowload",
	Title: "requests one at a time share each site's backends evenly",
	Description: "Requests sent one after the other (the next when the last is answered): 600 (3000 without " +
		"-short), backends with a 2 ms median service time. Nothing is ever in flight at a backend when it is " +
		"chosen, so a choice that prefers the backend it measured fastest would starve the others; each backend " +
		"must receive within 40% of an even share of its site's requests, and every request must be answered 2xx.",
	run: func(ctx context.Context, c *runContext) (*Result, error) {
		sites := standardSites()
		n := 3000
		if c.Short {
			n = 600
		}
		fast := sim.NewLogNormal(2*time.Millisecond, 5*time.Millisecond)
		env, err := c.start(EnvOptions{Sites: sites, Service: fast})
		if err != nil {
			return nil, err
		}
		defer env.Close()
		client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
		defer client.CloseIdleConnections()
		w := &window{bySite: make([]int, len(env.Sites))}
		index := map[string]int{}
		for i, s := range env.Sites {
			index[s] = i
		}
		start := time.Now()
		for i := range n {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			t0 := time.Now()
			rec := Record{Sched: t0.Sub(start), Sent: t0.Sub(start), Site: -1}
			resp, err := client.Get(env.URL + "/lowload/" + strconv.Itoa(i))
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				rec.Status = resp.StatusCode
				if s, ok := index[resp.Header.Get(sim.HeaderSite)]; ok {
					rec.Site = int8(s)
				}
			}
			rec.Latency = time.Since(t0)
			rec.Outcome = classifyAnswer(rec.Status, rec.Site >= 0, err)
			w.add(&rec)
		}
		elapsed := time.Since(start)
		r := &Result{Params: c.baseParams(sites, float64(n)/elapsed.Seconds()), Figures: figures(w, env.Sites)}
		r.Params["requests"] = n
		r.Params["arrivals"] = "sequential (one at a time)"
		r.Params["service_median_ms"], r.Params["service_p99_ms"], r.Params["service_mean_ms"] = ms(fast.Median), ms(fast.P99), ms(fast.Mean())
		envFigures(r.Figures, env)
		for _, s := range env.Sites {
			bs := env.Backends[s]
			total := int64(0)
			for _, b := range bs {
				total += b.Stats().Served
			}
			even := float64(total) / float64(len(bs))
			for _, b := range bs {
				got := b.Stats().Served
				r.Figures["requests."+b.Name] = float64(got)
				r.Checks = append(r.Checks, AtMost(fmt.Sprintf("%s: distance from an even share of %s's %d requests", b.Name, s, total),
					100*math.Abs(float64(got)-even)/math.Max(even, 1), 40, "%"))
			}
		}
		r.Checks = append(r.Checks, noErrors(w, "over the run"))
		return r, nil
	},
}
