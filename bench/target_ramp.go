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
	n := o.RampSteps
	stepLen := d / time.Duration(n)
	ends := make([]time.Duration, n)
	rates := make([]float64, n)
	for k := range n {
		ends[k] = stepLen * time.Duration(k+1)
		rates[k] = o.Rate + (o.RampTo-o.Rate)*float64(k)/float64(n-1)
	}
	profile := func(t time.Duration) float64 {
		for k, end := range ends {
			if t < end {
				return rates[k]
			}
		}
		return rates[n-1]
	}
	judged, breach := 0, -1
	stop := func(now time.Duration, st *stepStats) bool {
		for judged < n && ends[judged]+o.Thresholds.MaxP99 <= now {
			late, errs := st.judge(judged)
			judged++
			if late > 1 || errs > o.Thresholds.MaxErrorPct {
				breach = judged - 1
				return true
			}
		}
		return false
	}
	data, err := tg.drive(ctx, "ramp", profile, d, stop, ends)
	if err != nil {
		return nil, err
	}
	r := &Result{Params: tg.params("ramp"), Figures: map[string]float64{}, Series: tg.series(data)}
	r.Params["ramp_to_rps"] = o.RampTo
	r.Params["ramp_steps"] = n
	r.Params["step_s"] = round3(stepLen.Seconds())
	r.Table = &Table{Header: []string{"step", "offered req/s", "answered 2xx req/s", "p99 ms", "not 2xx %", "held"}}
	capacity, held := 0.0, true
	for k := range n {
		from, to := ends[k]-stepLen, ends[k]
		if to > data.duration {
			break
		}
		w := data.window(from, to)
		ach := float64(w.ok) / stepLen.Seconds()
		p99 := w.hist.Quantile(0.99)
		ok := p99 <= o.Thresholds.MaxP99 && pct(w.errors(), w.n) <= o.Thresholds.MaxErrorPct && k != breach
		word := "yes"
		if !ok {
			word = "no"
			held = false
		}
		if held {
			capacity = max(capacity, ach)
		}
		r.Table.Rows = append(r.Table.Rows, []string{fmt.Sprint(k + 1), fmt.Sprintf("%.0f", float64(w.n)/stepLen.Seconds()),
			fmt.Sprintf("%.0f", ach), fmt.Sprintf("%.1f", ms(p99)), fmt.Sprintf("%.2f", pct(w.errors(), w.n)), word})
		r.Series.Marks = append(r.Series.Marks, Mark{T: from.Seconds(), Label: fmt.Sprintf("%.0f/s", rates[k])})
	}
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
		r.Figures["breach_rps"] = round3(rates[breach])
		r.Note = joinNote(r.Note, fmt.Sprintf("the step at %.0f req/s did not hold (p99 over %s or more than %g%% not 2xx): the ramp stopped there",
			rates[breach], o.Thresholds.MaxP99, o.Thresholds.MaxErrorPct))
	} else if held {
		r.Note = joinNote(r.Note, fmt.Sprintf("every step held up to %.0f req/s: the capacity is at least that (raise -ramp-to to find it)", o.RampTo))
	}
	minCap := o.Thresholds.MinCapacity
	if minCap == 0 {
		minCap = o.Rate
	}
	// A step answers a little under its offered rate by chance (Poisson arrivals): the
	// starting rate is met at 95% of it.
	if o.Thresholds.MinCapacity == 0 {
		minCap = round3(0.95 * minCap)
	}
	r.Checks = append(r.Checks, AtLeast("capacity found: highest 2xx rate of a step that held", capacity, minCap, "req/s"))
	if tg.view != nil {
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
	} else {
		r.Note = joinNote(r.Note, "verdict from the client's view only: without -admin the proxy's in-flight against limits is not judged")
	}
	tg.sessionChecks(r, data, false)
	return r, nil
}
