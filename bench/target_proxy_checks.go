package bench

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// The proxy's own view of a target run: what its counters say happened between the first
// and last samples of the admin API, and the checks judged from it.

// proxyDelta is what the proxy counted between its first and last good samples.
type proxyDelta struct {
	ok, answered           []float64 // by site
	spills, sheds, retries map[string]float64
	spillTotal, shedTotal  float64
	elasticSpills          float64 // spills to an elastic site
	samples, failed        int
	firstErr               error
	backendPeakPct         float64
	backendPeak            string
	reset                  bool // a counter went down: the proxy restarted during the run
	first, last            *proxySample
}

func (tg *targetRun) delta(data *targetData) *proxyDelta {
	pd := &proxyDelta{}
	for i := range data.proxy {
		s := &data.proxy[i]
		pd.samples++
		if s.err != nil {
			pd.failed++
			if pd.firstErr == nil {
				pd.firstErr = s.err
			}
			continue
		}
		if pd.first == nil {
			pd.first = s
		}
		pd.last = s
		if s.backendPeakPct > pd.backendPeakPct || pd.backendPeak == "" {
			pd.backendPeakPct, pd.backendPeak = s.backendPeakPct, s.backendPeak
		}
	}
	if pd.first == nil || pd.first == pd.last {
		return pd
	}
	a, z := pd.first, pd.last
	sub := func(x, y float64) float64 {
		if x < y {
			pd.reset = true
			return x
		}
		return x - y
	}
	for i := range z.ok {
		pd.ok = append(pd.ok, sub(z.ok[i], a.ok[i]))
		pd.answered = append(pd.answered, sub(z.answered[i], a.answered[i]))
	}
	diff := func(z, a map[string]float64) map[string]float64 {
		out := map[string]float64{}
		for k, v := range z {
			if d := sub(v, a[k]); d > 0 {
				out[k] = d
			}
		}
		return out
	}
	pd.spills, pd.sheds, pd.retries = diff(z.spills, a.spills), diff(z.sheds, a.sheds), diff(z.retries, a.retries)
	pd.spillTotal, pd.shedTotal = sumValues(pd.spills), sumValues(pd.sheds)
	for k, n := range pd.spills {
		to := k[strings.IndexByte(k, '>')+1:]
		to = to[:strings.IndexByte(to+" ", ' ')]
		if i := slices.Index(tg.view.sites, to); i >= 0 && tg.view.elastic[i] {
			pd.elasticSpills += n
		}
	}
	return pd
}

// proxyChecks adds the proxy's own view: its figures, and the checks of scenario name.
func (tg *targetRun) proxyChecks(r *Result, data *targetData, name string) {
	if tg.view == nil {
		r.Note = joinNote(r.Note, "verdict from the client's view only: without -admin the split, in-flight against limits, spills and sheds are not judged")
		return
	}
	pd := tg.delta(data)
	r.Figures["proxy.samples"] = float64(pd.samples)
	r.Figures["proxy.samples_failed"] = float64(pd.failed)
	if pd.first == nil || pd.first == pd.last {
		msg := "the admin API gave no usable samples during the run: the proxy's view is not judged"
		if pd.firstErr != nil {
			msg += " (" + pd.firstErr.Error() + ")"
		}
		r.Note = joinNote(r.Note, msg)
		return
	}
	if pd.failed > 0 {
		r.Note = joinNote(r.Note, fmt.Sprintf("%d of %d samples of the admin API failed, the first: %v", pd.failed, pd.samples, pd.firstErr))
	}
	if pd.reset {
		r.Note = joinNote(r.Note, "a counter of the proxy went down during the run (a restart, or another replica answered the admin API): its counts are from the last start")
	}
	var ok float64
	for i, s := range tg.view.sites {
		ok += pd.ok[i]
		r.Figures["proxy.answered."+s] = pd.answered[i]
		r.Figures["proxy.target_share."+s] = round3(tg.view.target[i])
	}
	for i, s := range tg.view.sites {
		r.Figures["proxy.share."+s] = round3(100 * pd.ok[i] / math.Max(ok, 1))
	}
	r.Figures["proxy.ok"] = ok
	r.Figures["proxy.spills"] = pd.spillTotal
	for k, n := range pd.spills {
		r.Figures["proxy.spills."+strings.Replace(k, " ", ".", 1)] = n
	}
	r.Figures["proxy.sheds"] = pd.shedTotal
	for k, n := range pd.sheds {
		r.Figures["proxy.sheds."+k] = n
	}
	for k, n := range pd.retries {
		r.Figures["proxy.retries."+k] = n
	}
	if pd.backendPeak != "" {
		r.Figures["proxy.backend_peak_inflight_pct"] = round3(pd.backendPeakPct)
		// Check names stay the same from run to run (CI systems follow a JUnit test case by
		// its name): the backend is named in the note.
		r.Checks = append(r.Checks, AtMost("highest in-flight at one backend, % of its limit", pd.backendPeakPct, 100, "%"))
		r.Note = joinNote(r.Note, fmt.Sprintf("fullest backend: %s at %.0f%% of its limit (in-flight sampled every %s)", pd.backendPeak, pd.backendPeakPct, tg.o.SampleEvery))
	}
	switch name {
	case "steady", "soak":
		if tg.o.Sessions > 0 {
			r.Note = joinNote(r.Note, "with -sessions the proxy places each session by its affinity key, not by the weighted round robin: the shares are reported, not judged")
		} else if ok > 0 {
			for i, s := range tg.view.sites {
				if tg.view.target[i] > 0 || pd.ok[i] > 0 {
					r.Checks = append(r.Checks, Near(s+" share of the proxy's 2xx answers", 100*pd.ok[i]/ok,
						round3(tg.view.target[i]), tg.o.Thresholds.SplitTolerancePP, "%"))
				}
			}
		} else {
			r.Note = joinNote(r.Note, "the proxy counted no 2xx answer (spillway_requests_total): is -admin the admin API of -target?")
		}
		r.Checks = append(r.Checks, AtMost("requests shed by the proxy (spillway_shed_total)", pd.shedTotal, 0, ""))
	case "spike":
		elastic := slices.Contains(tg.view.elastic, true)
		if elastic && pd.spillTotal > 0 {
			r.Figures["proxy.spills_to_elastic_pct"] = round3(100 * pd.elasticSpills / pd.spillTotal)
			r.Checks = append(r.Checks, AtLeast("spills that went to an elastic site", 100*pd.elasticSpills/pd.spillTotal, 95, "%"))
		}
	}
	if name == "soak" {
		pd.growth(data, r, tg.o.Thresholds.MaxGrowthPct, adminURLs(tg.o.Admin))
	}
}

// growth compares the proxy's memory and goroutines at the end of the run with early in
// it (the median of the samples from 10% to 20% of the run, after warm-up, against the
// median of the last 10%), replica by replica: the check is the replica that grew most.
func (pd *proxyDelta) growth(data *targetData, r *Result, limit float64, replicas []string) {
	d := data.duration
	median := func(from, to time.Duration, v func(*proxySample) float64) float64 {
		var xs []float64
		for i := range data.proxy {
			s := &data.proxy[i]
			if s.err == nil && s.t >= from && s.t <= to && !math.IsNaN(v(s)) {
				xs = append(xs, v(s))
			}
		}
		if len(xs) == 0 {
			return math.NaN()
		}
		slices.Sort(xs)
		return xs[len(xs)/2]
	}
	for _, m := range []struct {
		key, what string
		v         func(s *proxySample, k int) float64
		scale     float64
	}{
		{"rss_mb", "resident memory (process_resident_memory_bytes)", func(s *proxySample, k int) float64 { return s.rss[k] }, 1 << 20},
		{"goroutines", "goroutines (go_goroutines)", func(s *proxySample, k int) float64 { return s.goroutine[k] }, 1},
	} {
		worst, worstK := math.Inf(-1), -1
		var worstEarly, worstLate float64
		for k := range replicas {
			v := func(s *proxySample) float64 { return m.v(s, k) }
			early := median(d/10, d/5, v)
			late := median(d-d/10, d+time.Hour, v)
			if math.IsNaN(early) || math.IsNaN(late) || early <= 0 {
				continue
			}
			if g := 100 * (late - early) / early; g > worst {
				worst, worstK, worstEarly, worstLate = g, k, early, late
			}
		}
		if worstK < 0 {
			r.Note = joinNote(r.Note, fmt.Sprintf("the proxy's /metrics has no %s samples early and late in the run: its growth is not judged", m.what))
			continue
		}
		r.Figures["proxy."+m.key+".early"] = round3(worstEarly / m.scale)
		r.Figures["proxy."+m.key+".end"] = round3(worstLate / m.scale)
		if len(replicas) > 1 {
			r.Note = joinNote(r.Note, fmt.Sprintf("%s grew most at %s", m.what, replicas[worstK]))
		}
		r.Checks = append(r.Checks, AtMost(fmt.Sprintf("proxy %s at the end, %% above early in the run", m.what), worst, limit, "%"))
	}
}
