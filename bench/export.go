package bench

import (
	"encoding/csv"
	"encoding/xml"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// SeriesFile is the CSV of the series that WriteReport writes beside the report.
const SeriesFile = "series.csv"

// JUnit is a JUnit XML report, as CI systems (Jenkins, GitLab, GitHub Actions' test
// reporters) read it: a test suite per scenario, a test case per check.
type JUnit struct {
	XMLName  xml.Name         `xml:"testsuites"`
	Name     string           `xml:"name,attr"`
	Tests    int              `xml:"tests,attr"`
	Failures int              `xml:"failures,attr"`
	Errors   int              `xml:"errors,attr"`
	Time     float64          `xml:"time,attr"`
	Suites   []JUnitTestSuite `xml:"testsuite"`
}

// JUnitTestSuite is one scenario.
type JUnitTestSuite struct {
	Name       string          `xml:"name,attr"`
	Tests      int             `xml:"tests,attr"`
	Failures   int             `xml:"failures,attr"`
	Errors     int             `xml:"errors,attr"`
	Skipped    int             `xml:"skipped,attr"`
	Time       float64         `xml:"time,attr"`
	Timestamp  string          `xml:"timestamp,attr,omitempty"`
	Properties []JUnitProperty `xml:"properties>property,omitempty"`
	Cases      []JUnitTestCase `xml:"testcase"`
	SystemOut  string          `xml:"system-out,omitempty"`
}

// JUnitProperty is a name and a value of a suite (the target, the seed, the revision).
type JUnitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

// JUnitTestCase is one check.
type JUnitTestCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      float64       `xml:"time,attr"`
	Failure   *JUnitProblem `xml:"failure,omitempty"`
	Error     *JUnitProblem `xml:"error,omitempty"`
	Skipped   *JUnitProblem `xml:"skipped,omitempty"`
}

// JUnitProblem is a failure, an error or a skip.
type JUnitProblem struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr,omitempty"`
	Text    string `xml:",chardata"`
}

// ToJUnit turns rep into JUnit: a suite per scenario, a test case per check (failed
// checks are failures); a scenario that could not run is one test case with an error, a
// skipped one a skipped test case.
func ToJUnit(rep *Report) *JUnit {
	j := &JUnit{Name: "spillway bench", Time: rep.Seconds}
	var props []JUnitProperty
	add := func(name, value string) {
		if value != "" {
			props = append(props, JUnitProperty{name, value})
		}
	}
	add("mode", modeOf(rep))
	add("seed", strconv.FormatUint(rep.Seed, 10))
	add("command", rep.Command)
	if b := rep.Spillway; b != nil {
		add("spillway.version", b.Version)
		add("spillway.revision", b.Revision)
	}
	if t := rep.Target; t != nil {
		add("target", t.URL)
		add("target.config_hash", t.ConfigHash)
		add("target.version", t.BuildInfo["version"])
		add("target.revision", t.BuildInfo["revision"])
	}
	add("machine", fmt.Sprintf("%s/%s, %d CPUs, %s", rep.Machine.OS, rep.Machine.Arch, rep.Machine.CPUs, rep.Machine.Hostname))
	for _, r := range rep.Scenarios {
		s := JUnitTestSuite{Name: "bench." + r.Name, Time: r.Seconds, Timestamp: rep.Started, Properties: props}
		class := "spillway.bench." + r.Name
		switch r.Verdict {
		case Error:
			s.Cases = append(s.Cases, JUnitTestCase{Name: r.Name, Classname: class, Time: r.Seconds,
				Error: &JUnitProblem{Message: r.Note, Type: "error", Text: r.Note}})
			s.Errors++
		case Skip:
			s.Cases = append(s.Cases, JUnitTestCase{Name: r.Name, Classname: class,
				Skipped: &JUnitProblem{Message: r.Note}})
			s.Skipped++
		default:
			for _, c := range r.Checks {
				tc := JUnitTestCase{Name: c.Name, Classname: class}
				if !c.Pass {
					msg := fmt.Sprintf("measured %s, want %s %s", num(c.Measured, c.Unit), c.Op, num(c.Threshold, c.Unit))
					tc.Failure = &JUnitProblem{Message: msg, Type: "threshold", Text: c.String()}
					s.Failures++
				}
				s.Cases = append(s.Cases, tc)
			}
			if len(r.Checks) == 0 { // Judge failed it: no checks were made
				s.Cases = append(s.Cases, JUnitTestCase{Name: r.Name, Classname: class,
					Failure: &JUnitProblem{Message: r.Note, Type: "no checks"}})
				s.Failures++
			}
		}
		s.Tests = len(s.Cases)
		if r.Note != "" {
			s.SystemOut = "note: " + r.Note
		}
		j.Tests += s.Tests
		j.Failures += s.Failures
		j.Errors += s.Errors
		j.Suites = append(j.Suites, s)
	}
	return j
}

// WriteJUnit writes rep as JUnit XML.
func WriteJUnit(w io.Writer, rep *Report) error {
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(ToJUnit(rep)); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// WriteCSV writes the scenarios' series, a row per second (PerSecond where the charts'
// points are finer; bucket_s says the width), for spreadsheets: scenario, t_s,
// bucket_s, offered_rps, achieved_rps, errors, p50_ms, p90_ms, p99_ms, then per site its
// share % and target %, and per site its in-flight and limit as last sampled in the point.
func WriteCSV(w io.Writer, rep *Report) error {
	var sites []string
	for _, r := range rep.Scenarios {
		if r.Series == nil {
			continue
		}
		for _, s := range r.Series.Sites {
			if !slices.Contains(sites, s) {
				sites = append(sites, s)
			}
		}
	}
	cw := csv.NewWriter(w)
	header := []string{"scenario", "t_s", "bucket_s", "offered_rps", "achieved_rps", "errors", "p50_ms", "p90_ms", "p99_ms"}
	for _, s := range sites {
		header = append(header, "share_pct."+s, "target_pct."+s)
	}
	for _, s := range sites {
		header = append(header, "inflight."+s, "limit."+s)
	}
	cw.Write(header)
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	at := func(xs []float64, i int) string {
		if i < len(xs) {
			return f(xs[i])
		}
		return ""
	}
	for _, r := range rep.Scenarios {
		s, samples := r.Series, r.Series
		if s == nil {
			continue
		}
		if r.PerSecond != nil {
			s = r.PerSecond
		}
		for i, t := range s.T {
			row := []string{r.Name, f(t), f(s.Bucket), at(s.Offered, i), at(s.Achieved, i), "", at(s.P50, i), at(s.P90, i), at(s.P99, i)}
			if i < len(s.Errors) {
				row[5] = strconv.Itoa(s.Errors[i])
			}
			for _, name := range sites {
				k := slices.Index(s.Sites, name)
				if k < 0 || k >= len(s.Share) {
					row = append(row, "", "")
					continue
				}
				row = append(row, at(s.Share[k], i), at(s.Target[k], i))
			}
			// The last sample of the proxy's state inside the point.
			j := -1
			for n, st := range samples.ST {
				if st >= t && st < t+s.Bucket {
					j = n
				}
			}
			for _, name := range sites {
				k := slices.Index(samples.Sites, name)
				if j < 0 || k < 0 || k >= len(samples.Inflight) || j >= len(samples.Inflight[k]) {
					row = append(row, "", "")
					continue
				}
				row = append(row, f(samples.Inflight[k][j]), f(samples.Limit[k][j]))
			}
			cw.Write(row)
		}
	}
	cw.Flush()
	return cw.Error()
}

// ShellQuote quotes args as a POSIX shell would need them, so that the report's command
// line can be pasted to run again.
func ShellQuote(args []string) string {
	var parts []string
	for _, a := range args {
		if a != "" && strings.IndexFunc(a, func(c rune) bool {
			return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_./:=,@%+", c))
		}) < 0 {
			parts = append(parts, a)
			continue
		}
		parts = append(parts, "'"+strings.ReplaceAll(a, "'", `'\''`)+"'")
	}
	return strings.Join(parts, " ")
}
