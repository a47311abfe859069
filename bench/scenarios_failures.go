package bench

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// The scenarios of failure: a site goes down, slows, or answers errors fast.

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
