package main

import (
	"bufio"
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

	"go.uber.org/zap/zapcore"

	"github.com/spillway/spillway/bench"
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

// cmdBench runs the bench suite on loopback, or with -target against a running deployment,
// and writes its report; with -check it checks a report already written instead.
func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenario := fs.String("scenario", "", "scenarios to run, comma-separated: "+strings.Join(bench.ScenarioNames(), ", ")+
		", or all (default all); with -target: "+strings.Join(bench.TargetScenarioNames(), ", ")+" (default steady)")
	duration := fs.Duration("duration", 0, fmt.Sprintf("length of each scenario (default %s, or %s with -short; max %s); with -target default %s, soak %s, max %s",
		bench.DefaultDuration, bench.ShortDuration, bench.MaxDuration, bench.DefaultTargetDuration, bench.DefaultSoakDuration, bench.MaxTargetDuration))
	out := fs.String("out", "bench-out", "directory for report.md, report.html, results.json and series.csv")
	short := fs.Bool("short", false, "run every scenario briefly (CI: checks the machinery and the report, not timing)")
	seed := fs.Uint64("seed", 1, "seed of arrivals, service times and sessions")
	spillwayBin := fs.String("spillway", "", "spillway binary for the overhead scenario (default: this one)")
	verbose := fs.Bool("v", false, "log the proxy's health changes and warnings to stderr")
	check := fs.String("check", "", "check the report in this directory instead of running: its files there, each scenario in it with a verdict (any subset; -scenario names those required, all: the whole suite)")
	baseline := fs.String("baseline", "", "results.json of an earlier run: every figure beside it, regressions fail their checks")
	regression := fs.Float64("regression", bench.DefaultRegressionPct, "with -baseline: % worse than the baseline that fails a judged figure (latency percentiles, error %, achieved rate, capacity)")
	junit := fs.String("junit", "", "also write the verdicts as JUnit XML to this file (a test case per check)")
	csvFile := fs.String("csv", "", "also write the series, a row per second, as CSV to this file (it is always in -out as series.csv)")

	target := fs.String("target", "", "URL of a running Spillway (http:// or https://) to drive instead of simulated sites")
	adminURL := fs.String("admin", "", "with -target: its admin API (e.g. http://127.0.0.1:9901), for the proxy's own view, or every replica's, comma-separated, behind a fleet's address; without it, verdicts use the client's view only")
	tokenFile := fs.String("token-file", "", "with -admin: file holding the admin API's bearer token (as admin.token_file; default $SPILLWAY_ADMIN_TOKEN)")
	caFile := fs.String("ca-file", "", "with -target: PEM CA certificates for the target's (and the admin API's) TLS (default: the system's)")
	h2 := fs.Bool("http2", false, "with -target: speak HTTP/2 (ALPN over https, h2c over http); default HTTP/1.1")
	rate := fs.Float64("rate", 0, fmt.Sprintf("with -target: offered rate in req/s (spike: the base; ramp: the start); default %d", bench.DefaultTargetRate))
	concurrency := fs.Int("concurrency", 0, fmt.Sprintf("with -target: most requests open at once; one due beyond it is not sent and counts (default %d)", bench.DefaultTargetConcurrency))
	timeout := fs.Duration("timeout", 0, "with -target: bound on each request (default 10s)")
	method := fs.String("method", "", "with -target: method of every request (default GET)")
	var headers headerFlags
	fs.Var(&headers, "header", "with -target: `Name: value` added to every request (repeatable)")
	bodySize := fs.Int("body-size", 0, "with -target: a body of this many bytes on every request")
	pathsFile := fs.String("paths", "", "with -target: file of requests sent in turn, one `METHOD URL [BODYFILE]` a line (URL: /path or http(s)://...)")
	sessions := fs.Int("sessions", 0, "with -target: spread requests over N sessions with affinity keys and report whether each stayed on one site")
	sessionCookie := fs.String("session-cookie", "", "with -sessions: the affinity cookie (the config's affinity.cookie; default SESSION)")
	sessionHeader := fs.String("session-header", "", "with -sessions: the affinity header instead of a cookie (the config's affinity.header)")
	siteHeader := fs.String("site-header", "", "with -target: response header in which backends name their site (default X-Sim-Site)")
	spikeFactor := fs.Float64("spike-factor", 0, fmt.Sprintf("with -target: the spike's peak over -rate (default %d)", bench.DefaultSpikeFactor))
	rampTo := fs.Float64("ramp-to", 0, "with -target: the ramp's last rate in req/s (default 10 × -rate)")
	rampSteps := fs.Int("ramp-steps", 0, fmt.Sprintf("with -target: steps of the ramp (default %d)", bench.DefaultRampSteps))
	maxP99 := fs.Duration("max-p99", 0, "with -target: highest p99 that passes (ramp: that holds) (default 1s)")
	maxErr := fs.Float64("max-error-rate", 0, "with -target: highest % of requests not answered 2xx that passes (default 0.1)")
	splitTol := fs.Float64("split-tolerance", 0, "with -target and -admin: each site's share, most percentage points from its target (default 2)")
	maxGrowth := fs.Float64("max-growth", 0, "with -target and -admin: soak's most growth of the proxy's memory and goroutines, % (default 20)")
	minCapacity := fs.Float64("min-capacity", 0, "with -target: ramp's least capacity found, req/s (default: the starting -rate)")
	sampleEvery := fs.Duration("sample-every", 0, "with -admin: how often the state API and /metrics are read (default 1s)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: spillway bench [-scenario NAME|all] [-duration D] [-out DIR] [-short]
       spillway bench -target URL [-admin URL -token-file F] [-ca-file F] [-scenario steady,spike,ramp,soak] [-rate N] ...
       spillway bench -check DIR`)
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "exit status: 0 all verdicts pass, %d a verdict failed, 1 an error, 2 a usage mistake\n", exitVerdictFailed)
	}
	if err := fs.Parse(args); err != nil {
		return exitError{2}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	usageErr := func(format string, a ...any) error {
		fmt.Fprintf(stderr, "bench: "+format+"\n", a...)
		return exitError{2}
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return exitError{2}
	}
	if *target == "" {
		for _, name := range targetOnly {
			if set[name] {
				return usageErr("-%s needs -target", name)
			}
		}
		if *duration < 0 || *duration > bench.MaxDuration {
			fs.Usage()
			return exitError{2}
		}
	} else {
		for _, name := range simulatedOnly {
			if set[name] {
				return usageErr("-%s is for simulated sites, not with -target", name)
			}
		}
		if *duration < 0 || *duration > bench.MaxTargetDuration {
			return usageErr("-duration %s: want at most %s", *duration, bench.MaxTargetDuration)
		}
		if *tokenFile != "" && *adminURL == "" {
			return usageErr("-token-file needs -admin")
		}
	}
	if *check != "" {
		var names []string
		for _, n := range strings.Split(*scenario, ",") {
			if n = strings.TrimSpace(n); n != "" {
				if n != "all" && !slices.Contains(bench.ScenarioNames(), n) && !slices.Contains(bench.TargetScenarioNames(), n) {
					return usageErr("unknown scenario %q", n)
				}
				names = append(names, n)
			}
		}
		return checkReport(*check, names, stdout)
	}
	known := bench.ScenarioNames()
	if *target != "" {
		known = bench.TargetScenarioNames()
	}
	var names []string
	for _, n := range strings.Split(*scenario, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	for _, n := range names {
		switch {
		case n == "all" && *target == "":
		case slices.Contains(known, n):
		case *target != "" && slices.Contains(bench.ScenarioNames(), n):
			return usageErr("scenario %s kills, slows or reconfigures sites: it runs only against simulated sites, not with -target (with -target: %s)",
				n, strings.Join(known, ", "))
		case *target == "" && slices.Contains(bench.TargetScenarioNames(), n):
			return usageErr("scenario %s runs only against a deployment: add -target URL", n)
		default:
			fmt.Fprintf(stderr, "bench: unknown scenario %q (have: %s%s)\n", n, strings.Join(known, ", "), map[bool]string{true: ", all"}[*target == ""])
			return exitError{2}
		}
	}
	var base *bench.Report
	if *baseline != "" {
		var err error
		if base, err = bench.ReadResults(*baseline); err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
	}
	if *regression <= 0 {
		return usageErr("-regression %g: want more than 0", *regression)
	}
	bi := readBuildInfo()
	build := &bench.BuildInfo{Version: bi.Version, Revision: bi.Revision, GoVersion: bi.GoVersion, Platform: bi.Platform}

	var rep *bench.Report
	var err error
	if *target == "" {
		if len(names) == 0 {
			names = []string{"all"}
		}
		o := bench.Options{Scenarios: names, Duration: *duration, Short: *short, Progress: stdout, Seed: *seed,
			SpillwayBinary: *spillwayBin, Build: build}
		if o.SpillwayBinary == "" {
			o.SpillwayBinary = selfBinary()
		}
		if *verbose {
			o.Log = newConsoleLogger(stderr, zapcore.InfoLevel)
			defer o.Log.Sync()
		}
		fmt.Fprintf(stdout, "Spillway bench: %s on loopback; report in %s\n", strings.Join(names, ","), *out)
		rep, err = bench.Run(ctx, o)
	} else {
		o := bench.TargetOptions{Scenarios: names, Target: *target, Admin: *adminURL, CAFile: *caFile, HTTP2: *h2,
			Rate: *rate, Duration: *duration, Concurrency: *concurrency, Timeout: *timeout, Method: *method,
			Header: headers.h, BodySize: *bodySize, Sessions: *sessions, SessionCookie: *sessionCookie,
			SessionHeader: *sessionHeader, SiteHeader: *siteHeader, SpikeFactor: *spikeFactor, RampTo: *rampTo,
			RampSteps: *rampSteps, SampleEvery: *sampleEvery, Seed: *seed, Progress: stdout, Build: build,
			Thresholds: bench.Thresholds{MaxP99: *maxP99, MaxErrorPct: *maxErr, SplitTolerancePP: *splitTol,
				MaxGrowthPct: *maxGrowth, MinCapacity: *minCapacity}}
		if *adminURL != "" {
			if o.Token, err = readToken(*tokenFile); err != nil {
				return err
			}
		}
		if *pathsFile != "" {
			if o.Paths, err = bench.ReadPaths(*pathsFile, *target); err != nil {
				fmt.Fprintln(stderr, err)
				return exitError{1}
			}
		}
		view := "the client's view only (no -admin)"
		if *adminURL != "" {
			view = "the proxy's view from " + *adminURL + " and the client's"
		}
		shown := names
		if len(shown) == 0 {
			shown = []string{"steady"}
		}
		fmt.Fprintf(stdout, "Spillway bench: %s against %s; verdicts from %s; report in %s\n", strings.Join(shown, ","), *target, view, *out)
		rep, err = bench.RunTarget(ctx, o)
		if oe := (*bench.OptionsError)(nil); errors.As(err, &oe) {
			fmt.Fprintln(stderr, "bench:", oe.Err)
			return exitError{2}
		}
	}
	if rep != nil && (err == nil || len(rep.Scenarios) > 0) {
		rep.Command = bench.ShellQuote(append([]string{"spillway", "bench"}, args...))
		if base != nil {
			bench.CompareBaseline(rep, base, *baseline, *regression)
		}
		if werr := writeBenchFiles(*out, *junit, *csvFile, rep); werr != nil {
			return errors.Join(err, werr)
		}
		fmt.Fprintf(stdout, "\nreport: %s, %s, %s, %s\n", filepath.Join(*out, bench.MarkdownFile),
			filepath.Join(*out, bench.HTMLFile), filepath.Join(*out, bench.ResultsFile), filepath.Join(*out, bench.SeriesFile))
		if *junit != "" {
			fmt.Fprintf(stdout, "junit: %s\n", *junit)
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
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, secret, ok := strings.Cut(line, ":"); ok {
			line = strings.TrimSpace(secret)
		}
		if line == "" {
			return "", fmt.Errorf("%s:%d: empty token", file, n)
		}
		return line, nil
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	return "", fmt.Errorf("token file %s has no token", file)
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
