package bench

import (
	"context"
	"fmt"
	"time"
)

// The ramp: the rate rises in steps until one does not hold, to find the target's capacity.

// ramp raises the rate in steps until a step does not hold, and reports the capacity.
func (tg *targetRun) ramp(ctx context.Context, d time.Duration) (*Result, error) {
	o := &tg.o
	plan := newRampPlan(o, d)
	breach := -1
	data, err := tg.drive(ctx, "ramp", plan.rate, d, plan.stopAtBreach(o.Thresholds, &breach), plan.ends)
	if err != nil {
		return nil, err
	}
	r := &Result{Params: tg.params("ramp"), Figures: map[string]float64{}, Series: tg.series(data)}
	r.Params["ramp_to_rps"] = o.RampTo
	r.Params["ramp_steps"] = len(plan.ends)
	r.Params["step_s"] = round3(plan.stepLen.Seconds())
	capacity, held := plan.judgeSteps(r, data, o.Thresholds, breach)
	w := data.window(0, data.duration)
	for k, v := range figures(w, data.sites) {
		r.Figures[k] = v
	}
	if !data.sitesNamed() {
		dropClientShares(r.Figures)
	}
	r.Figures["capacity_rps"] = round3(capacity)
	r.Figures["steps_run"] = float64(len(r.Table.Rows))
	if breach >= 0 {
		r.Figures["breach_rps"] = round3(plan.rates[breach])
		r.Note = joinNote(r.Note, fmt.Sprintf("the step at %.0f req/s did not hold (p99 over %s or more than %g%% not 2xx): the ramp stopped there",
			plan.rates[breach], o.Thresholds.MaxP99, o.Thresholds.MaxErrorPct))
	} else if held {
		r.Note = joinNote(r.Note, fmt.Sprintf("every step held up to %.0f req/s: the capacity is at least that (raise -ramp-to to find it)", o.RampTo))
	}
	r.Checks = append(r.Checks, AtLeast("capacity found: highest 2xx rate of a step that held", capacity, minCapacity(o), "req/s"))
	tg.rampProxyChecks(r, data)
	tg.sessionChecks(r, data, false)
	return r, nil
}

// rampPlan is the ramp's steps: equal lengths, rates evenly from Rate to RampTo.
type rampPlan struct {
	stepLen time.Duration
	ends    []time.Duration // each step's end
	rates   []float64       // each step's rate
}

func newRampPlan(o *TargetOptions, d time.Duration) rampPlan {
	n := o.RampSteps
	p := rampPlan{stepLen: d / time.Duration(n), ends: make([]time.Duration, n), rates: make([]float64, n)}
	for k := range n {
		p.ends[k] = p.stepLen * time.Duration(k+1)
		p.rates[k] = o.Rate + (o.RampTo-o.Rate)*float64(k)/float64(n-1)
	}
	return p
}

// rate is the ramp's Profile: the rate of the step t is in (the last one's after the end).
func (p rampPlan) rate(t time.Duration) float64 {
	for k, end := range p.ends {
		if t < end {
			return p.rates[k]
		}
	}
	return p.rates[len(p.rates)-1]
}

// stopAtBreach is drive's stop for the ramp: it judges each step once MaxP99 has passed
// since its end (the latest a request of it can still be on time), and stops the sending
// at the first that did not hold, whose index it sets in *breach.
func (p rampPlan) stopAtBreach(t Thresholds, breach *int) func(now time.Duration, st *stepStats) bool {
	judged := 0
	return func(now time.Duration, st *stepStats) bool {
		for judged < len(p.ends) && p.ends[judged]+t.MaxP99 <= now {
			late, errs := st.judge(judged)
			judged++
			if late > 1 || errs > t.MaxErrorPct {
				*breach = judged - 1
				return true
			}
		}
		return false
	}
}

// judgeSteps fills r's table with a row per step run, and returns the capacity (the
// highest 2xx rate of a step before the first that did not hold) and whether every step
// run held.
func (p rampPlan) judgeSteps(r *Result, data *targetData, t Thresholds, breach int) (capacity float64, held bool) {
	r.Table = &Table{Header: []string{"step", "offered req/s", "answered 2xx req/s", "p99 ms", "not 2xx %", "held"}}
	held = true
	for k, to := range p.ends {
		from := to - p.stepLen
		if to > data.duration {
			break
		}
		w := data.window(from, to)
		ach := float64(w.ok) / p.stepLen.Seconds()
		p99 := w.hist.Quantile(0.99)
		ok := p99 <= t.MaxP99 && pct(w.errors(), w.n) <= t.MaxErrorPct && k != breach
		word := "yes"
		if !ok {
			word = "no"
			held = false
		}
		if held {
			capacity = max(capacity, ach)
		}
		r.Table.Rows = append(r.Table.Rows, []string{fmt.Sprint(k + 1), fmt.Sprintf("%.0f", float64(w.n)/p.stepLen.Seconds()),
			fmt.Sprintf("%.0f", ach), fmt.Sprintf("%.1f", ms(p99)), fmt.Sprintf("%.2f", pct(w.errors(), w.n)), word})
		r.Series.Marks = append(r.Series.Marks, Mark{T: from.Seconds(), Label: fmt.Sprintf("%.0f/s", p.rates[k])})
	}
	return capacity, held
}

// minCapacity is the least capacity the ramp must find: MinCapacity, else the starting
// rate.
func minCapacity(o *TargetOptions) float64 {
	if o.Thresholds.MinCapacity != 0 {
		return o.Thresholds.MinCapacity
	}
	// A step answers a little under its offered rate by chance (Poisson arrivals): the
	// starting rate is met at 95% of it.
	return round3(0.95 * o.Rate)
}

// rampProxyChecks adds the proxy's view of a ramp: in-flight against limits (judged),
// spills and sheds (reported).
func (tg *targetRun) rampProxyChecks(r *Result, data *targetData) {
	if tg.view == nil {
		r.Note = joinNote(r.Note, "verdict from the client's view only: without -admin the proxy's in-flight against limits is not judged")
		return
	}
	pd := tg.delta(data)
	if pd.backendPeak != "" {
		r.Figures["proxy.backend_peak_inflight_pct"] = round3(pd.backendPeakPct)
		r.Checks = append(r.Checks, AtMost("highest in-flight at one backend, % of its limit", pd.backendPeakPct, 100, "%"))
		r.Note = joinNote(r.Note, fmt.Sprintf("fullest backend: %s at %.0f%% of its limit", pd.backendPeak, pd.backendPeakPct))
	}
	r.Figures["proxy.spills"] = pd.spillTotal
	r.Figures["proxy.sheds"] = pd.shedTotal
	for k, v := range pd.sheds {
		r.Figures["proxy.sheds."+k] = v
	}
}
