package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The report files WriteReport writes in its directory.
const (
	ResultsFile  = "results.json"
	MarkdownFile = "report.md"
	HTMLFile     = "report.html"
)

// WriteReport writes rep to dir (made if missing) as results.json (everything, series
// included), report.md (verdicts, thresholds, figures) and report.html (the same with SVG
// charts, self-contained: no script, style or font is fetched).
func WriteReport(dir string, rep *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var js bytes.Buffer
	enc := json.NewEncoder(&js)
	enc.SetEscapeHTML(false) // keys like "spills.idc1>aws" stay readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return fmt.Errorf("results.json: %w", err)
	}
	var md, html strings.Builder
	WriteMarkdown(&md, rep)
	WriteHTML(&html, rep)
	return errors.Join(
		os.WriteFile(filepath.Join(dir, ResultsFile), js.Bytes(), 0o644),
		os.WriteFile(filepath.Join(dir, MarkdownFile), []byte(md.String()), 0o644),
		os.WriteFile(filepath.Join(dir, HTMLFile), []byte(html.String()), 0o644))
}

// ReadResults reads a results.json that WriteReport wrote.
func ReadResults(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rep Report
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &rep, nil
}

// CheckResults checks that rep is a whole report: every scenario of the suite is there
// (or those named), each with a verdict, and every pass or fail backed by its checks. It
// says nothing of whether the verdicts passed.
func CheckResults(rep *Report, want []string) error {
	if len(want) == 0 {
		want = ScenarioNames()
	}
	var errs []error
	seen := map[string]*Result{}
	for _, r := range rep.Scenarios {
		seen[r.Name] = r
		switch r.Verdict {
		case Pass, Fail:
			if len(r.Checks) == 0 {
				errs = append(errs, fmt.Errorf("scenario %s: verdict %s without checks", r.Name, r.Verdict))
			}
			for _, c := range r.Checks {
				if c.Op != "<=" && c.Op != ">=" {
					errs = append(errs, fmt.Errorf("scenario %s: check %q: op %q", r.Name, c.Name, c.Op))
				}
			}
		case Skip, Error:
			if r.Note == "" {
				errs = append(errs, fmt.Errorf("scenario %s: verdict %s without a note", r.Name, r.Verdict))
			}
		default:
			errs = append(errs, fmt.Errorf("scenario %s: verdict %q", r.Name, r.Verdict))
		}
	}
	for _, name := range want {
		if seen[name] == nil {
			errs = append(errs, fmt.Errorf("scenario %s: missing", name))
		}
	}
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func verdictWord(v Verdict) string {
	switch v {
	case Pass:
		return "PASS"
	case Fail:
		return "**FAIL**"
	case Error:
		return "**ERROR**"
	}
	return "skip"
}

// WriteMarkdown writes rep as Markdown.
func WriteMarkdown(w io.Writer, rep *Report) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	overall := "all verdicts pass"
	if !rep.Pass {
		overall = "**some verdicts failed**"
	}
	p("# Spillway bench report\n\n")
	p("Started %s, %.0f s in all%s: %s.\n", rep.Started, rep.Seconds, map[bool]string{true: " (-short)", false: ""}[rep.Short], overall)
	m := rep.Machine
	p("Machine: %s/%s, %d CPUs%s, %s.\n\n", m.OS, m.Arch, m.CPUs, prefixed(", ", m.CPUModel), m.GoVersion)
	p("| scenario | verdict | checks passed | p99 | errors | seconds |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rep.Scenarios {
		passed := r.Passed()
		p("| [%s](#%s) | %s | %d/%d | %s | %s | %.1f |\n", r.Name, anchor(r.Name), verdictWord(r.Verdict), passed, len(r.Checks),
			figure(r.Figures, "p99_ms", " ms"), figure(r.Figures, "errors", ""), r.Seconds)
	}
	for _, r := range rep.Scenarios {
		p("\n## %s\n\n", r.Name)
		p("**%s** — verdict: %s\n\n%s\n\n", r.Title, verdictWord(r.Verdict), r.Description)
		if r.Note != "" {
			p("Note: %s\n\n", r.Note)
		}
		if len(r.Checks) > 0 {
			p("| check | measured | threshold | result |\n| --- | --- | --- | --- |\n")
			for _, c := range r.Checks {
				res := "pass"
				if !c.Pass {
					res = "**FAIL**"
				}
				p("| %s | %s | %s %s | %s |\n", mdCell(c.Name), num(c.Measured, c.Unit), c.Op, num(c.Threshold, c.Unit), res)
			}
			p("\n")
		}
		if t := r.Table; t != nil {
			p("| %s |\n|%s\n", strings.Join(t.Header, " | "), strings.Repeat(" --- |", len(t.Header)))
			for _, row := range t.Rows {
				p("| %s |\n", strings.Join(row, " | "))
			}
			p("\n")
		}
		if len(r.Params) > 0 {
			p("Parameters: ")
			var parts []string
			for _, k := range sortedKeys(r.Params) {
				parts = append(parts, fmt.Sprintf("%s = %v", k, r.Params[k]))
			}
			p("%s.\n\n", strings.Join(parts, "; "))
		}
		if len(r.Figures) > 0 {
			p("Measured: ")
			var parts []string
			for _, k := range sortedKeys(r.Figures) {
				parts = append(parts, fmt.Sprintf("%s = %g", k, r.Figures[k]))
			}
			p("%s.\n", strings.Join(parts, "; "))
		}
	}
}

func prefixed(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

func figure(f map[string]float64, key, unit string) string {
	v, ok := f[key]
	if !ok {
		return "—"
	}
	return fmt.Sprintf("%g%s", v, unit)
}

func anchor(name string) string { return strings.ToLower(strings.ReplaceAll(name, " ", "-")) }

func mdCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
