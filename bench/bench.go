// Package bench is Spillway's bench suite: reproducible scenarios that a load tester runs
// to show that the split holds, that spikes spill to the elastic pool, that outages and
// brownouts are absorbed, that reloads lose nothing, and what the proxy costs.
//
// Each scenario starts simulated sites on loopback (package bench/sim: capacity, log-normal
// service times, injected faults, an autoscaling group) and Spillway in front of them,
// built as `spillway run` builds it; drives an open-loop load (Schedule, Generate: requests
// leave on a schedule, so latency is free of coordinated omission, and is recorded in
// log-bucketed histograms); and judges what it measured against explicit thresholds
// (Check). Run runs scenarios and returns a Report; WriteReport writes it as report.md,
// report.html (self-contained, with SVG charts), results.json and series.csv.
//
// RunTarget is target mode: the load-shaped scenarios (steady, spike, ramp, soak) against a
// running Spillway and its real backends, judged from the client's view and, through the
// proxy's admin API (state, /metrics, explain), from the proxy's own. CompareBaseline
// judges a run against an earlier results.json; WriteJUnit and WriteCSV export it.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Options configure a bench run.
type Options struct {
	// Scenarios are the names to run, in suite order; empty or "all": every one.
	Scenarios []string
	// Duration is each scenario's length; 0: DefaultDuration, or ShortDuration with Short.
	Duration time.Duration
	// Short runs every scenario briefly (CI: the verdict machinery and the report, not
	// timing).
	Short bool
	// Progress receives one line per second of every run; nil: none.
	Progress io.Writer
	// Dir holds scratch files (targets files, proxy configs); "": a temporary directory.
	Dir string
	// SpillwayBinary is the spillway command, run as a child process by the overhead
	// scenario so that its CPU time is its own, and as the fleet scenario's replicas; "":
	// the overhead scenario skips Spillway and the fleet scenario is skipped.
	SpillwayBinary string
	// Seed makes arrivals and service times repeatable.
	Seed uint64
	// Log receives the proxy's logs; nil: none.
	Log *zap.Logger
	// Build is this build of Spillway, for the report; nil: not recorded.
	Build *BuildInfo
}

// Default lengths of a scenario.
const (
	DefaultDuration = 20 * time.Second
	ShortDuration   = 4 * time.Second
	MaxDuration     = 10 * time.Minute
)

// Scenario is one scenario of the suite.
type Scenario struct {
	Name, Title string
	// Description says what it does and how it is judged.
	Description string
	run         func(ctx context.Context, c *runContext) (*Result, error)
}

// runContext is what a scenario runs with.
type runContext struct {
	Options
	duration time.Duration
	dir      string
	lastRun  *runData // the scenario's load run, for its per-second series
}

// settle is how long after a change (a kill, a restore, the end of a spike) the split is
// given before it is judged: health checks need a few intervals to see a change.
func (c *runContext) settle() time.Duration {
	if c.Short {
		return 500 * time.Millisecond
	}
	return time.Second
}

// healthInterval is the simulated sites' health-check interval.
func (c *runContext) healthInterval() time.Duration { return 100 * time.Millisecond }

// Scenarios lists the suite in the order it runs.
func Scenarios() []Scenario {
	return []Scenario{steadyScenario, spikeScenario, outageScenario, brownoutScenario,
		scaleOutScenario, reloadScenario, blackholeScenario, lowloadScenario, overheadScenario, fleetScenario}
}

// ScenarioNames lists the names of the suite's scenarios.
func ScenarioNames() []string {
	var out []string
	for _, s := range Scenarios() {
		out = append(out, s.Name)
	}
	return out
}

// Run runs the chosen scenarios one after the other and returns the report. A scenario
// that cannot run gets verdict Error and the suite goes on; Run's error is for a bad
// option or a cancelled ctx.
func Run(ctx context.Context, o Options) (*Report, error) {
	var chosen []Scenario
	all := len(o.Scenarios) == 0 || slices.Contains(o.Scenarios, "all")
	for _, s := range Scenarios() {
		if all || slices.Contains(o.Scenarios, s.Name) {
			chosen = append(chosen, s)
		}
	}
	for _, name := range o.Scenarios {
		if name != "all" && !slices.Contains(ScenarioNames(), name) {
			return nil, fmt.Errorf("unknown scenario %q (have: %s, all)", name, strings.Join(ScenarioNames(), ", "))
		}
	}
	if o.Duration < 0 || o.Duration > MaxDuration {
		return nil, fmt.Errorf("duration %s: want at most %s", o.Duration, MaxDuration)
	}
	c := &runContext{Options: o, duration: o.Duration}
	if c.duration == 0 {
		c.duration = DefaultDuration
		if o.Short {
			c.duration = ShortDuration
		}
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	c.dir = o.Dir
	if c.dir == "" {
		dir, err := os.MkdirTemp("", "spillway-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		c.dir = dir
	}
	rep := &Report{Started: time.Now().UTC().Format(time.RFC3339), Short: o.Short, Machine: machine(),
		Mode: ModeSimulated, Seed: o.Seed, Spillway: o.Build}
	begin := time.Now()
	for _, s := range chosen {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if c.Progress != nil {
			fmt.Fprintf(c.Progress, "=== %s: %s\n", s.Name, s.Title)
		}
		t0 := time.Now()
		c.lastRun = nil
		r, err := s.run(ctx, c)
		if r == nil {
			r = &Result{}
		}
		if d := c.lastRun; d != nil && r.Series != nil && r.Series.Bucket != 1 {
			// The charts' points are finer than a second; spreadsheets get seconds.
			// (The proxy's samples stay in Series alone.)
			d.bucket = time.Second
			ps := d.series()
			ps.ST, ps.Inflight, ps.Limit, ps.Marks = nil, nil, nil, nil
			r.PerSecond = ps
		}
		r.Name, r.Title, r.Description = s.Name, s.Title, s.Description
		if err != nil {
			r.Verdict, r.Note = Error, err.Error()
		}
		r.Judge()
		r.Seconds = round3(time.Since(t0).Seconds())
		rep.Scenarios = append(rep.Scenarios, r)
		if c.Progress != nil {
			fmt.Fprintf(c.Progress, "--- %s: %s\n", s.Name, strings.ToUpper(string(r.Verdict)))
			for _, ch := range r.Checks {
				fmt.Fprintf(c.Progress, "    %s\n", ch)
			}
			if r.Note != "" {
				fmt.Fprintf(c.Progress, "    note: %s\n", r.Note)
			}
		}
	}
	rep.Seconds = round3(time.Since(begin).Seconds())
	rep.judge()
	return rep, ctx.Err()
}

func machine() Machine {
	m := Machine{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	m.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}
