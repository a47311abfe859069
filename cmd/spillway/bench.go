package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
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

// cmdBench runs the bench suite on loopback and writes its report; with -check it checks a
// report already written instead.
func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenario := fs.String("scenario", "all", "scenarios to run, comma-separated: "+strings.Join(bench.ScenarioNames(), ", ")+", or all")
	duration := fs.Duration("duration", 0, fmt.Sprintf("length of each scenario (default %s, or %s with -short; max %s)", bench.DefaultDuration, bench.ShortDuration, bench.MaxDuration))
	out := fs.String("out", "bench-out", "directory for report.md, report.html and results.json")
	short := fs.Bool("short", false, "run every scenario briefly (CI: checks the machinery and the report, not timing)")
	seed := fs.Uint64("seed", 1, "seed of arrivals and service times")
	spillwayBin := fs.String("spillway", "", "spillway binary for the overhead scenario (default: this one)")
	verbose := fs.Bool("v", false, "log the proxy's health changes and warnings to stderr")
	check := fs.String("check", "", "check the report in this directory instead of running: every file there, every scenario with a verdict")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: spillway bench [-scenario NAME|all] [-duration D] [-out DIR] [-short]\n       spillway bench -check DIR")
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "exit status: 0 all verdicts pass, %d a verdict failed, 1 an error, 2 a usage mistake\n", exitVerdictFailed)
	}
	if err := fs.Parse(args); err != nil {
		return exitError{2}
	}
	if fs.NArg() != 0 || *duration < 0 || *duration > bench.MaxDuration {
		fs.Usage()
		return exitError{2}
	}
	var names []string
	for _, n := range strings.Split(*scenario, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	for _, n := range names {
		if n != "all" && !slices.Contains(bench.ScenarioNames(), n) {
			fmt.Fprintf(stderr, "bench: unknown scenario %q (have: %s, all)\n", n, strings.Join(bench.ScenarioNames(), ", "))
			return exitError{2}
		}
	}
	if *check != "" {
		return checkReport(*check, names, stdout)
	}
	o := bench.Options{Scenarios: names, Duration: *duration, Short: *short, Progress: stdout, Seed: *seed,
		SpillwayBinary: *spillwayBin}
	if o.SpillwayBinary == "" {
		o.SpillwayBinary = selfBinary()
	}
	if *verbose {
		o.Log = newConsoleLogger(stderr, zapcore.InfoLevel)
		defer o.Log.Sync()
	}
	fmt.Fprintf(stdout, "Spillway bench: %s on loopback; report in %s\n", strings.Join(names, ","), *out)
	rep, err := bench.Run(ctx, o)
	if rep != nil && (err == nil || len(rep.Scenarios) > 0) {
		rep.Command = "spillway bench " + strings.Join(args, " ")
		if werr := bench.WriteReport(*out, rep); werr != nil {
			return errors.Join(err, werr)
		}
		fmt.Fprintf(stdout, "\nreport: %s, %s, %s\n", filepath.Join(*out, bench.MarkdownFile),
			filepath.Join(*out, bench.HTMLFile), filepath.Join(*out, bench.ResultsFile))
		for _, r := range rep.Scenarios {
			fmt.Fprintf(stdout, "  %-10s %s\n", r.Name, strings.ToUpper(string(r.Verdict)))
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

// checkReport checks that dir holds a whole report: the three files, results.json valid,
// every scenario (of names, or the suite) there with a verdict. Whether verdicts passed
// is not its business: CI runs the bench on shared machines, where timing varies.
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
	if len(names) == 1 && names[0] == "all" {
		names = nil
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
