package bench

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// The scenarios of change under load: the autoscaling site grows and shrinks, and the
// operator reloads the weights.

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
