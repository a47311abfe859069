package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The bench command runs a scenario, writes the three report files, and exits 0 or, when a
// verdict fails (timing on a busy machine), 3; -check then accepts the report.
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
	// The whole suite was not run: -check of the whole suite says what is missing.
	err = run(context.Background(), []string{"bench", "-check", out}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "scenario spike: missing") {
		t.Errorf("check of the whole suite: %v", err)
	}
	os.Remove(filepath.Join(out, "report.html"))
	if err := run(context.Background(), []string{"bench", "-check", out, "-scenario", "steady"}, io.Discard, io.Discard); err == nil {
		t.Error("check passed without report.html")
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{{"-duration", "-1s"}, {"extra"}, {"-nonsense"}} {
		var stderr bytes.Buffer
		if code := exitCode(run(context.Background(), append([]string{"bench"}, args...), io.Discard, &stderr), io.Discard); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"bench", "-scenario", "steady,stedy", "-out", t.TempDir()}, io.Discard, &stderr)
	if code := exitCode(err, io.Discard); code != 2 || !strings.Contains(stderr.String(), `unknown scenario "stedy"`) {
		t.Errorf("unknown scenario: exit %d, stderr %q", code, stderr.String())
	}
}
