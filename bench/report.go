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
// included), report.md (verdicts, thresholds, figures), report.html (the same with SVG
// charts, self-contained: no script, style or font is fetched) and series.csv (the
// series, for spreadsheets).
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
	var md, html, csv strings.Builder
	WriteMarkdown(&md, rep)
	WriteHTML(&html, rep)
	if err := WriteCSV(&csv, rep); err != nil {
		return fmt.Errorf("%s: %w", SeriesFile, err)
	}
	return errors.Join(
		os.WriteFile(filepath.Join(dir, ResultsFile), js.Bytes(), 0o644),
		os.WriteFile(filepath.Join(dir, SeriesFile), []byte(csv.String()), 0o644),
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

// CheckResults checks that rep is a whole report: the scenarios named in want are there
// (want empty: any subset of the suite, at least one), each a scenario of the report's
// mode with a verdict, and every pass or fail backed by its checks. It says nothing of
// whether the verdicts passed.
func CheckResults(rep *Report, want []string) error {
	var errs []error
	known := ScenarioNames()
	switch rep.Mode {
	case "", ModeSimulated:
	case ModeTarget:
		known = TargetScenarioNames()
	default:
		errs = append(errs, fmt.Errorf("mode %q: want %s or %s", rep.Mode, ModeSimulated, ModeTarget))
	}
	if len(rep.Scenarios) == 0 {
		errs = append(errs, errors.New("no scenario in the report"))
	}
	seen := map[string]*Result{}
	for _, r := range rep.Scenarios {
		if seen[r.Name] != nil {
			errs = append(errs, fmt.Errorf("scenario %s: twice in the report", r.Name))
		}
		if !slices.Contains(known, r.Name) {
			errs = append(errs, fmt.Errorf("scenario %q: not a scenario of %s mode (%s)", r.Name, modeOf(rep), strings.Join(known, ", ")))
		}
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
	p("Started %s, %.0f s in all%s: %s.\n\n", rep.Started, rep.Seconds, map[bool]string{true: " (-short)", false: ""}[rep.Short], overall)
	for _, kv := range provenance(rep) {
		p("- %s: %s\n", kv[0], mdCell(kv[1]))
	}
	p("\n")
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
		if b := r.Baseline; b != nil {
			if b.Note != "" {
				p("Against the baseline: %s.\n\n", b.Note)
			}
			if len(b.Rows) > 0 {
				p("Against the baseline:\n\n| figure | baseline | now | change | judged |\n| --- | --- | --- | --- | --- |\n")
				for _, row := range b.Rows {
					p("| %s | %g | %g | %s | %s |\n", mdCell(row.Figure), row.Baseline, row.Now, changeText(row), judgedText(row, true))
				}
				p("\n")
			}
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

// provenance is what the report says of where and how it ran, so that a run can be
// reproduced and two runs compared knowingly: label and value, in order.
func provenance(rep *Report) [][2]string {
	var out [][2]string
	add := func(k, v string) { out = append(out, [2]string{k, v}) }
	if t := rep.Target; t != nil {
		add("Mode", "target "+t.URL+" ("+t.Protocol+")")
		switch {
		case t.Admin == "":
			add("Target build", "not known: no -admin")
		case len(t.BuildInfo) == 0:
			add("Target build", "the target's /metrics has no spillway_build_info")
		default:
			add("Target build", fmt.Sprintf("spillway %s (revision %s, %s)", t.BuildInfo["version"], t.BuildInfo["revision"], t.BuildInfo["goversion"]))
		}
		if t.Admin != "" {
			add("Target admin API", t.Admin)
			add("Target config", fmt.Sprintf("%s; generation %d of %s, loaded %s",
				t.ConfigHash, t.Generation, t.Source, t.LoadedAt))
			if len(t.Sites) > 0 {
				add("Target sites", strings.Join(t.Sites, "; "))
			}
			for k, ri := range t.Replicas {
				add(fmt.Sprintf("Target replica %d", k+1), fmt.Sprintf("%s: spillway %s (revision %s), %s, generation %d",
					ri.Admin, orNone(ri.BuildInfo["version"]), orNone(ri.BuildInfo["revision"]), ri.ConfigHash, ri.Generation))
			}
			if t.Note != "" {
				add("Target warning", t.Note)
			}
		}
	} else {
		add("Mode", "simulated sites on loopback")
	}
	if b := rep.Spillway; b != nil {
		add("Spillway (this bench)", fmt.Sprintf("%s (revision %s, %s, %s)", b.Version, b.Revision, b.GoVersion, b.Platform))
	}
	add("Seed", fmt.Sprint(rep.Seed))
	m := rep.Machine
	add("Machine", fmt.Sprintf("%s, %s/%s, %d CPUs%s, %s", m.Hostname, m.OS, m.Arch, m.CPUs, prefixed(", ", m.CPUModel), m.GoVersion))
	if rep.Command != "" {
		add("Command", rep.Command)
	}
	if b := rep.Baseline; b != nil {
		add("Baseline", fmt.Sprintf("%s (started %s%s); a judged figure fails when more than %g%% worse", b.File, b.Started,
			prefixed(", revision ", b.Revision), b.RegressionPct))
	}
	return out
}

func changeText(row ComparisonRow) string {
	if row.ChangePct == nil {
		if row.Now == row.Baseline {
			return "0%"
		}
		return "new"
	}
	return fmt.Sprintf("%+.1f%%", *row.ChangePct)
}

func judgedText(row ComparisonRow, md bool) string {
	switch {
	case row.Better == "":
		return ""
	case row.Regressed && md:
		return "**regressed** (" + row.Better + " is better)"
	case row.Regressed:
		return "regressed (" + row.Better + " is better)"
	}
	return "ok (" + row.Better + " is better)"
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
