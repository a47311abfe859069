package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// action is something a scenario does at a moment of its run: kill a site, reload.
type action struct {
	at    time.Duration
	label string
	do    func() error
	// done, if set, is the instant the action took effect (a reload: when the new Table was
	// swapped in); without it, the action is dated from when it started.
	done func() time.Time
}

// drive is one load run against an Env.
type drive struct {
	scenario string
	env      *Env
	duration time.Duration
	profile  Profile
	arrivals Arrivals
	actions  []action
	seed     uint64
	progress io.Writer // nil: quiet
}

// sample is the proxy's state at one moment.
type sample struct {
	t               time.Duration
	inflight, limit []int64
	spills, sheds   uint64
}

// runData is what a drive measured.
type runData struct {
	sites    []string
	duration time.Duration
	bucket   time.Duration // of the charts' series; 0: bucketFor(duration)
	records  []Record
	samples  []sample
	marks    []Mark
	// weights are the split's weights from each moment on (the first at 0).
	weights []weightsAt
	errs    []error // from actions
}

type weightsAt struct {
	t time.Duration
	w []int
}

// maxRequestsPerRun bounds a run's requests whatever its rate and length (1,333 req/s for
// the longest run, 10 minutes, is 800,000).
const maxRequestsPerRun = 2_000_000

// sampleEvery is how often the proxy's in-flight counts and limits are read.
const sampleEvery = 100 * time.Millisecond

// live gathers the current second's answers for the progress line.
type live struct {
	mu       sync.Mutex
	answered int
	ok       int
	errors   int
	bySite   []int
	hist     Histogram
}

func (l *live) add(r Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.answered++
	if r.Outcome == OK {
		l.ok++
		if r.Site >= 0 {
			l.bySite[r.Site]++
		}
	} else {
		l.errors++
	}
	l.hist.Record(r.Latency)
}

// take returns the second's figures and starts a new second.
func (l *live) take() (ok, errs int, bySite []int, p99 time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ok, errs, bySite, p99 = l.ok, l.errors, append([]int(nil), l.bySite...), l.hist.Quantile(0.99)
	l.answered, l.ok, l.errors = 0, 0, 0
	clear(l.bySite)
	l.hist = Histogram{}
	return
}

// run drives the load, runs the actions at their moments, samples the proxy and prints a
// progress line every second. Every goroutine it starts has ended when it returns.
func (d *drive) run(ctx context.Context) (*runData, error) {
	rng := rand.New(rand.NewPCG(d.seed, 0x5eed))
	sched := Schedule(d.profile, d.arrivals, d.duration, maxRequestsPerRun, rng)
	data := &runData{sites: d.env.Sites, duration: d.duration,
		weights: []weightsAt{{0, d.env.Weights()}}}
	lv := &live{bySite: make([]int, len(d.env.Sites))}

	bg, stopBG := context.WithCancel(ctx)
	var wg sync.WaitGroup
	start := time.Now()
	var dataMu sync.Mutex // marks, weights and errs, written by the actions
	wg.Go(func() { d.sample(bg, start, data, lv, sched) })
	wg.Go(func() {
		for _, a := range d.actions {
			t := time.NewTimer(a.at - time.Since(start))
			select {
			case <-bg.Done():
				t.Stop()
				return
			case <-t.C:
			}
			at := time.Since(start)
			err := a.do()
			if a.done != nil && err == nil {
				at = a.done().Sub(start)
			}
			dataMu.Lock()
			data.marks = append(data.marks, Mark{T: at.Seconds(), Label: a.label})
			data.weights = append(data.weights, weightsAt{at, d.env.Weights()})
			if err != nil {
				data.errs = append(data.errs, fmt.Errorf("%s: %w", a.label, err))
			}
			dataMu.Unlock()
		}
	})
	records, err := Generate(ctx, LoadOptions{Target: d.env.URL + "/", Schedule: sched,
		Sites: d.env.Sites, OnRecord: lv.add, MaxInflight: 2000})
	stopBG()
	wg.Wait()
	data.records = records
	return data, err
}

// sample reads the proxy's state every sampleEvery and prints the progress line every
// second, until ctx ends.
func (d *drive) sample(ctx context.Context, start time.Time, data *runData, lv *live, sched []time.Duration) {
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	lastPrint := time.Duration(0)
	var lastSpills, lastSheds uint64
	next := 0 // first schedule entry not yet counted as offered
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Since(start)
		s := sample{t: now}
		for _, st := range d.env.Status() {
			s.inflight = append(s.inflight, st.Inflight)
			s.limit = append(s.limit, st.Limit)
		}
		s.spills, _ = d.env.Spills()
		s.sheds = d.env.Sheds()
		data.samples = append(data.samples, s)
		if now-lastPrint < time.Second {
			continue
		}
		span := now - lastPrint
		lastPrint = now
		offered := 0
		for next < len(sched) && sched[next] <= now {
			offered++
			next++
		}
		ok, errs, bySite, p99 := lv.take()
		if d.progress == nil {
			continue
		}
		var sb strings.Builder
		fmt.Fprintf(&sb, "%-10s %5.0fs  offered %5.0f/s  achieved %5.0f/s ", d.scenario, now.Seconds(),
			float64(offered)/span.Seconds(), float64(ok)/span.Seconds())
		for i, name := range d.env.Sites {
			fmt.Fprintf(&sb, " %s %5.1f%%", name, pct(bySite[i], ok))
		}
		fmt.Fprintf(&sb, "  p99 %6s  errors %d  spills %d  sheds %d\n", fmtMS(p99), errs,
			s.spills-lastSpills, s.sheds-lastSheds)
		lastSpills, lastSheds = s.spills, s.sheds
		io.WriteString(d.progress, sb.String())
	}
}

func pct(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

func fmtMS(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	if ms >= 100 {
		return fmt.Sprintf("%.0fms", ms)
	}
	return fmt.Sprintf("%.1fms", ms)
}

// window is what the requests due in [from, to) came to.
type window struct {
	n        int // requests due
	outcomes [numOutcomes]int
	ok       int
	bySite   []int
	hist     Histogram
}

// add counts one request in w.
func (w *window) add(r *Record) {
	w.n++
	w.outcomes[r.Outcome]++
	if r.Outcome == OK {
		w.ok++
		if r.Site >= 0 {
			w.bySite[r.Site]++
		}
	}
	if r.Outcome != Overflow {
		w.hist.Record(r.Latency)
	}
}

// errors is every request not answered 2xx.
func (w *window) errors() int { return w.n - w.ok }

// share is site i's share of the 2xx answers, in %.
func (w *window) share(i int) float64 { return pct(w.bySite[i], w.ok) }

// window sums the requests due in [from, to). by selects the time a request is placed
// by: its due time (Sched) or when it was sent.
func (d *runData) window(from, to time.Duration) *window {
	return d.windowBy(from, to, func(r *Record) time.Duration { return r.Sched })
}

func (d *runData) windowBy(from, to time.Duration, at func(*Record) time.Duration) *window {
	w := &window{bySite: make([]int, len(d.sites))}
	for i := range d.records {
		r := &d.records[i]
		if t := at(r); t < from || t >= to {
			continue
		}
		w.add(r)
	}
	return w
}

// weightsAt returns the weights in force at t.
func (d *runData) weightsAt(t time.Duration) []int {
	w := d.weights[0].w
	for _, x := range d.weights {
		if x.t <= t {
			w = x.w
		}
	}
	return w
}

// targetShare is each site's share of the split, in %, for weights w.
func targetShare(w []int) []float64 {
	sum := 0
	for _, x := range w {
		sum += x
	}
	out := make([]float64, len(w))
	for i, x := range w {
		if sum > 0 {
			out[i] = 100 * float64(x) / float64(sum)
		}
	}
	return out
}

// sampleMax is the largest in-flight count of site i sampled in [from, to).
func (d *runData) sampleMax(i int, from, to time.Duration) int64 {
	var m int64
	for _, s := range d.samples {
		if s.t >= from && s.t < to && i < len(s.inflight) {
			m = max(m, s.inflight[i])
		}
	}
	return m
}

// shedsIn is the number of requests shed between the samples nearest from and to.
func (d *runData) shedsIn(from, to time.Duration) uint64 {
	var a, b uint64
	for _, s := range d.samples {
		if s.t <= from {
			a = s.sheds
		}
		if s.t <= to {
			b = s.sheds
		}
	}
	return b - a
}

// bucketFor picks the width of a chart point for a run of duration d: about 40 points.
func bucketFor(d time.Duration) time.Duration {
	b := (d / 40).Round(100 * time.Millisecond)
	return min(max(b, 100*time.Millisecond), 5*time.Second)
}

// series turns the run into the charts' data.
func (d *runData) series() *Series {
	b := d.bucket
	if b <= 0 {
		b = bucketFor(d.duration)
	}
	n := int((d.duration + b - 1) / b)
	s := &Series{Sites: d.sites, Bucket: b.Seconds(), Marks: d.marks,
		Share: make([][]float64, len(d.sites)), Target: make([][]float64, len(d.sites)),
		Inflight: make([][]float64, len(d.sites)), Limit: make([][]float64, len(d.sites))}
	ws := make([]*window, n)
	for i := range ws {
		ws[i] = &window{bySite: make([]int, len(d.sites))}
	}
	for i := range d.records {
		r := &d.records[i]
		k := int(r.Sched / b)
		if k < 0 || k >= n {
			continue
		}
		ws[k].add(r)
	}
	for k, w := range ws {
		t := time.Duration(k) * b
		s.T = append(s.T, round3(t.Seconds()))
		s.Offered = append(s.Offered, round3(float64(w.n)/b.Seconds()))
		s.Achieved = append(s.Achieved, round3(float64(w.ok)/b.Seconds()))
		s.Errors = append(s.Errors, w.errors())
		// The target of a bucket is the weights in force over it, averaged in time: a
		// bucket can span a reload.
		target := make([]float64, len(d.sites))
		const steps = 20
		for k := range steps {
			for i, v := range targetShare(d.weightsAt(t + b*time.Duration(2*k+1)/(2*steps))) {
				target[i] += v / steps
			}
		}
		for i := range d.sites {
			s.Share[i] = append(s.Share[i], round3(w.share(i)))
			s.Target[i] = append(s.Target[i], round3(target[i]))
		}
		s.P50 = append(s.P50, ms(w.hist.Quantile(0.5)))
		s.P90 = append(s.P90, ms(w.hist.Quantile(0.9)))
		s.P99 = append(s.P99, ms(w.hist.Quantile(0.99)))
	}
	for _, sm := range d.samples {
		s.ST = append(s.ST, round3(sm.t.Seconds()))
		for i := range d.sites {
			var in, lim float64
			if i < len(sm.inflight) {
				in, lim = float64(sm.inflight[i]), float64(sm.limit[i])
			}
			s.Inflight[i] = append(s.Inflight[i], in)
			s.Limit[i] = append(s.Limit[i], lim)
		}
	}
	return s
}

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

func round3(v float64) float64 {
	if v >= 0 {
		return float64(int64(v*1000+0.5)) / 1000
	}
	return -float64(int64(-v*1000+0.5)) / 1000
}
