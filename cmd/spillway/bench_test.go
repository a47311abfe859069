package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spillway/spillway/bench"
	"github.com/spillway/spillway/bench/sim"
)

// The bench command runs a scenario, writes the report files, and exits 0 or, when a
// verdict fails (timing on a busy machine), 3; -check then accepts the report, whatever
// subset of the suite it holds.
func TestBenchWritesAReportThatChecks(t *testing.T) {
	out := filepath.Join(t.TempDir(), "report")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"bench", "-short", "-duration", "1s", "-scenario", "steady", "-out", out}, &stdout, &stderr)
	if code := exitCode(err, &stderr); code != 0 && code != exitVerdictFailed {
		t.Fatalf("exit %d; stderr:\n%s\nstdout:\n%s", code, stderr.String(), stdout.String())
	}
	for _, want := range []string{"=== steady", "report: ", "steady     PASS", "--- steady"} {
		if want == "steady     PASS" && err != nil {
			continue
		}
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
		}
	}
	stdout.Reset()
	if err := run(context.Background(), []string{"bench", "-check", out, "-scenario", "steady"}, &stdout, &stderr); err != nil {
		t.Fatalf("check: %v", err)
	}
	if !strings.Contains(stdout.String(), "report complete (1 scenarios)") {
		t.Errorf("check stdout:\n%s", stdout.String())
	}
	// A subset of the suite checks without naming it (it used to want every scenario).
	if err := run(context.Background(), []string{"bench", "-check", out}, io.Discard, io.Discard); err != nil {
		t.Errorf("check of a subset: %v", err)
	}
	// Asked for the whole suite, -check says what is missing.
	err = run(context.Background(), []string{"bench", "-check", out, "-scenario", "all"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "scenario spike: missing") {
		t.Errorf("check of the whole suite: %v", err)
	}
	rep, err := bench.ReadResults(filepath.Join(out, bench.ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != bench.ModeSimulated || rep.Spillway == nil || rep.Spillway.Version == "" || rep.Machine.Hostname == "" ||
		rep.Command != "spillway bench -short -duration 1s -scenario steady -out "+out {
		t.Errorf("provenance: mode %q, spillway %+v, machine %+v, command %q", rep.Mode, rep.Spillway, rep.Machine, rep.Command)
	}
	os.Remove(filepath.Join(out, "report.html"))
	if err := run(context.Background(), []string{"bench", "-check", out, "-scenario", "steady"}, io.Discard, io.Discard); err == nil {
		t.Error("check passed without report.html")
	}
}

func TestBenchUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-duration", "-1s"}, ""},
		{[]string{"extra"}, ""},
		{[]string{"-nonsense"}, ""},
		{[]string{"-scenario", "steady,stedy"}, `unknown scenario "stedy"`},
		{[]string{"-rate", "10"}, "-rate needs -target"},
		{[]string{"-admin", "http://127.0.0.1:9901"}, "-admin needs -target"},
		{[]string{"-scenario", "ramp"}, "scenario ramp runs only against a deployment"},
		{[]string{"-target", "http://127.0.0.1:1", "-scenario", "outage"}, "scenario outage kills, slows or reconfigures sites"},
		{[]string{"-target", "http://127.0.0.1:1", "-short"}, "-short is for simulated sites"},
		{[]string{"-target", "http://127.0.0.1:1", "-token-file", "x"}, "-token-file needs -admin"},
		{[]string{"-target", "http://127.0.0.1:1", "-header", "no colon"}, "want Name: value"},
		{[]string{"-target", "http://127.0.0.1:1", "-rate", "-5", "-concurrency", "-1"}, "concurrency -1"},
		{[]string{"-target", "http://127.0.0.1:1", "-duration", "25h"}, "-duration 25h0m0s"},
		{[]string{"-target", "http://127.0.0.1:1", "-regression", "0"}, "-regression 0"},
	} {
		var stderr bytes.Buffer
		err := run(context.Background(), append([]string{"bench", "-out", t.TempDir()}, tc.args...), io.Discard, &stderr)
		if code := exitCode(err, io.Discard); code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr.String(), tc.want)
		}
	}
	// A paths file with mistakes: every one, as file:line, before any load.
	paths := filepath.Join(t.TempDir(), "paths.txt")
	os.WriteFile(paths, []byte("GET /ok\nget /x\nPOST\n"), 0o644)
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"bench", "-target", "http://127.0.0.1:1", "-paths", paths}, io.Discard, &stderr)
	if code := exitCode(err, io.Discard); code != 1 || !strings.Contains(stderr.String(), paths+":2: method") || !strings.Contains(stderr.String(), paths+":3: want METHOD") {
		t.Errorf("paths: exit %d, stderr %q", code, stderr.String())
	}
}

// startBenchDeployment starts two simulated sites on loopback and `spillway run` in front
// of them with its admin API and a token file, as a deployment to bench.
func startBenchDeployment(t *testing.T) (r *opsRun, tokenFile string) {
	t.Helper()
	t.Setenv("SPILLWAY_ADMIN_TOKEN", "")
	var urls []string
	for i, site := range []string{"idc1", "aws"} {
		b, err := sim.StartWith("127.0.0.1:0", sim.Options{Site: site, Name: site + "-1", Service: sim.Fixed(2 * time.Millisecond),
			Capacity: 50, Overflow: sim.Reject, HealthPath: "/healthz", Seed: uint64(i)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		urls = append(urls, b.URL())
	}
	dir := t.TempDir()
	tokenFile = filepath.Join(dir, "admin.token")
	os.WriteFile(tokenFile, []byte("# the bench's token\nbench: bench-token-0123456789\n"), 0o600)
	path := opsWriteConfig(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0", token_file: %q}
sites:
  - {name: idc1, weight: 3, backends: [%q], max_inflight: 50}
  - {name: aws, weight: 1, elastic: true, backends: [%q], max_inflight: 50}
affinity: {cookie: SESSION}
timeouts: {shutdown: 5s}
`, tokenFile, urls[0], urls[1]))
	return startRun(t, path), tokenFile
}

// Target mode against `spillway run` on loopback: the report records both builds, the
// target's config hash and the command line; the JUnit and CSV files are written; -check
// accepts the report; a second run compares itself with the first (-baseline).
func TestBenchTargetAgainstRun(t *testing.T) {
	dep, tokenFile := startBenchDeployment(t)
	dir := t.TempDir()
	out, junit, csvFile := filepath.Join(dir, "run1"), filepath.Join(dir, "junit.xml"), filepath.Join(dir, "series.csv")
	args := []string{"bench", "-target", dep.proxy, "-admin", dep.admin, "-token-file", tokenFile, "-scenario", "steady",
		"-rate", "50", "-duration", "2s", "-sample-every", "200ms", "-sessions", "8", "-header", "X-Channel: bench test",
		"-out", out, "-junit", junit, "-csv", csvFile}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, &stdout, &stderr)
	if code := exitCode(err, &stderr); code != 0 && code != exitVerdictFailed {
		t.Fatalf("exit %d; stderr:\n%s\nstdout:\n%s", code, stderr.String(), stdout.String())
	}
	if !strings.Contains(stdout.String(), "against "+dep.proxy+"; verdicts from the proxy's view") || !strings.Contains(stdout.String(), "junit: "+junit) {
		t.Errorf("stdout:\n%s", stdout.String())
	}
	rep, err := bench.ReadResults(filepath.Join(out, bench.ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	want := readBuildInfo()
	ti := rep.Target
	if rep.Mode != bench.ModeTarget || ti == nil || ti.BuildInfo["version"] != want.Version || ti.BuildInfo["revision"] != want.Revision ||
		!strings.HasPrefix(ti.ConfigHash, "sha256:") || len(ti.Sites) != 2 {
		t.Fatalf("target info %+v", ti)
	}
	if rep.Spillway == nil || rep.Spillway.Version != want.Version || !strings.HasPrefix(rep.Command, "spillway bench -target "+dep.proxy) ||
		!strings.Contains(rep.Command, "'X-Channel: bench test'") {
		t.Errorf("spillway %+v, command %q", rep.Spillway, rep.Command)
	}
	r := rep.Scenarios[0]
	if r.Verdict == bench.Error || r.Figures["proxy.ok"] == 0 || r.Figures["sessions.site_known"] != 8 {
		t.Errorf("steady: %s %q %v", r.Verdict, r.Note, r.Figures)
	}
	var suites struct {
		Tests int `xml:"tests,attr"`
	}
	if b, err := os.ReadFile(junit); err != nil || xml.Unmarshal(b, &suites) != nil || suites.Tests != len(r.Checks) {
		t.Errorf("junit: %v, %d tests for %d checks", err, suites.Tests, len(r.Checks))
	}
	if b, err := os.ReadFile(csvFile); err != nil || !bytes.HasPrefix(b, []byte("scenario,t_s,")) {
		t.Errorf("csv: %v %.40q", err, b)
	}
	stdout.Reset()
	if err := run(context.Background(), []string{"bench", "-check", out}, &stdout, io.Discard); err != nil ||
		!strings.Contains(stdout.String(), "report complete (1 scenarios)") {
		t.Errorf("check: %v\n%s", err, stdout.String())
	}

	// Again, against the first run.
	out2 := filepath.Join(dir, "run2")
	args2 := []string{"bench", "-target", dep.proxy, "-admin", dep.admin, "-rate", "50", "-duration", "1s",
		"-baseline", filepath.Join(out, bench.ResultsFile), "-regression", "1000", "-out", out2}
	stdout.Reset()
	err = run(context.Background(), args2, &stdout, &stderr)
	if code := exitCode(err, &stderr); code != 0 && code != exitVerdictFailed {
		t.Fatalf("exit %d; stderr:\n%s\nstdout:\n%s", code, stderr.String(), stdout.String())
	}
	b, _ := os.ReadFile(filepath.Join(out2, bench.ResultsFile))
	var rep2 struct {
		Baseline  *bench.BaselineInfo `json:"baseline"`
		Scenarios []struct {
			Baseline *bench.Comparison `json:"baseline"`
		} `json:"scenarios"`
	}
	if err := json.Unmarshal(b, &rep2); err != nil || rep2.Baseline == nil || rep2.Baseline.RegressionPct != 1000 ||
		rep2.Scenarios[0].Baseline == nil || len(rep2.Scenarios[0].Baseline.Rows) == 0 {
		t.Errorf("baseline: %v %s", err, b[:min(len(b), 400)])
	}
	md, _ := os.ReadFile(filepath.Join(out2, bench.MarkdownFile))
	if !bytes.Contains(md, []byte("| p99_ms |")) || !bytes.Contains(md, []byte("Target build: spillway "+want.Version)) {
		t.Errorf("report.md:\n%s", md)
	}
}
