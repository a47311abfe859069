package main

import (
	"errors"

	"go.uber.org/zap"

	"flag"
	"fmt"
	"io"
	"os"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/health"
	"github.com/spillway/spillway/proxy"
)

// cmdValidate checks a config as run would, without listening: exit 0 when valid, 1 with
// every problem on its own line when not.
func cmdValidate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, "usage: spillway validate FILE") }
	if err := fs.Parse(args); err != nil {
		return exitError{2}
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitError{2}
	}
	path := fs.Arg(0)
	cfg, t, outliers, err := loadAndBuild(path, nil, preflight(os.Getenv("SPILLWAY_ADMIN_TOKEN"), nil))
	if err != nil {
		printConfigError(stderr, err)
		return exitError{1}
	}
	t.Close()
	outliers.Close()
	weights := ""
	for i, s := range cfg.Sites {
		if i > 0 {
			weights += ":"
		}
		weights += fmt.Sprint(s.Weight)
	}
	fmt.Fprintf(stdout, "%s: ok (%d sites, split %s)\n", path, len(cfg.Sites), weights)
	return nil
}

// loadAndBuild loads the config at path with every check run applies (the Reloader's
// proxy.CheckTLSFiles, and the checks given: run's preflight), and compiles it, so that
// what validate accepts run accepts too, and every problem is reported in one list.
func loadAndBuild(path string, log *zap.Logger, checks ...configs.Check) (*configs.Config, *proxy.Table, *health.Outliers, error) {
	cfg, err := configs.Load(path, append([]configs.Check{proxy.CheckTLSFiles}, checks...)...)
	if err != nil {
		return nil, nil, nil, err
	}
	t, outliers, err := build(cfg, log)
	return cfg, t, outliers, err
}

// build compiles cfg with its long-lived state: a Registry and the passive health detector.
func build(cfg *configs.Config, log *zap.Logger) (*proxy.Table, *health.Outliers, error) {
	reg := balancer.NewRegistry()
	outliers := proxy.NewOutliers(cfg, reg, log)
	t, err := proxy.Build(cfg, proxy.Deps{Registry: reg, Log: log, Outliers: outliers})
	if err != nil {
		outliers.Close()
		return nil, nil, err
	}
	outliers.SetMembers(t.Members())
	return t, outliers, nil
}

// printConfigError writes a config error one problem per line.
func printConfigError(w io.Writer, err error) {
	var errs configs.Errors
	if errors.As(err, &errs) {
		for _, e := range errs {
			fmt.Fprintln(w, e)
		}
		fmt.Fprintf(w, "%d problem(s); the config was not used\n", len(errs))
		return
	}
	fmt.Fprintln(w, err)
}
