package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spillway/spillway/bench/sim"
)

// The overhead scenario sends the same constant rate straight to one backend and through
// each proxy, in turns within one run. Each proxy runs as its own process, so that its CPU
// time, read from /proc/PID/stat (its threads and its child processes: nginx's workers), is
// its own and not the load generator's or the backend's.

// overheadRun is what one path measured.
type overheadRun struct {
	name          string
	ok, errors    int
	cpu           time.Duration // the proxy process's; 0 for direct
	p50, p99      time.Duration
	hasCPU        bool
	skipped, note string

	satOK, satFailed int64         // closed loop, as fast as it answers
	satCPU           time.Duration // the proxy process's, over the closed loop
	idleKiB          float64       // resident KiB per idle keep-alive client connection
	hasIdle          bool

	hist Histogram // the fixed rate's latencies, over every round
}

// cpuPer is CPU µs per answered request; NaN without a measure.
func cpuPer(cpu time.Duration, ok int64, has bool) float64 {
	if !has || ok <= 0 {
		return math.NaN()
	}
	return float64(cpu.Microseconds()) / float64(ok)
}

// Sizes of the overhead scenario's other two measures.
const (
	satWorkers     = 32      // closed-loop clients
	satMaxRequests = 500_000 // bounds the closed loop in count as its duration bounds it in time
	// idleConns keep-alive connections are measured idle: fewer would be lost in the
	// steps in which a Go process's resident memory grows.
	idleConnsN = 1000
)

var overheadScenario = Scenario{
	Name:  "overhead",
	Title: "what the proxy costs",
	Description: "The same constant rate (3000 req/s; 300 with -short) straight to one simulated backend (no service " +
		"time), through Spillway, and through nginx and HAProxy when they are installed, each proxy a child " +
		"process with a config the bench writes, in turns: four rounds, every path once in each, so that the " +
		"machine's drift falls on all alike. Then, for each proxy, four rounds of a closed loop " +
		"(32 clients, as fast as it answers) and 1000 idle keep-alive client connections that made " +
		"one request each. Reported: CPU time per request of each proxy process at the fixed rate and at saturation " +
		"(from /proc/PID/stat, children included), p50 and p99 latency and what each proxy adds to the direct path, " +
		"resident memory per idle connection (VmRSS with them open, less before, over their number), and each " +
		"figure as a ratio of nginx's. Judged (loosely, as a 2-vCPU VM is noisy): Spillway answers every request, " +
		"costs at most 1 ms of CPU per request and adds at most 2 ms at p50.",
	run: runOverhead,
}

func runOverhead(ctx context.Context, c *runContext) (*Result, error) {
	rate := 3000.0 // the rate issue 17 names; a modest one for a proxy, far from saturation
	if c.Short {
		rate = 300
	}
	per := max(c.duration/2, time.Second)
	dir := filepath.Join(c.dir, "overhead")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	backend, err := sim.StartWith("127.0.0.1:0", sim.Options{Site: "origin", Name: "origin-1"})
	if err != nil {
		return nil, err
	}
	defer backend.Close()

	paths := []overheadPath{{name: "direct"}}
	var notes []string
	if c.SpillwayBinary != "" {
		paths = append(paths, spillwayPath(c.SpillwayBinary))
	} else {
		notes = append(notes, "spillway: no binary given (run `spillway bench`)")
	}
	for _, p := range []struct {
		bin  string
		make func(string) overheadPath
	}{{"nginx", nginxPath}, {"haproxy", haproxyPath}} {
		if bin, err := lookPathSbin(p.bin); err == nil {
			paths = append(paths, p.make(bin))
		} else {
			notes = append(notes, p.bin+": not installed, skipped")
		}
	}
	runs, failed := measurePaths(ctx, c, paths, dir, backend.Addr(), rate, per)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	notes = append(notes, failed...)
	r := &Result{Params: map[string]any{"rate_rps": rate, "arrivals": Uniform.String(),
		"per_path_s": per.Seconds(), "backend": "one simulated backend in the bench process, no service time",
		"cpu_source": "/proc/PID/stat utime+stime of the proxy and its children, 10 ms ticks"},
		Figures: map[string]float64{}}
	r.Params["saturation_clients"], r.Params["idle_connections"] = satWorkers, idleConnsN
	r.Params["rounds"] = overheadRounds
	direct, spill := overheadTable(r, runs)
	r.Note = strings.Join(notes, "; ")
	if spill == nil || direct == nil {
		r.Verdict = Skip
		return r, nil
	}
	r.Figures["p99_ms"] = ms(spill.p99) // the summary's columns: Spillway's
	r.Figures["errors"] = float64(spill.errors)
	r.Checks = append(r.Checks,
		AtMost("requests through Spillway not answered 2xx", float64(spill.errors+int(spill.satFailed)), 0, ""),
		AtMost("Spillway CPU per request", float64(spill.cpu.Microseconds())/math.Max(float64(spill.ok), 1), 1000, "µs"),
		AtMost("latency Spillway adds at p50", ms(spill.p50-direct.p50), 2, "ms"))
	return r, nil
}

// overheadTable fills r's table and figures from what each path measured, every figure
// beside nginx's as a ratio, and returns the direct path's and Spillway's runs (nil when
// missing).
func overheadTable(r *Result, runs []overheadRun) (direct, spill *overheadRun) {
	r.Table = &Table{Header: []string{"path", "answered", "errors", "CPU µs/request", "× nginx",
		"CPU µs/request at saturation", "× nginx", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms",
		"KiB per idle connection", "× nginx"}}
	var nginx *overheadRun
	for i := range runs {
		switch runs[i].name {
		case "direct":
			direct = &runs[i]
		case "spillway":
			spill = &runs[i]
		case "nginx":
			nginx = &runs[i]
		}
	}
	// figure adds a measure of run under key, its cell, and its ratio to nginx's.
	figure := func(row []string, col int, run overheadRun, key, format string, v, ofNginx float64) {
		if math.IsNaN(v) {
			return
		}
		row[col] = fmt.Sprintf(format, v)
		r.Figures[run.name+"."+key] = round3(v)
		if nginx != nil && !math.IsNaN(ofNginx) && ofNginx > 0 {
			row[col+1] = fmt.Sprintf("%.2f×", v/ofNginx)
			r.Figures[run.name+"."+key+"_vs_nginx"] = round3(v / ofNginx)
		}
	}
	nan := math.NaN()
	for _, run := range runs {
		row := []string{run.name, strconv.Itoa(run.ok), strconv.Itoa(run.errors), "—", "—", "—", "—",
			fmt.Sprintf("%.3f", ms(run.p50)), fmt.Sprintf("%.3f", ms(run.p99)), "—", "—", "—", "—"}
		ref := [3]float64{nan, nan, nan}
		if nginx != nil {
			ref = [3]float64{cpuPer(nginx.cpu, int64(nginx.ok), nginx.hasCPU), cpuPer(nginx.satCPU, nginx.satOK, nginx.hasCPU), nginx.idleKiB}
			if !nginx.hasIdle {
				ref[2] = nan
			}
		}
		figure(row, 3, run, "cpu_us_per_request", "%.1f", cpuPer(run.cpu, int64(run.ok), run.hasCPU), ref[0])
		figure(row, 5, run, "saturation_cpu_us_per_request", "%.1f", cpuPer(run.satCPU, run.satOK, run.hasCPU), ref[1])
		if run.hasIdle {
			figure(row, 11, run, "idle_kib_per_connection", "%.1f", run.idleKiB, ref[2])
		}
		r.Figures[run.name+".p50_ms"] = ms(run.p50)
		r.Figures[run.name+".p99_ms"] = ms(run.p99)
		r.Figures[run.name+".errors"] = float64(run.errors + int(run.satFailed))
		if direct != nil && run.name != "direct" {
			row[9] = fmt.Sprintf("%.3f", ms(run.p50-direct.p50))
			row[10] = fmt.Sprintf("%.3f", ms(run.p99-direct.p99))
			r.Figures[run.name+".added_p50_ms"] = ms(run.p50 - direct.p50)
			r.Figures[run.name+".added_p99_ms"] = ms(run.p99 - direct.p99)
		}
		r.Table.Rows = append(r.Table.Rows, row)
	}
	return direct, spill
}

// overheadRounds: each path's fixed-rate and closed-loop measures are taken in this many
// rounds, every path in turn within a round, so that the machine's drift (other tenants of
// a shared VM, its own background work) falls on all of them alike, not on whichever ran
// while it was busy.
const overheadRounds = 4

// overheadPathRun is a path under measure: its process (nil for direct) and what it
// measured so far.
type overheadPathRun struct {
	url string
	ch  *child
	run overheadRun
}

// measurePaths starts every path's proxy, then measures them in turns (overheadRounds of
// per/overheadRounds each) at the fixed rate and closed-loop, then their idle connections.
// A path that fails is left out, with a note.
func measurePaths(ctx context.Context, c *runContext, paths []overheadPath, dir, backend string, rate float64, per time.Duration) (runs []overheadRun, notes []string) {
	var started []*overheadPathRun
	defer func() {
		for _, l := range started {
			if l.ch != nil {
				l.ch.stop()
			}
		}
	}()
	for _, p := range paths {
		l := &overheadPathRun{url: "http://" + backend + "/", run: overheadRun{name: p.name}}
		if p.start != nil {
			var err error
			if l.url, l.ch, err = p.start(ctx, dir, backend); err == nil {
				if err = l.ch.waitReady(ctx, l.url); err != nil {
					l.ch.stop()
				}
			}
			if err != nil {
				notes = append(notes, fmt.Sprintf("%s: %v", p.name, err))
				continue
			}
			l.run.hasCPU = true
		}
		started = append(started, l)
	}
	step := max(per/overheadRounds, 200*time.Millisecond)
	failed := map[*overheadPathRun]error{}
	each := func(f func(*overheadPathRun) error) {
		for _, l := range started {
			if failed[l] == nil && ctx.Err() == nil {
				failed[l] = f(l)
			}
		}
	}
	each(func(l *overheadPathRun) error { return warm(ctx, l.url, rate, per/5) })
	for range overheadRounds {
		each(func(l *overheadPathRun) error { return atRate(ctx, c, l, rate, step) })
	}
	for range overheadRounds {
		each(func(l *overheadPathRun) error { return closedLoop(ctx, l, step) })
	}
	each(func(l *overheadPathRun) error {
		if l.ch == nil {
			return nil
		}
		kib, err := idleKiB(ctx, l.ch.cmd.Process.Pid, strings.TrimSuffix(strings.TrimPrefix(l.url, "http://"), "/"), idleConnsN)
		if err != nil {
			return fmt.Errorf("idle connections: %w", err)
		}
		l.run.idleKiB, l.run.hasIdle = kib, true
		return nil
	})
	for _, l := range started {
		if err := failed[l]; err != nil {
			notes = append(notes, fmt.Sprintf("%s: %v", l.run.name, err))
			continue
		}
		l.run.p50, l.run.p99 = l.run.hist.Quantile(0.5), l.run.hist.Quantile(0.99)
		runs = append(runs, l.run)
	}
	return runs, notes
}

// warm warms a path's connections and caches at the rate, unmeasured.
func warm(ctx context.Context, url string, rate float64, d time.Duration) error {
	_, err := Generate(ctx, LoadOptions{Target: url, Schedule: Schedule(Constant(rate), Uniform, d, 0, nil), Sites: []string{"origin"}})
	return err
}

// atRate sends one round of the fixed rate to l, and adds what it measured.
func atRate(ctx context.Context, c *runContext, l *overheadPathRun, rate float64, d time.Duration) error {
	var records []Record
	err := l.timed(&l.run.cpu, func() (err error) {
		lv := &live{bySite: make([]int, 1)}
		stopProgress := startProgress(ctx, c.Progress, "overhead", l.run.name, lv, rate)
		records, err = Generate(ctx, LoadOptions{Target: l.url, Schedule: Schedule(Constant(rate), Uniform, d, 0, nil),
			Sites: []string{"origin"}, OnRecord: lv.add})
		stopProgress()
		return err
	})
	if err != nil {
		return err
	}
	for _, r := range records {
		if r.Outcome == OK {
			l.run.ok++
			l.run.hist.Record(r.Latency)
		} else {
			l.run.errors++
		}
	}
	return nil
}

// closedLoop drives one round of the closed loop through l's proxy (none for direct), and
// adds what it measured.
func closedLoop(ctx context.Context, l *overheadPathRun, d time.Duration) error {
	if l.ch == nil {
		return nil
	}
	return l.timed(&l.run.satCPU, func() error {
		ok, failed := saturate(ctx, l.url, satWorkers, d, satMaxRequests/overheadRounds)
		l.run.satOK += ok
		l.run.satFailed += failed
		return nil
	})
}

// timed runs f and adds the CPU time l's proxy spent meanwhile to sum (nothing for direct).
func (l *overheadPathRun) timed(sum *time.Duration, f func() error) error {
	if l.ch == nil {
		return f()
	}
	cpu0, err := procCPU(l.ch.cmd.Process.Pid)
	if err != nil {
		return err
	}
	if err := f(); err != nil {
		return err
	}
	cpu1, err := procCPU(l.ch.cmd.Process.Pid)
	*sum += cpu1 - cpu0
	return err
}

// startProgress prints a progress line a second for a run without an Env; the returned
// function stops it and waits.
func startProgress(ctx context.Context, w io.Writer, scenario, path string, lv *live, rate float64) (stop func()) {
	if w == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		start := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			ok, errs, _, p99 := lv.take()
			fmt.Fprintf(w, "%-10s %5.0fs  offered %5.0f/s  achieved %5.0f/s  path %-8s  p99 %6s  errors %d  spills 0  sheds 0\n",
				scenario, time.Since(start).Seconds(), rate, float64(ok), path, fmtMS(p99), errs)
		}
	}()
	return func() { cancel(); <-done }
}
