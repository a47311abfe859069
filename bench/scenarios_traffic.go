package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/spillway/spillway/bench/sim"
)

// The scenarios of traffic alone: the sites stay as they are and only the load changes
// (steady, a spike, one request at a time).

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
