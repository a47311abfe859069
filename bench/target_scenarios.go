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

// sessionChecks reports each session's sites. With the admin API it checks, on a sample
// of each session's requests (GET /api/v1/explain), that the proxy placed them by their
// affinity key and that a session's preferred site never changed; with strict (steady,
// soak) it checks that every session was served by one site, unless the proxy spilled
// (a full site spills a session's request, by design).
func (tg *targetRun) sessionChecks(r *Result, data *targetData, strict bool) {
	o := &tg.o
	if o.Sessions == 0 {
		return
	}
	sitesOf := make([][]string, o.Sessions)
	prefOf := make([][]string, o.Sessions)
	sampled, byKey := 0, 0
	for i := range data.records {
		rec := &data.records[i]
		if rec.Outcome != OK {
			continue
		}
		k := int(rec.Seq) % o.Sessions
		site := ""
		if rec.Site >= 0 && int(rec.Site) < len(data.sites) {
			site = data.sites[rec.Site]
		}
		if ex, ok := data.explains[rec.Seq]; ok {
			if site == "" {
				site = ex.Site
			}
			sampled++
			if ex.Chosen == "affinity" {
				byKey++
			}
			if ex.Preferred != "" && !slices.Contains(prefOf[k], ex.Preferred) {
				prefOf[k] = append(prefOf[k], ex.Preferred)
			}
		}
		if site != "" && !slices.Contains(sitesOf[k], site) {
			sitesOf[k] = append(sitesOf[k], site)
		}
	}
	known, moved, prefChanged := 0, 0, 0
	for k, ss := range sitesOf {
		if len(ss) > 0 {
			known++
		}
		if len(ss) > 1 {
			moved++
		}
		if len(prefOf[k]) > 1 {
			prefChanged++
		}
	}
	r.Figures["sessions"] = float64(o.Sessions)
	r.Figures["sessions.site_known"] = float64(known)
	r.Figures["sessions.on_more_than_one_site"] = float64(moved)
	if data.explainN.asked > 0 {
		r.Figures["sessions.explain_asked"] = float64(data.explainN.asked)
		r.Figures["sessions.explain_failed"] = float64(data.explainN.failed)
	}
	if sampled > 0 {
		r.Figures["sessions.explained"] = float64(sampled)
		r.Figures["sessions.placed_by_key_pct"] = round3(pct(byKey, sampled))
		r.Figures["sessions.preferred_changed"] = float64(prefChanged)
		r.Checks = append(r.Checks,
			AtLeast("session requests the proxy placed by their affinity key (GET /api/v1/explain)", pct(byKey, sampled), 100, "%"),
			AtMost("sessions whose preferred site changed", float64(prefChanged), 0, ""))
	}
	if known == 0 {
		how := "without -admin"
		if tg.view != nil {
			how = "and GET /api/v1/explain did not say"
		}
		r.Note = joinNote(r.Note, fmt.Sprintf("stickiness not determinable: answers carry no %s header %s which site served them", o.SiteHeader, how))
		return
	}
	if known < o.Sessions {
		r.Note = joinNote(r.Note, fmt.Sprintf("the site is known for %d of %d sessions", known, o.Sessions))
	}
	if !strict {
		return
	}
	if spills := r.Figures["proxy.spills"]; spills > 0 {
		r.Note = joinNote(r.Note, fmt.Sprintf("the proxy spilled %.0f requests: a full site spills a session's request too, so sessions served by more than one site are reported, not judged", spills))
		return
	}
	r.Checks = append(r.Checks, AtMost("sessions served by more than one site", float64(moved), 0, ""))
}

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
