package bench

import (
	"fmt"
	"math"
	"strings"
)

// DefaultRegressionPct is how much worse than the baseline a judged figure may be before
// its check fails.
const DefaultRegressionPct = 10

// BaselineInfo says which earlier run a report is compared with.
type BaselineInfo struct {
	File     string `json:"file"`
	Started  string `json:"started"`
	Mode     string `json:"mode,omitempty"`
	Command  string `json:"command,omitempty"`
	Revision string `json:"revision,omitempty"`
	// RegressionPct is the threshold: a judged figure worse than the baseline's by more
	// than this (in % of the baseline's) fails its check.
	RegressionPct float64 `json:"regression_pct"`
}

// Comparison is a scenario's figures beside the baseline's.
type Comparison struct {
	// Note says why there is nothing to compare (the baseline has no such scenario).
	Note string          `json:"note,omitempty"`
	Rows []ComparisonRow `json:"rows,omitempty"`
}

// ComparisonRow is one figure now and in the baseline.
type ComparisonRow struct {
	Figure   string  `json:"figure"`
	Baseline float64 `json:"baseline"`
	Now      float64 `json:"now"`
	// ChangePct is (now - baseline) / baseline in %; absent when the baseline is 0.
	ChangePct *float64 `json:"change_pct,omitempty"`
	// Better is "lower" or "higher" for a judged figure, "" for one only shown.
	Better    string `json:"better,omitempty"`
	Regressed bool   `json:"regressed,omitempty"`
}

// judgedFigure says whether a figure is judged against the baseline: which way is better,
// and the smallest baseline a change is measured against (so that 0.2 ms → 0.4 ms is not
// a 100% regression, nor 0 errors → 1 an infinite one).
func judgedFigure(name string) (better string, floor float64) {
	base := name[strings.LastIndexByte(name, '.')+1:]
	switch base {
	case "p50_ms", "p90_ms", "p99_ms", "p999_ms", "mean_ms":
		return "lower", 1 // ms
	case "error_pct":
		return "lower", 0.1 // % of requests
	case "capacity_rps", "achieved_rps":
		return "higher", 1 // req/s
	}
	return "", 0
}

// CompareBaseline sets every scenario's Baseline from base (the results.json of an earlier
// run, read from file) and adds a check per judged figure: worse than the baseline by at
// most regressionPct %. Verdicts are judged again.
func CompareBaseline(rep, base *Report, file string, regressionPct float64) {
	info := &BaselineInfo{File: file, Started: base.Started, Mode: base.Mode, Command: base.Command,
		RegressionPct: regressionPct}
	if base.Spillway != nil {
		info.Revision = base.Spillway.Revision
	}
	rep.Baseline = info
	for _, r := range rep.Scenarios {
		var old *Result
		for _, b := range base.Scenarios {
			if b.Name == r.Name {
				old = b
			}
		}
		if old == nil {
			r.Baseline = &Comparison{Note: fmt.Sprintf("the baseline has no scenario %s", r.Name)}
			continue
		}
		if modeOf(rep) != modeOf(base) {
			r.Baseline = &Comparison{Note: fmt.Sprintf("the baseline ran in %s mode, this run in %s mode: figures shown, not judged", modeOf(base), modeOf(rep))}
		} else {
			r.Baseline = &Comparison{}
		}
		judge := r.Baseline.Note == "" && r.Verdict != Error && r.Verdict != Skip
		for _, k := range sortedKeys(r.Figures) {
			was, ok := old.Figures[k]
			if !ok {
				continue
			}
			now := r.Figures[k]
			row := ComparisonRow{Figure: k, Baseline: was, Now: now}
			if was != 0 {
				c := clean(100 * (now - was) / math.Abs(was))
				row.ChangePct = &c
			}
			better, floor := judgedFigure(k)
			if judge && better != "" {
				row.Better = better
				worse := (now - was) / math.Max(math.Abs(was), floor) * 100
				if better == "higher" {
					worse = -worse
				}
				// The name stays the same from baseline to baseline (CI follows a JUnit
				// test case by its name); the values are in the comparison.
				ch := AtMost(k+" against the baseline, % worse", worse, regressionPct, "%")
				row.Regressed = !ch.Pass
				r.Checks = append(r.Checks, ch)
			}
			r.Baseline.Rows = append(r.Baseline.Rows, row)
		}
		if judge {
			r.Verdict = ""
			r.Judge()
		}
	}
	rep.judge()
}

func modeOf(rep *Report) string {
	if rep.Mode == "" {
		return ModeSimulated
	}
	return rep.Mode
}
