package bench

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func TestChecks(t *testing.T) {
	for _, tc := range []struct {
		c    Check
		pass bool
	}{
		{AtMost("errors", 0, 0, ""), true},
		{AtMost("errors", 1, 0, ""), false},
		{AtLeast("aws share", 50, 50, "%"), true},
		{AtLeast("aws share", 49.9, 50, "%"), false},
		{Near("idc1 share", 50.9, 50, 1, "%"), true},
		{Near("idc1 share", 48.9, 50, 1, "%"), false},
	} {
		if tc.c.Pass != tc.pass {
			t.Errorf("%s: pass %v, want %v", tc.c, tc.c.Pass, tc.pass)
		}
	}
	n := Near("idc1 share", 48.5, 50, 1, "%")
	if n.Measured != 1.5 || n.Op != "<=" || n.Threshold != 1 || !strings.Contains(n.Name, "distance from 50%") {
		t.Errorf("Near records the distance and its threshold: %+v", n)
	}
	if s := AtMost("p99", 12.5, 10, "ms").String(); s != "p99: 12.5 ms <= 10 ms: FAIL" {
		t.Errorf("String: %q", s)
	}
	// Whatever is measured, the report stays valid JSON.
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if _, err := json.Marshal(AtMost("x", v, 1, "")); err != nil {
			t.Errorf("%v: %v", v, err)
		}
	}
}

// passingResult and failingResult are what a scenario hands to Judge.
func passingResult() *Result {
	return &Result{Name: "steady", Checks: []Check{
		Near("idc1 share", 50.2, 50, 1, "%"), Near("idc2 share", 29.9, 30, 1, "%"), AtMost("errors", 0, 0, "")}}
}

func failingResult() *Result {
	return &Result{Name: "spike", Checks: []Check{
		AtMost("highest in-flight at one idc1 backend", 16, 15, "requests"), AtMost("errors", 0, 0, "")}}
}

func TestJudge(t *testing.T) {
	r := passingResult()
	r.Judge()
	if r.Verdict != Pass {
		t.Errorf("all checks hold: %s", r.Verdict)
	}
	r = failingResult()
	r.Judge()
	if r.Verdict != Fail {
		t.Errorf("one check fails: %s", r.Verdict)
	}
	r = &Result{Name: "empty"}
	r.Judge()
	if r.Verdict != Fail || r.Note == "" {
		t.Errorf("no checks is no pass: %s %q", r.Verdict, r.Note)
	}
	for _, v := range []Verdict{Skip, Error} {
		r = failingResult()
		r.Verdict, r.Note = v, "why"
		r.Judge()
		if r.Verdict != v {
			t.Errorf("%s is kept, got %s", v, r.Verdict)
		}
	}
}

func TestReportPassesOnlyWithoutFailures(t *testing.T) {
	mk := func(vs ...Verdict) *Report {
		rep := &Report{}
		for _, v := range vs {
			rep.Scenarios = append(rep.Scenarios, &Result{Verdict: v})
		}
		rep.judge()
		return rep
	}
	for _, tc := range []struct {
		vs   []Verdict
		pass bool
	}{
		{[]Verdict{Pass, Pass}, true},
		{[]Verdict{Pass, Skip}, true},
		{[]Verdict{Pass, Fail}, false},
		{[]Verdict{Error, Pass}, false},
	} {
		if got := mk(tc.vs...).Pass; got != tc.pass {
			t.Errorf("%v: pass %v", tc.vs, got)
		}
	}
}

func TestCheckResults(t *testing.T) {
	var rep Report
	for _, name := range ScenarioNames() {
		r := passingResult()
		r.Name = name
		r.Judge()
		rep.Scenarios = append(rep.Scenarios, r)
	}
	rep.Scenarios[1] = failingResult()
	rep.Scenarios[1].Judge()
	if err := CheckResults(&rep, nil); err != nil {
		t.Fatalf("a whole report, one verdict failed: %v", err)
	}
	rep.Scenarios[2].Verdict = Skip
	if err := CheckResults(&rep, nil); err == nil || !strings.Contains(err.Error(), "without a note") {
		t.Errorf("a skip without a note: %v", err)
	}
	rep.Scenarios[2].Note = "nginx not installed"
	rep.Scenarios[3].Verdict = ""
	rep.Scenarios = rep.Scenarios[:len(rep.Scenarios)-1]
	names := ScenarioNames()
	err := CheckResults(&rep, names)
	if err == nil || !strings.Contains(err.Error(), `verdict ""`) || !strings.Contains(err.Error(), names[len(names)-1]+": missing") {
		t.Errorf("no verdict, a scenario missing: %v", err)
	}
	// Asked for nothing in particular, any subset will do (issue 16): only the verdict is
	// wrong.
	err = CheckResults(&rep, nil)
	if err == nil || !strings.Contains(err.Error(), `verdict ""`) || strings.Contains(err.Error(), "missing") {
		t.Errorf("a subset: %v", err)
	}
	if err := CheckResults(&Report{Scenarios: rep.Scenarios[:1]}, []string{"steady"}); err != nil {
		t.Errorf("only the scenarios asked for: %v", err)
	}
}
