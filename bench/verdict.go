package bench

import (
	"fmt"
	"math"
)

// Verdict is how a scenario came out.
type Verdict string

const (
	Pass  Verdict = "pass"  // every check held
	Fail  Verdict = "fail"  // a check did not hold
	Skip  Verdict = "skip"  // not run (see the note); does not fail the suite
	Error Verdict = "error" // the scenario could not run; fails the suite
)

// Check is one threshold a scenario is judged by: Measured Op Threshold, e.g.
// "idc1 share, distance from 50%" 0.3 <= 1 (pp). Every check is written to the report with
// its threshold, so a reader sees what "pass" meant.
type Check struct {
	Name      string  `json:"name"`
	Measured  float64 `json:"measured"`
	Op        string  `json:"op"` // "<=" or ">="
	Threshold float64 `json:"threshold"`
	Unit      string  `json:"unit,omitempty"`
	Pass      bool    `json:"pass"`
}

// AtMost is the check measured <= limit.
func AtMost(name string, measured, limit float64, unit string) Check {
	return Check{Name: name, Measured: clean(measured), Op: "<=", Threshold: limit, Unit: unit, Pass: measured <= limit}
}

// AtLeast is the check measured >= limit.
func AtLeast(name string, measured, limit float64, unit string) Check {
	return Check{Name: name, Measured: clean(measured), Op: ">=", Threshold: limit, Unit: unit, Pass: measured >= limit}
}

// Near is the check |measured - target| <= tolerance; Measured is the distance. A distance
// between two percentages is in percentage points ("pp").
func Near(name string, measured, target, tolerance float64, unit string) Check {
	du := unit
	if unit == "%" {
		du = "pp"
	}
	return AtMost(fmt.Sprintf("%s, distance from %g%s", name, target, unit), math.Abs(measured-target), tolerance, du)
}

// clean keeps NaN and infinities out of the JSON report (encoding/json refuses them).
func clean(v float64) float64 {
	switch {
	case math.IsNaN(v):
		return -1
	case math.IsInf(v, 1):
		return math.MaxFloat64
	case math.IsInf(v, -1):
		return -math.MaxFloat64
	}
	return math.Round(v*1e4) / 1e4
}

// String is the check as one line: "name: 0.3 <= 1 pp: pass".
func (c Check) String() string {
	res := "pass"
	if !c.Pass {
		res = "FAIL"
	}
	return fmt.Sprintf("%s: %s %s %s: %s", c.Name, num(c.Measured, c.Unit), c.Op, num(c.Threshold, c.Unit), res)
}

func num(v float64, unit string) string {
	s := fmt.Sprintf("%.4g", v)
	if unit != "" {
		s += " " + unit
	}
	return s
}

// Judge sets r.Verdict from its checks: pass when there is at least one and all hold. A
// scenario already marked Skip or Error keeps its verdict.
func (r *Result) Judge() {
	if r.Verdict == Skip || r.Verdict == Error {
		return
	}
	r.Verdict = Pass
	if len(r.Checks) == 0 {
		r.Verdict = Fail
		r.Note = "no checks were made"
	}
	for _, c := range r.Checks {
		if !c.Pass {
			r.Verdict = Fail
		}
	}
}

// Passed counts the checks that hold.
func (r *Result) Passed() int {
	n := 0
	for _, c := range r.Checks {
		if c.Pass {
			n++
		}
	}
	return n
}

// Result is one scenario's outcome: what it did, what it measured, and the verdict with
// the thresholds it was judged by.
type Result struct {
	Name        string  `json:"name"`
	Title       string  `json:"title"`
	Description string  `json:"description"`
	Verdict     Verdict `json:"verdict"`
	Note        string  `json:"note,omitempty"`
	// Params are the scenario's settings (rates, capacities, durations).
	Params map[string]any `json:"params"`
	// Figures are what it measured.
	Figures map[string]float64 `json:"figures"`
	Checks  []Check            `json:"checks"`
	// Table is a scenario's own table (the overhead comparison); nil for most.
	Table   *Table  `json:"table,omitempty"`
	Seconds float64 `json:"seconds"` // wall time of the scenario
	Series  *Series `json:"series,omitempty"`
	// PerSecond is Series by the second, where the charts' points are finer (simulated
	// mode), without the proxy's samples: the rows of series.csv. nil: Series is by the
	// second.
	PerSecond *Series `json:"per_second,omitempty"`
	// Baseline is every figure beside the baseline run's (-baseline); nil: none.
	Baseline *Comparison `json:"baseline,omitempty"`
}

// Table is a small table of text for the report.
type Table struct {
	Header []string   `json:"header"`
	Rows   [][]string `json:"rows"`
}

// Series are a scenario's measurements over time, for the charts.
type Series struct {
	Sites []string `json:"sites"`
	// Bucket is the width of one point of T, in seconds; T are bucket starts (by when
	// requests were due).
	Bucket   float64     `json:"bucket"`
	T        []float64   `json:"t"`
	Offered  []float64   `json:"offered"`  // requests/s due
	Achieved []float64   `json:"achieved"` // requests/s answered 2xx
	Errors   []int       `json:"errors"`   // requests not answered 2xx
	Share    [][]float64 `json:"share"`    // [site][i]: % of the 2xx answers
	Target   [][]float64 `json:"target"`   // [site][i]: % the weights ask for
	P50      []float64   `json:"p50_ms"`
	P90      []float64   `json:"p90_ms"`
	P99      []float64   `json:"p99_ms"`
	// Samples of the proxy's state, every SampleEvery seconds.
	ST       []float64   `json:"st"`
	Inflight [][]float64 `json:"inflight"` // [site][i]
	Limit    [][]float64 `json:"limit"`    // [site][i]
	Marks    []Mark      `json:"marks,omitempty"`
}

// Mark is an event of a run (a kill, a reload), shown on the charts.
type Mark struct {
	T     float64 `json:"t"`
	Label string  `json:"label"`
}

// Report is a whole bench run.
type Report struct {
	Started string  `json:"started"` // RFC 3339
	Seconds float64 `json:"seconds"`
	Short   bool    `json:"short"`
	// Mode is "simulated" (sites on loopback) or "target" (a running deployment); ""
	// in reports written before target mode: simulated.
	Mode    string  `json:"mode,omitempty"`
	Seed    uint64  `json:"seed"`
	Machine Machine `json:"machine"`
	// Command is the full command line, quoted as a shell would need it.
	Command string `json:"command,omitempty"`
	// Spillway is the build of the bench itself (and of the proxy it runs in simulated
	// mode).
	Spillway *BuildInfo `json:"spillway,omitempty"`
	// Target is the deployment measured in target mode.
	Target *TargetInfo `json:"target,omitempty"`
	// Baseline is the run compared with (-baseline); nil: none.
	Baseline  *BaselineInfo `json:"baseline,omitempty"`
	Pass      bool          `json:"pass"`
	Scenarios []*Result     `json:"scenarios"`
}

// Modes of a Report.
const (
	ModeSimulated = "simulated"
	ModeTarget    = "target"
)

// BuildInfo is a build of Spillway.
type BuildInfo struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

// Machine says where the bench ran.
type Machine struct {
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"go_version"`
	CPUModel  string `json:"cpu_model,omitempty"`
	Hostname  string `json:"hostname,omitempty"`
}

// judge sets Pass: no scenario failed or errored.
func (rep *Report) judge() {
	rep.Pass = true
	for _, r := range rep.Scenarios {
		if r.Verdict == Fail || r.Verdict == Error {
			rep.Pass = false
		}
	}
}
