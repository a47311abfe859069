package bench

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// scenario runs one target scenario and judges it.
func (tg *targetRun) scenario(ctx context.Context, name string) (*Result, error) {
	o := &tg.o
	d := o.durationOf(name)
	switch name {
	case "steady", "soak":
		data, err := tg.drive(ctx, name, Constant(o.Rate), d, nil, nil)
		if err != nil {
			return nil, err
		}
		r := tg.result(name, data, 0, data.duration)
		tg.proxyChecks(r, data, name)
		tg.sessionChecks(r, data, true)
		if name == "soak" && tg.view == nil {
			r.Note = joinNote(r.Note, "soak without -admin: the proxy's memory and goroutines are not watched")
		}
		return r, nil
	case "spike":
		from, to := time.Duration(0.35*float64(d)), time.Duration(0.65*float64(d))
		data, err := tg.drive(ctx, name, Spike(o.Rate, o.Rate*o.SpikeFactor, from, to), d, nil, nil)
		if err != nil {
			return nil, err
		}
		r := tg.result(name, data, 0, data.duration)
		during := data.window(from, to)
		r.Figures["spike.p99_ms"] = ms(during.hist.Quantile(0.99))
		r.Figures["spike.error_pct"] = round3(pct(during.errors(), during.n))
		r.Figures["spike.achieved_rps"] = round3(float64(during.ok) / (to - from).Seconds())
		r.Params["spike_rps"] = o.Rate * o.SpikeFactor
		r.Params["spike_from_s"], r.Params["spike_to_s"] = from.Seconds(), to.Seconds()
		r.Series.Marks = append(r.Series.Marks, Mark{T: from.Seconds(), Label: "spike"}, Mark{T: to.Seconds(), Label: "spike ends"})
		tg.proxyChecks(r, data, name)
		tg.sessionChecks(r, data, false)
		return r, nil
	case "ramp":
		return tg.ramp(ctx, d)
	}
	return nil, fmt.Errorf("unknown scenario %q", name)
}

// result is the figures and client checks every target scenario has, over [from, to).
func (tg *targetRun) result(name string, data *targetData, from, to time.Duration) *Result {
	o := &tg.o
	w := data.window(from, to)
	r := &Result{Params: tg.params(name), Figures: figures(w, data.sites), Series: tg.series(data)}
	span := (to - from).Seconds()
	r.Figures["offered_rps"] = round3(float64(w.n) / span)
	r.Figures["achieved_rps"] = round3(float64(w.ok) / span)
	r.Figures["error_pct"] = round3(pct(w.errors(), w.n))
	r.Figures["status_4xx"] = float64(w.outcomes[Status4xx])
	// The status mix: every status the client got, and "none" for no answer.
	for i := range data.records {
		rec := &data.records[i]
		if rec.Sched < from || rec.Sched >= to || rec.Outcome == Overflow {
			continue
		}
		key := "status.none"
		if rec.Status > 0 {
			key = "status." + strconv.Itoa(rec.Status)
		}
		r.Figures[key]++
	}
	r.Checks = append(r.Checks,
		AtMost("p99 over the run", ms(w.hist.Quantile(0.99)), ms(o.Thresholds.MaxP99), "ms"),
		AtMost("requests not answered 2xx over the run, % of requests", pct(w.errors(), w.n), o.Thresholds.MaxErrorPct, "%"),
		AtMost("requests not sent for -concurrency open", float64(w.outcomes[Overflow]), 0, ""))
	if !data.sitesNamed() {
		dropClientShares(r.Figures)
		r.Note = joinNote(r.Note, fmt.Sprintf("answers name no site (no %s header): the client's view has no split", o.SiteHeader))
	}
	return r
}

// sitesNamed reports whether any answer named its site (SiteHeader).
func (d *targetData) sitesNamed() bool {
	for i := range d.records {
		if d.records[i].Site >= 0 {
			return true
		}
	}
	return false
}

// dropClientShares removes the client's shares by site from f: without a site header they
// are all 0, which would read as a split.
func dropClientShares(f map[string]float64) {
	for k := range f {
		if strings.HasPrefix(k, "share.") {
			delete(f, k)
		}
	}
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// params are the run's settings, for the report.
func (tg *targetRun) params(name string) map[string]any {
	o := &tg.o
	p := map[string]any{
		"target":      o.Target,
		"rate_rps":    o.Rate,
		"duration_s":  o.durationOf(name).Seconds(),
		"arrivals":    Poisson.String(),
		"concurrency": o.Concurrency,
		"timeout":     o.Timeout.String(),
		"protocol":    tg.rep.Target.Protocol,
		"method":      o.Method,
		"body_bytes":  o.BodySize,
		"seed":        o.Seed,
		"max_p99_ms":  ms(o.Thresholds.MaxP99),
		"max_error_%": o.Thresholds.MaxErrorPct,
	}
	if o.Admin != "" {
		p["admin"] = o.Admin
		p["sample_every"] = o.SampleEvery.String()
	}
	if len(o.Paths) > 0 {
		p["paths"] = len(o.Paths)
		delete(p, "method")
	}
	if len(o.Header) > 0 {
		var hs []string
		for k := range o.Header {
			hs = append(hs, k)
		}
		slices.Sort(hs)
		p["headers"] = strings.Join(hs, ", ")
	}
	if o.Sessions > 0 {
		p["sessions"] = o.Sessions
		p["session_key"] = sessionKeyText(o)
	}
	return p
}

// series is the charts' data: by the client's view of the sites when answers name them,
// else by the proxy's (its 2xx answers per site between samples).
func (tg *targetRun) series(data *targetData) *Series {
	s := data.series()
	if s.Sites == nil {
		s.Sites = []string{}
	}
	if data.sitesNamed() || tg.view == nil || len(data.proxy) < 2 {
		return s
	}
	// The proxy's view: the answers per site between the samples around each bucket.
	sites := tg.view.sites
	s.Sites = sites
	s.Share = make([][]float64, len(sites))
	s.Target = make([][]float64, len(sites))
	at := func(t time.Duration) *proxySample { // the last good sample at or before t
		var best *proxySample
		for i := range data.proxy {
			if p := &data.proxy[i]; p.err == nil && p.t <= t {
				best = p
			}
		}
		return best
	}
	b := time.Duration(s.Bucket * float64(time.Second))
	for k := range s.T {
		t0 := time.Duration(k) * b
		a, z := at(t0), at(t0+b)
		var total float64
		okBy := make([]float64, len(sites))
		if a != nil && z != nil && z != a {
			for i := range sites {
				okBy[i] = z.ok[i] - a.ok[i]
				total += okBy[i]
			}
		}
		for i := range sites {
			v := math.NaN()
			if total > 0 {
				v = round3(100 * okBy[i] / total)
			}
			s.Share[i] = append(s.Share[i], v)
			s.Target[i] = append(s.Target[i], round3(tg.view.target[i]))
		}
	}
	// NaN is not JSON: a bucket without samples on both sides shares 0.
	for i := range s.Share {
		for k, v := range s.Share[i] {
			if math.IsNaN(v) {
				s.Share[i][k] = 0
			}
		}
	}
	return s
}
