package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func sampleReport() *Report {
	pass := passingResult()
	pass.Title, pass.Description = "steady load", "Half of capacity <with> & \"quotes\"."
	pass.Params = map[string]any{"rate_rps": 278.0, "site.idc1": "weight 5"}
	pass.Figures = map[string]float64{"p99_ms": 240.5, "errors": 0, "share.idc1": 50.2}
	pass.Series = &Series{Sites: []string{"idc1", "idc2", "aws"}, Bucket: 0.5, T: []float64{0, 0.5, 1},
		Offered: []float64{270, 280, 275}, Achieved: []float64{270, 280, 275}, Errors: []int{0, 0, 1},
		Share:  [][]float64{{50, 51, 49}, {30, 29, 31}, {20, 20, 20}},
		Target: [][]float64{{50, 50, 50}, {30, 30, 30}, {20, 20, 20}},
		P50:    []float64{100, 101, 99}, P90: []float64{180, 181, 179}, P99: []float64{240, 250, 230},
		ST: []float64{0.1, 0.2}, Inflight: [][]float64{{14, 15}, {8, 9}, {5, 6}}, Limit: [][]float64{{30, 30}, {18, 18}, {12, 12}},
		Marks: []Mark{{T: 0.7, Label: "idc1 killed"}}}
	pass.Judge()
	fail := failingResult()
	fail.Judge()
	skip := &Result{Name: "overhead", Verdict: Skip, Note: "no binary",
		Table: &Table{Header: []string{"path", "p50 ms"}, Rows: [][]string{{"direct", "0.9"}}}}
	rep := &Report{Started: "2026-11-25T12:00:00Z", Seconds: 12.5, Short: true,
		Machine: Machine{OS: "linux", Arch: "amd64", CPUs: 2, GoVersion: "go1.26"}, Scenarios: []*Result{pass, fail, skip}}
	rep.judge()
	return rep
}

func TestWriteReportRoundTrips(t *testing.T) {
	dir := t.TempDir()
	rep := sampleReport()
	if err := WriteReport(dir, rep); err != nil {
		t.Fatal(err)
	}
	got, err := ReadResults(filepath.Join(dir, ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	// What was written is what was measured: compare through JSON, where Params' numbers
	// come back as float64 anyway.
	want, _ := json.Marshal(rep)
	back, _ := json.Marshal(got)
	if string(want) != string(back) {
		t.Fatalf("round trip changed the report:\n%s\n%s", want, back)
	}
	if !reflect.DeepEqual(got.Scenarios[0].Checks, rep.Scenarios[0].Checks) || got.Pass {
		t.Fatalf("checks or verdict changed: %+v", got)
	}
	if err := CheckResults(got, []string{"steady", "spike", "overhead"}); err != nil {
		t.Fatal(err)
	}
}

func TestReportHTMLIsSelfContained(t *testing.T) {
	dir := t.TempDir()
	if err := WriteReport(dir, sampleReport()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, HTMLFile))
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	for _, want := range []string{"<!DOCTYPE html>", "<style>", "<svg", "<polyline", "Share of 2xx answers", "In flight per site",
		"Latency percentiles", "idc1 killed", "&lt;with&gt; &amp; &#34;quotes&#34;", `class="fail">FAIL`} {
		if !strings.Contains(page, want) {
			t.Errorf("report.html lacks %q", want)
		}
	}
	// Nothing is fetched: no remote URL at all, no script, no external stylesheet or image.
	if m := regexp.MustCompile(`(?i)https?://|<script|<link|<img|src=`).FindString(page); m != "" {
		t.Errorf("report.html is not self-contained: found %q", m)
	}
	if strings.Count(page, "<svg") != strings.Count(page, "</svg>") || strings.Count(page, "<svg") != 4 {
		t.Errorf("want 4 whole charts for the one scenario with series, got %d", strings.Count(page, "<svg"))
	}
}

func TestReportMarkdownShowsThresholds(t *testing.T) {
	dir := t.TempDir()
	if err := WriteReport(dir, sampleReport()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, MarkdownFile))
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	for _, want := range []string{"# Spillway bench report", "**some verdicts failed**", "| [steady](#steady) | PASS | 3/3 |",
		"| [spike](#spike) | **FAIL** | 1/2 |", "| highest in-flight at one idc1 backend | 16 requests | <= 15 requests | **FAIL** |",
		"| idc1 share, distance from 50% | 0.2 pp | <= 1 pp | pass |", "Note: no binary", "| direct | 0.9 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
}
