package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/spillway/spillway/bench"
	"github.com/spillway/spillway/proxy/admin"
)

// exitVerdictFailed is bench's exit status when it ran but a verdict failed: CI tells it
// from an error (1) or a usage mistake (2).
const exitVerdictFailed = 3

// headerFlags is a repeatable -header "Name: value".
type headerFlags struct{ h http.Header }

func (f *headerFlags) String() string { return "" }

func (f *headerFlags) Set(s string) error {
	name, value, err := bench.ParseHeader(s)
	if err != nil {
		return err
	}
	if f.h == nil {
		f.h = http.Header{}
	}
	f.h.Add(name, value)
	return nil
}

// targetOnly are the flags that shape a target run; they mean nothing without -target.
var targetOnly = []string{"admin", "token-file", "ca-file", "http2", "rate", "concurrency", "timeout", "method",
	"header", "body-size", "paths", "sessions", "session-cookie", "session-header", "site-header", "spike-factor",
	"ramp-to", "ramp-steps", "max-p99", "max-error-rate", "split-tolerance", "max-growth", "min-capacity", "sample-every"}

// simulatedOnly are the flags of the simulated suite.
var simulatedOnly = []string{"short", "spillway", "v"}

// benchFlags are spillway bench's flags, parsed.
type benchFlags struct {
	scenario, out, spillwayBin, check, baseline, junit, csvFile string
	duration                                                    time.Duration
	short, verbose                                              bool
	seed                                                        uint64
	regression                                                  float64

	// Target mode's.
	target, adminURL, tokenFile, caFile, method, pathsFile string
	sessionCookie, sessionHeader, siteHeader               string
	h2                                                     bool
	headers                                                headerFlags
	concurrency, bodySize, sessions, rampSteps             int
	rate, spikeFactor, rampTo                              float64
	maxErr, splitTol, maxGrowth, minCapacity               float64
	timeout, maxP99, sampleEvery                           time.Duration
}

// parseBenchFlags parses args and refuses flags of the other mode and a -duration out of
// its mode's range, as usage mistakes.
func parseBenchFlags(args []string, stderr io.Writer) (*benchFlags, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &benchFlags{}
	f.define(fs)
	f.defineTarget(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: spillway bench [-scenario NAME|all] [-duration D] [-out DIR] [-short]
       spillway bench -target URL [-admin URL -token-file F] [-ca-file F] [-scenario steady,spike,ramp,soak] [-rate N] ...
       spillway bench -check DIR`)
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "exit status: 0 all verdicts pass, %d a verdict failed, 1 an error, 2 a usage mistake\n", exitVerdictFailed)
	}
	if err := fs.Parse(args); err != nil {
		return nil, exitError{2}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if fs.NArg() != 0 {
		fs.Usage()
		return nil, exitError{2}
	}
	if f.target == "" {
		for _, name := range targetOnly {
			if set[name] {
				return nil, benchUsageErr(stderr, "-%s needs -target", name)
			}
		}
		if f.duration < 0 || f.duration > bench.MaxDuration {
			fs.Usage()
			return nil, exitError{2}
		}
		return f, nil
	}
	for _, name := range simulatedOnly {
		if set[name] {
			return nil, benchUsageErr(stderr, "-%s is for simulated sites, not with -target", name)
		}
	}
	if f.duration < 0 || f.duration > bench.MaxTargetDuration {
		return nil, benchUsageErr(stderr, "-duration %s: want at most %s", f.duration, bench.MaxTargetDuration)
	}
	if f.tokenFile != "" && f.adminURL == "" {
		return nil, benchUsageErr(stderr, "-token-file needs -admin")
	}
	return f, nil
}

// define defines the flags of both modes and of the simulated suite.
func (f *benchFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&f.scenario, "scenario", "", "scenarios to run, comma-separated: "+strings.Join(bench.ScenarioNames(), ", ")+
		", or all (default all); with -target: "+strings.Join(bench.TargetScenarioNames(), ", ")+" (default steady)")
	fs.DurationVar(&f.duration, "duration", 0, fmt.Sprintf("length of each scenario (default %s, or %s with -short; max %s); with -target default %s, soak %s, max %s",
		bench.DefaultDuration, bench.ShortDuration, bench.MaxDuration, bench.DefaultTargetDuration, bench.DefaultSoakDuration, bench.MaxTargetDuration))
	fs.StringVar(&f.out, "out", "bench-out", "directory for report.md, report.html, results.json and series.csv")
	fs.BoolVar(&f.short, "short", false, "run every scenario briefly (CI: checks the machinery and the report, not timing)")
	fs.Uint64Var(&f.seed, "seed", 1, "seed of arrivals, service times and sessions")
	fs.StringVar(&f.spillwayBin, "spillway", "", "spillway binary for the overhead scenario (default: this one)")
	fs.BoolVar(&f.verbose, "v", false, "log the proxy's health changes and warnings to stderr")
	fs.StringVar(&f.check, "check", "", "check the report in this directory instead of running: its files there, each scenario in it with a verdict (any subset; -scenario names those required, all: the whole suite)")
	fs.StringVar(&f.baseline, "baseline", "", "results.json of an earlier run: every figure beside it, regressions fail their checks")
	fs.Float64Var(&f.regression, "regression", bench.DefaultRegressionPct, "with -baseline: % worse than the baseline that fails a judged figure (latency percentiles, error %, achieved rate, capacity)")
	fs.StringVar(&f.junit, "junit", "", "also write the verdicts as JUnit XML to this file (a test case per check)")
	fs.StringVar(&f.csvFile, "csv", "", "also write the series, a row per second, as CSV to this file (it is always in -out as series.csv)")
}

// defineTarget defines the flags of target mode.
func (f *benchFlags) defineTarget(fs *flag.FlagSet) {
	fs.StringVar(&f.target, "target", "", "URL of a running Spillway (http:// or https://) to drive instead of simulated sites")
	fs.StringVar(&f.adminURL, "admin", "", "with -target: its admin API (e.g. http://127.0.0.1:9901), for the proxy's own view, or every replica's, comma-separated, behind a fleet's address; without it, verdicts use the client's view only")
	fs.StringVar(&f.tokenFile, "token-file", "", "with -admin: file holding the admin API's bearer token (as admin.token_file; default $SPILLWAY_ADMIN_TOKEN)")
	fs.StringVar(&f.caFile, "ca-file", "", "with -target: PEM CA certificates for the target's (and the admin API's) TLS (default: the system's)")
	fs.BoolVar(&f.h2, "http2", false, "with -target: speak HTTP/2 (ALPN over https, h2c over http); default HTTP/1.1")
	fs.Float64Var(&f.rate, "rate", 0, fmt.Sprintf("with -target: offered rate in req/s (spike: the base; ramp: the start); default %d", bench.DefaultTargetRate))
	fs.IntVar(&f.concurrency, "concurrency", 0, fmt.Sprintf("with -target: most requests open at once; one due beyond it is not sent and counts (default %d)", bench.DefaultTargetConcurrency))
	fs.DurationVar(&f.timeout, "timeout", 0, "with -target: bound on each request (default 10s)")
	fs.StringVar(&f.method, "method", "", "with -target: method of every request (default GET)")
	fs.Var(&f.headers, "header", "with -target: `Name: value` added to every request (repeatable)")
	fs.IntVar(&f.bodySize, "body-size", 0, "with -target: a body of this many bytes on every request")
	fs.StringVar(&f.pathsFile, "paths", "", "with -target: file of requests sent in turn, one `METHOD URL [BODYFILE]` a line (URL: /path or http(s)://...)")
	fs.IntVar(&f.sessions, "sessions", 0, "with -target: spread requests over N sessions with affinity keys and report whether each stayed on one site")
	fs.StringVar(&f.sessionCookie, "session-cookie", "", "with -sessions: the affinity cookie (the config's affinity.cookie; default SESSION)")
	fs.StringVar(&f.sessionHeader, "session-header", "", "with -sessions: the affinity header instead of a cookie (the config's affinity.header)")
	fs.StringVar(&f.siteHeader, "site-header", "", "with -target: response header in which backends name their site (default X-Sim-Site)")
	fs.Float64Var(&f.spikeFactor, "spike-factor", 0, fmt.Sprintf("with -target: the spike's peak over -rate (default %d)", bench.DefaultSpikeFactor))
	fs.Float64Var(&f.rampTo, "ramp-to", 0, "with -target: the ramp's last rate in req/s (default 10 × -rate)")
	fs.IntVar(&f.rampSteps, "ramp-steps", 0, fmt.Sprintf("with -target: steps of the ramp (default %d)", bench.DefaultRampSteps))
	fs.DurationVar(&f.maxP99, "max-p99", 0, "with -target: highest p99 that passes (ramp: that holds) (default 1s)")
	fs.Float64Var(&f.maxErr, "max-error-rate", 0, "with -target: highest % of requests not answered 2xx that passes (default 0.1)")
	fs.Float64Var(&f.splitTol, "split-tolerance", 0, "with -target and -admin: each site's share, most percentage points from its target (default 2)")
	fs.Float64Var(&f.maxGrowth, "max-growth", 0, "with -target and -admin: soak's most growth of the proxy's memory and goroutines, % (default 20)")
	fs.Float64Var(&f.minCapacity, "min-capacity", 0, "with -target: ramp's least capacity found, req/s (default: the starting -rate)")
	fs.DurationVar(&f.sampleEvery, "sample-every", 0, "with -admin: how often the state API and /metrics are read (default 1s)")
}

// benchUsageErr prints a usage mistake and is its exit status.
func benchUsageErr(stderr io.Writer, format string, a ...any) error {
	fmt.Fprintf(stderr, "bench: "+format+"\n", a...)
	return exitError{2}
}

// checkedScenarios are the scenarios -check requires: any of either mode's, or all.
func (f *benchFlags) checkedScenarios(stderr io.Writer) ([]string, error) {
	var names []string
	for _, n := range strings.Split(f.scenario, ",") {
		if n = strings.TrimSpace(n); n != "" {
			if n != "all" && !slices.Contains(bench.ScenarioNames(), n) && !slices.Contains(bench.TargetScenarioNames(), n) {
				return nil, benchUsageErr(stderr, "unknown scenario %q", n)
			}
			names = append(names, n)
		}
	}
	return names, nil
}

// scenarioNames are the scenarios to run, each of this mode's (all: simulated only); one of
// the other mode's is a usage mistake that says so.
func (f *benchFlags) scenarioNames(stderr io.Writer) ([]string, error) {
	known := bench.ScenarioNames()
	if f.target != "" {
		known = bench.TargetScenarioNames()
	}
	var names []string
	for _, n := range strings.Split(f.scenario, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	for _, n := range names {
		switch {
		case n == "all" && f.target == "":
		case slices.Contains(known, n):
		case f.target != "" && slices.Contains(bench.ScenarioNames(), n):
			return nil, benchUsageErr(stderr, "scenario %s kills, slows or reconfigures sites: it runs only against simulated sites, not with -target (with -target: %s)",
				n, strings.Join(known, ", "))
		case f.target == "" && slices.Contains(bench.TargetScenarioNames(), n):
			return nil, benchUsageErr(stderr, "scenario %s runs only against a deployment: add -target URL", n)
		default:
			fmt.Fprintf(stderr, "bench: unknown scenario %q (have: %s%s)\n", n, strings.Join(known, ", "), map[bool]string{true: ", all"}[f.target == ""])
			return nil, exitError{2}
		}
	}
	return names, nil
}

// cmdBench runs the bench suite on loopback, or with -target against a running deployment,
// and writes its report; with -check it checks a report already written instead.
func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseBenchFlags(args, stderr)
	if err != nil {
		return err
	}
	if f.check != "" {
		names, err := f.checkedScenarios(stderr)
		if err != nil {
			return err
		}
		return checkReport(f.check, names, stdout)
	}
	names, err := f.scenarioNames(stderr)
	if err != nil {
		return err
	}
	var base *bench.Report
	if f.baseline != "" {
		if base, err = bench.ReadResults(f.baseline); err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
	}
	if f.regression <= 0 {
		return benchUsageErr(stderr, "-regression %g: want more than 0", f.regression)
	}
	bi := readBuildInfo()
	build := &bench.BuildInfo{Version: bi.Version, Revision: bi.Revision, GoVersion: bi.GoVersion, Platform: bi.Platform}

	var rep *bench.Report
	if f.target == "" {
		var log *zap.Logger
		if f.verbose {
			log = newConsoleLogger(stderr, zapcore.InfoLevel)
			defer log.Sync()
		}
		rep, err = runSimulated(ctx, f, names, build, log, stdout)
	} else {
		// Its errors before the run (rep nil) are returned below without a report.
		rep, err = runTarget(ctx, f, names, build, stdout, stderr)
	}
	if rep != nil && (err == nil || len(rep.Scenarios) > 0) {
		if werr := reportBench(f, rep, base, args, stdout); werr != nil {
			return errors.Join(err, werr)
		}
	}
	if err != nil {
		return err
	}
	if !rep.Pass {
		fmt.Fprintln(stdout, "some verdicts failed")
		return exitError{exitVerdictFailed}
	}
	fmt.Fprintln(stdout, "all verdicts pass")
	return nil
}

// runSimulated runs the scenarios named (none: all) on loopback.
func runSimulated(ctx context.Context, f *benchFlags, names []string, build *bench.BuildInfo, log *zap.Logger, stdout io.Writer) (*bench.Report, error) {
	if len(names) == 0 {
		names = []string{"all"}
	}
	o := bench.Options{Scenarios: names, Duration: f.duration, Short: f.short, Progress: stdout, Seed: f.seed,
		SpillwayBinary: f.spillwayBin, Build: build, Log: log}
	if o.SpillwayBinary == "" {
		o.SpillwayBinary = selfBinary()
	}
	fmt.Fprintf(stdout, "Spillway bench: %s on loopback; report in %s\n", strings.Join(names, ","), f.out)
	return bench.Run(ctx, o)
}

// runTarget runs the scenarios named (none: steady) against -target. An error before the
// run (the token file, the paths file, options RunTarget refuses) comes with no report.
func runTarget(ctx context.Context, f *benchFlags, names []string, build *bench.BuildInfo, stdout, stderr io.Writer) (*bench.Report, error) {
	o := bench.TargetOptions{Scenarios: names, Target: f.target, Admin: f.adminURL, CAFile: f.caFile, HTTP2: f.h2,
		Rate: f.rate, Duration: f.duration, Concurrency: f.concurrency, Timeout: f.timeout, Method: f.method,
		Header: f.headers.h, BodySize: f.bodySize, Sessions: f.sessions, SessionCookie: f.sessionCookie,
		SessionHeader: f.sessionHeader, SiteHeader: f.siteHeader, SpikeFactor: f.spikeFactor, RampTo: f.rampTo,
		RampSteps: f.rampSteps, SampleEvery: f.sampleEvery, Seed: f.seed, Progress: stdout, Build: build,
		Thresholds: bench.Thresholds{MaxP99: f.maxP99, MaxErrorPct: f.maxErr, SplitTolerancePP: f.splitTol,
			MaxGrowthPct: f.maxGrowth, MinCapacity: f.minCapacity}}
	var err error
	if f.adminURL != "" {
		if o.Token, err = readToken(f.tokenFile); err != nil {
			return nil, err
		}
	}
	if f.pathsFile != "" {
		if o.Paths, err = bench.ReadPaths(f.pathsFile, f.target); err != nil {
			fmt.Fprintln(stderr, err)
			return nil, exitError{1}
		}
	}
	view := "the client's view only (no -admin)"
	if f.adminURL != "" {
		view = "the proxy's view from " + f.adminURL + " and the client's"
	}
	shown := names
	if len(shown) == 0 {
		shown = []string{"steady"}
	}
	fmt.Fprintf(stdout, "Spillway bench: %s against %s; verdicts from %s; report in %s\n", strings.Join(shown, ","), f.target, view, f.out)
	rep, err := bench.RunTarget(ctx, o)
	if oe := (*bench.OptionsError)(nil); errors.As(err, &oe) {
		fmt.Fprintln(stderr, "bench:", oe.Err)
		return nil, exitError{2}
	}
	return rep, err
}

// reportBench writes the report's files, compared with the baseline when there is one, and
// prints where they are and each scenario's verdict (with its regressions).
func reportBench(f *benchFlags, rep, base *bench.Report, args []string, stdout io.Writer) error {
	rep.Command = bench.ShellQuote(append([]string{"spillway", "bench"}, args...))
	if base != nil {
		bench.CompareBaseline(rep, base, f.baseline, f.regression)
	}
	if err := writeBenchFiles(f.out, f.junit, f.csvFile, rep); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nreport: %s, %s, %s, %s\n", filepath.Join(f.out, bench.MarkdownFile),
		filepath.Join(f.out, bench.HTMLFile), filepath.Join(f.out, bench.ResultsFile), filepath.Join(f.out, bench.SeriesFile))
	if f.junit != "" {
		fmt.Fprintf(stdout, "junit: %s\n", f.junit)
	}
	for _, r := range rep.Scenarios {
		fmt.Fprintf(stdout, "  %-10s %s\n", r.Name, strings.ToUpper(string(r.Verdict)))
		if base != nil {
			for _, c := range r.Checks {
				if !c.Pass && strings.Contains(c.Name, "against the baseline") {
					fmt.Fprintf(stdout, "    regression: %s\n", c)
				}
			}
		}
	}
	return nil
}

// writeBenchFiles writes the report to dir and, when asked, the JUnit and CSV files.
func writeBenchFiles(dir, junit, csvFile string, rep *bench.Report) error {
	if err := bench.WriteReport(dir, rep); err != nil {
		return err
	}
	var errs []error
	if junit != "" {
		var b bytes.Buffer
		if err := bench.WriteJUnit(&b, rep); err != nil {
			errs = append(errs, fmt.Errorf("junit: %w", err))
		} else if err := os.WriteFile(junit, b.Bytes(), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("junit: %w", err))
		}
	}
	if csvFile != "" {
		var b bytes.Buffer
		if err := bench.WriteCSV(&b, rep); err != nil {
			errs = append(errs, fmt.Errorf("csv: %w", err))
		} else if err := os.WriteFile(csvFile, b.Bytes(), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("csv: %w", err))
		}
	}
	return errors.Join(errs...)
}

// readToken reads the admin API's bearer token: the first token of file, written as
// admin.token_file is ("name:secret" or a bare secret; '#' comments and blank lines
// skipped), else $SPILLWAY_ADMIN_TOKEN; "" when neither (reads on loopback need none).
func readToken(file string) (string, error) {
	if file == "" {
		return strings.TrimSpace(os.Getenv("SPILLWAY_ADMIN_TOKEN")), nil
	}
	return admin.FirstToken(file)
}

// selfBinary is this program, when it is the spillway command (not a test binary), so
// that the overhead scenario can run it as `spillway run`.
func selfBinary() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if base := filepath.Base(exe); !strings.HasPrefix(base, "spillway") || strings.HasSuffix(base, ".test") {
		return "" // a test binary would not understand `run -config`
	}
	return exe
}

// checkReport checks that dir holds a whole report: the files, results.json valid, every
// scenario there a scenario of its mode with a verdict, and those named (none: any subset)
// there. Whether verdicts passed is not its business: CI runs the bench on shared
// machines, where timing varies.
func checkReport(dir string, names []string, stdout io.Writer) error {
	for _, f := range []string{bench.MarkdownFile, bench.HTMLFile, bench.ResultsFile} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return err
		} else if st.Size() == 0 {
			return fmt.Errorf("%s is empty", filepath.Join(dir, f))
		}
	}
	rep, err := bench.ReadResults(filepath.Join(dir, bench.ResultsFile))
	if err != nil {
		return err
	}
	if slices.Contains(names, "all") {
		names = bench.ScenarioNames()
	}
	if err := bench.CheckResults(rep, names); err != nil {
		return err
	}
	for _, r := range rep.Scenarios {
		fmt.Fprintf(stdout, "%-10s %-5s %d checks\n", r.Name, r.Verdict, len(r.Checks))
	}
	fmt.Fprintf(stdout, "%s: report complete (%d scenarios)\n", dir, len(rep.Scenarios))
	return nil
}
