package bench

import (
	"fmt"
	"html"
	"io"
)

const htmlStyle = `body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f5f5f5}.pass{color:#17803d;font-weight:600}.fail{color:#c62828;font-weight:700}.skip{color:#777}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts svg{border:1px solid #eee;background:#fff}
.small{color:#555;font-size:.92em}details{margin:.5em 0}code{background:#f5f5f5;padding:0 .2em}`

// WriteHTML writes rep as one self-contained HTML page: inline style, inline SVG charts,
// no script and nothing fetched from elsewhere.
func WriteHTML(w io.Writer, rep *Report) {
	p := htmlPage{w}
	p.f("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Spillway bench report</title>\n<style>%s</style></head><body>\n", htmlStyle)
	p.f("<h1>Spillway bench report</h1>\n")
	p.summary(rep)
	for _, r := range rep.Scenarios {
		p.scenario(r)
	}
	p.f("<p class=\"small\">Written by <code>spillway bench</code>. The same data, series included, is in results.json.</p>\n</body></html>\n")
}

// htmlPage writes the report's HTML to w.
type htmlPage struct{ w io.Writer }

func (p htmlPage) f(format string, args ...any) { fmt.Fprintf(p.w, format, args...) }

// summary writes the overall verdict, the provenance and a row per scenario.
func (p htmlPage) summary(rep *Report) {
	e := html.EscapeString
	overall := `<span class="pass">all verdicts pass</span>`
	if !rep.Pass {
		overall = `<span class="fail">some verdicts failed</span>`
	}
	short := ""
	if rep.Short {
		short = " (-short)"
	}
	p.f("<p>Started %s, %.0f s in all%s: %s.</p>\n<table class=\"small\">\n", e(rep.Started), rep.Seconds, short, overall)
	for _, kv := range provenance(rep) {
		v := e(kv[1])
		if kv[0] == "Command" {
			v = "<code>" + v + "</code>"
		}
		p.f("<tr><th>%s</th><td>%s</td></tr>\n", e(kv[0]), v)
	}
	p.f("</table>\n")
	p.f("<table><tr><th>scenario</th><th>verdict</th><th>checks passed</th><th>p99</th><th>errors</th><th>seconds</th></tr>\n")
	for _, r := range rep.Scenarios {
		passed := r.Passed()
		p.f("<tr><td><a href=\"#%s\">%s</a></td><td>%s</td><td>%d/%d</td><td>%s</td><td>%s</td><td>%.1f</td></tr>\n",
			e(anchor(r.Name)), e(r.Name), verdictHTML(r.Verdict), passed, len(r.Checks),
			e(figure(r.Figures, "p99_ms", " ms")), e(figure(r.Figures, "errors", "")), r.Seconds)
	}
	p.f("</table>\n")
}

// scenario writes one scenario's section: verdict, checks, baseline, table, charts, and
// its parameters and figures.
func (p htmlPage) scenario(r *Result) {
	e := html.EscapeString
	p.f("<h2 id=\"%s\">%s — %s</h2>\n", e(anchor(r.Name)), e(r.Name), e(r.Title))
	p.f("<p>Verdict: %s</p>\n<p>%s</p>\n", verdictHTML(r.Verdict), e(r.Description))
	if r.Note != "" {
		p.f("<p class=\"small\">Note: %s</p>\n", e(r.Note))
	}
	if len(r.Checks) > 0 {
		p.checks(r.Checks)
	}
	if b := r.Baseline; b != nil {
		p.baseline(b)
	}
	if t := r.Table; t != nil {
		p.table(t)
	}
	if s := r.Series; s != nil && len(s.T) > 0 {
		p.f("<div class=\"charts\">\n")
		io.WriteString(p.w, shareChart(s))
		io.WriteString(p.w, latencyChart(s))
		io.WriteString(p.w, inflightChart(s))
		io.WriteString(p.w, rateChart(s))
		p.f("</div>\n")
	}
	p.f("<details><summary>Parameters and measurements</summary><table>\n")
	for _, k := range sortedKeys(r.Params) {
		p.f("<tr><th>%s</th><td>%s</td></tr>\n", e(k), e(fmt.Sprint(r.Params[k])))
	}
	for _, k := range sortedKeys(r.Figures) {
		p.f("<tr><td>%s</td><td>%g</td></tr>\n", e(k), r.Figures[k])
	}
	p.f("</table></details>\n")
}

func (p htmlPage) checks(checks []Check) {
	e := html.EscapeString
	p.f("<table><tr><th>check</th><th>measured</th><th>threshold</th><th>result</th></tr>\n")
	for _, c := range checks {
		res := `<span class="pass">pass</span>`
		if !c.Pass {
			res = `<span class="fail">FAIL</span>`
		}
		p.f("<tr><td>%s</td><td>%s</td><td>%s %s</td><td>%s</td></tr>\n", e(c.Name), e(num(c.Measured, c.Unit)), e(c.Op), e(num(c.Threshold, c.Unit)), res)
	}
	p.f("</table>\n")
}

// baseline writes the comparison with the baseline, open when a figure regressed.
func (p htmlPage) baseline(b *Comparison) {
	e := html.EscapeString
	if b.Note != "" {
		p.f("<p class=\"small\">Against the baseline: %s.</p>\n", e(b.Note))
	}
	if len(b.Rows) == 0 {
		return
	}
	p.f("<details%s><summary>Against the baseline</summary><table><tr><th>figure</th><th>baseline</th><th>now</th><th>change</th><th>judged</th></tr>\n", map[bool]string{true: " open"}[hasRegression(b)])
	for _, row := range b.Rows {
		cls := ""
		if row.Regressed {
			cls = ` class="fail"`
		}
		p.f("<tr><td>%s</td><td>%g</td><td>%g</td><td>%s</td><td%s>%s</td></tr>\n", e(row.Figure), row.Baseline, row.Now, e(changeText(row)), cls, e(judgedText(row, false)))
	}
	p.f("</table></details>\n")
}

func (p htmlPage) table(t *Table) {
	e := html.EscapeString
	p.f("<table><tr>")
	for _, h := range t.Header {
		p.f("<th>%s</th>", e(h))
	}
	p.f("</tr>\n")
	for _, row := range t.Rows {
		p.f("<tr>")
		for _, c := range row {
			p.f("<td>%s</td>", e(c))
		}
		p.f("</tr>\n")
	}
	p.f("</table>\n")
}

func verdictHTML(v Verdict) string {
	switch v {
	case Pass:
		return `<span class="pass">PASS</span>`
	case Fail:
		return `<span class="fail">FAIL</span>`
	case Error:
		return `<span class="fail">ERROR</span>`
	}
	return `<span class="skip">skip</span>`
}

func hasRegression(c *Comparison) bool {
	for _, r := range c.Rows {
		if r.Regressed {
			return true
		}
	}
	return false
}
