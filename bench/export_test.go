package bench

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runSmallTarget is a short real target run: steady, then spike, against a Spillway on
// loopback.
func runSmallTarget(t *testing.T) *Report {
	t.Helper()
	env := startTargetEnv(t, standardSites(), 100, 0)
	rep, err := RunTarget(context.Background(), TargetOptions{Scenarios: []string{"steady", "spike"}, Target: env.URL,
		Admin: env.AdminURL, Rate: 50, Duration: time.Second, SampleEvery: 100 * time.Millisecond,
		Build: &BuildInfo{Version: "v0.0.0-test", Revision: "0123abc", GoVersion: "go", Platform: "linux/amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	rep.Command = ShellQuote([]string{"spillway", "bench", "-target", env.URL, "-header", "X-A: b c"})
	return rep
}

// A results.json saved by an earlier run is the baseline: every figure beside it, and a
// judged figure worse by more than the threshold fails its check and the verdict.
func TestBaselineFlagsARegression(t *testing.T) {
	rep := runSmallTarget(t)
	dir := t.TempDir()
	if err := WriteReport(dir, rep); err != nil {
		t.Fatal(err)
	}
	saved := filepath.Join(dir, ResultsFile)

	// Against itself: every figure unchanged, nothing regressed.
	same, err := ReadResults(saved)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := ReadResults(saved)
	CompareBaseline(again, same, saved, DefaultRegressionPct)
	for _, r := range again.Scenarios {
		if r.Baseline == nil || len(r.Baseline.Rows) == 0 {
			t.Fatalf("%s: no comparison", r.Name)
		}
		for _, row := range r.Baseline.Rows {
			if row.Regressed || row.Now != row.Baseline {
				t.Errorf("%s: against itself: %+v", r.Name, row)
			}
		}
		if c := checkNamed(r, "p99_ms against the baseline"); c == nil || !c.Pass {
			t.Errorf("%s: %v", r.Name, c)
		}
	}

	// A baseline whose steady p99 was a third of this run's, and whose spike answered
	// twice the rate: both regressions are flagged, the rest is not.
	var base Report
	b, _ := os.ReadFile(saved)
	json.Unmarshal(b, &base)
	base.Scenarios[0].Figures["p99_ms"] = rep.Scenarios[0].Figures["p99_ms"] / 3
	base.Scenarios[1].Figures["achieved_rps"] = rep.Scenarios[1].Figures["achieved_rps"] * 2
	base.Scenarios = base.Scenarios[:2]
	b, _ = json.Marshal(&base)
	doctored := filepath.Join(t.TempDir(), "baseline.json")
	os.WriteFile(doctored, b, 0o644)
	old, err := ReadResults(doctored)
	if err != nil {
		t.Fatal(err)
	}
	CompareBaseline(rep, old, doctored, DefaultRegressionPct)
	steady, spike := rep.Scenarios[0], rep.Scenarios[1]
	if c := checkNamed(steady, "p99_ms against the baseline"); c == nil || c.Pass || c.Measured < 190 {
		t.Errorf("steady p99 regression: %v", c)
	}
	if c := checkNamed(spike, "achieved_rps against the baseline"); c == nil || c.Pass || c.Measured < 45 {
		t.Errorf("spike rate regression: %v", c)
	}
	if steady.Verdict != Fail || spike.Verdict != Fail || rep.Pass {
		t.Errorf("verdicts %s %s pass %v", steady.Verdict, spike.Verdict, rep.Pass)
	}
	regressed := 0
	for _, row := range steady.Baseline.Rows {
		if row.Regressed {
			regressed++
			if row.Figure != "p99_ms" || row.ChangePct == nil || *row.ChangePct < 190 {
				t.Errorf("row %+v", row)
			}
		}
	}
	if regressed != 1 {
		t.Errorf("%d regressed rows in steady", regressed)
	}
	if rep.Baseline == nil || rep.Baseline.File != doctored || rep.Baseline.Revision != "0123abc" {
		t.Errorf("baseline info %+v", rep.Baseline)
	}
	// The report shows it.
	out := t.TempDir()
	if err := WriteReport(out, rep); err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(filepath.Join(out, MarkdownFile))
	html, _ := os.ReadFile(filepath.Join(out, HTMLFile))
	for _, want := range []string{"Against the baseline", "**regressed** (lower is better)", "Baseline: " + doctored,
		"Spillway (this bench): v0.0.0-test (revision 0123abc", "Command: spillway bench -target", "'X-A: b c'"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	if !bytes.Contains(html, []byte("regressed (lower is better)")) {
		t.Error("report.html lacks the regression")
	}

	// A scenario the baseline lacks is said so, not judged.
	base.Scenarios = base.Scenarios[:1]
	b, _ = json.Marshal(&base)
	os.WriteFile(doctored, b, 0o644)
	old, _ = ReadResults(doctored)
	fresh, _ := ReadResults(saved)
	CompareBaseline(fresh, old, doctored, DefaultRegressionPct)
	if n := fresh.Scenarios[1].Baseline; n == nil || !strings.Contains(n.Note, "no scenario spike") {
		t.Errorf("spike: %+v", n)
	}
}

// The JUnit file is a suite per scenario and a test case per check, failures where
// checks failed; read back with encoding/xml as a CI system would.
func TestJUnitReadsBack(t *testing.T) {
	rep := runSmallTarget(t)
	// One more failed check, so that a failure is certainly there.
	rep.Scenarios[0].Checks = append(rep.Scenarios[0].Checks, AtMost("a check that fails", 2, 1, "ms"))
	rep.Scenarios[0].Judge()
	rep.Scenarios = append(rep.Scenarios, &Result{Name: "ramp", Verdict: Error, Note: "the target refused connections"})
	path := filepath.Join(t.TempDir(), "junit.xml")
	var buf bytes.Buffer
	if err := WriteJUnit(&buf, rep); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, buf.Bytes(), 0o644)

	var got struct {
		XMLName  xml.Name `xml:"testsuites"`
		Tests    int      `xml:"tests,attr"`
		Failures int      `xml:"failures,attr"`
		Errors   int      `xml:"errors,attr"`
		Suites   []struct {
			Name     string `xml:"name,attr"`
			Tests    int    `xml:"tests,attr"`
			Failures int    `xml:"failures,attr"`
			Errors   int    `xml:"errors,attr"`
			Props    []struct {
				Name  string `xml:"name,attr"`
				Value string `xml:"value,attr"`
			} `xml:"properties>property"`
			Cases []struct {
				Name    string `xml:"name,attr"`
				Class   string `xml:"classname,attr"`
				Failure *struct {
					Message string `xml:"message,attr"`
				} `xml:"failure"`
				Error *struct {
					Message string `xml:"message,attr"`
				} `xml:"error"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	b, _ := os.ReadFile(path)
	if err := xml.Unmarshal(b, &got); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if len(got.Suites) != 3 {
		t.Fatalf("%d suites", len(got.Suites))
	}
	tests, failures := 0, 0
	for i, r := range rep.Scenarios[:2] {
		s := got.Suites[i]
		if s.Name != "bench."+r.Name || s.Tests != len(r.Checks) || len(s.Cases) != len(r.Checks) {
			t.Errorf("suite %s: %d tests, %d cases; want %d", s.Name, s.Tests, len(s.Cases), len(r.Checks))
			continue
		}
		failed := 0
		for j, c := range r.Checks {
			tc := s.Cases[j]
			if tc.Name != c.Name || tc.Class != "spillway.bench."+r.Name || (tc.Failure != nil) == c.Pass {
				t.Errorf("case %q (failure %v) for check %v", tc.Name, tc.Failure, c)
			}
			if !c.Pass {
				failed++
				if !strings.HasPrefix(tc.Failure.Message, "measured ") {
					t.Errorf("failure message %q", tc.Failure.Message)
				}
			}
		}
		if s.Failures != failed {
			t.Errorf("suite %s: %d failures, want %d", s.Name, s.Failures, failed)
		}
		tests += s.Tests
		failures += s.Failures
	}
	if e := got.Suites[2]; e.Errors != 1 || len(e.Cases) != 1 || e.Cases[0].Error == nil || e.Cases[0].Error.Message != "the target refused connections" {
		t.Errorf("error suite %+v", e)
	}
	if got.Tests != tests+1 || got.Failures != failures || got.Errors != 1 || failures == 0 {
		t.Errorf("totals: %d tests %d failures %d errors", got.Tests, got.Failures, got.Errors)
	}
	props := map[string]string{}
	for _, p := range got.Suites[0].Props {
		props[p.Name] = p.Value
	}
	if props["mode"] != "target" || props["spillway.revision"] != "0123abc" || !strings.HasPrefix(props["target.config_hash"], "sha256:") {
		t.Errorf("properties %v", props)
	}
}

// series.csv has a row per second of every scenario, with each site's share and its
// in-flight and limit as the proxy said.
func TestSeriesCSV(t *testing.T) {
	rep := runSmallTarget(t)
	dir := t.TempDir()
	if err := WriteReport(dir, rep); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, SeriesFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	header := strings.Join(rows[0], ",")
	for _, col := range []string{"scenario,t_s,bucket_s,offered_rps,achieved_rps,errors,p50_ms,p90_ms,p99_ms", "share_pct.idc1", "target_pct.aws", "inflight.idc2", "limit.idc1"} {
		if !strings.Contains(header, col) {
			t.Errorf("header %s lacks %s", header, col)
		}
	}
	want := len(rep.Scenarios[0].Series.T) + len(rep.Scenarios[1].Series.T)
	if len(rows)-1 != want {
		t.Errorf("%d rows, want %d", len(rows)-1, want)
	}
	limitCol := -1
	for i, h := range rows[0] {
		if h == "limit.idc1" {
			limitCol = i
		}
	}
	if rows[1][0] != "steady" || rows[1][2] != "1" || rows[1][limitCol] != "30" {
		t.Errorf("first row %v", rows[1])
	}
}

// -check accepts any subset of scenarios, in either mode, and still says what is missing
// when scenarios are named.
func TestCheckResultsSubsets(t *testing.T) {
	rep := runSmallTarget(t)
	if err := CheckResults(rep, nil); err != nil {
		t.Errorf("a target report of two scenarios: %v", err)
	}
	if err := CheckResults(rep, []string{"steady"}); err != nil {
		t.Errorf("steady named: %v", err)
	}
	if err := CheckResults(rep, []string{"ramp"}); err == nil || !strings.Contains(err.Error(), "scenario ramp: missing") {
		t.Errorf("ramp named: %v", err)
	}
	sim := &Report{Mode: ModeSimulated, Scenarios: []*Result{{Name: "outage", Verdict: Skip, Note: "n"}}}
	if err := CheckResults(sim, nil); err != nil {
		t.Errorf("a simulated report of outage only: %v", err)
	}
	sim.Scenarios = append(sim.Scenarios, &Result{Name: "ramp", Verdict: Skip, Note: "n"}, &Result{Name: "outage", Verdict: Skip, Note: "n"})
	err := CheckResults(sim, nil)
	if err == nil || !strings.Contains(err.Error(), `scenario "ramp": not a scenario of simulated mode`) || !strings.Contains(err.Error(), "outage: twice") {
		t.Errorf("got %v", err)
	}
	if err := CheckResults(&Report{}, nil); err == nil || !strings.Contains(err.Error(), "no scenario") {
		t.Errorf("empty: %v", err)
	}
}

func TestShellQuote(t *testing.T) {
	got := ShellQuote([]string{"spillway", "bench", "-header", "X-A: b", "-target", "http://h:1/x?a=1&b=2", "it's", ""})
	want := `spillway bench -header 'X-A: b' -target 'http://h:1/x?a=1&b=2' 'it'\''s' ''`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}
