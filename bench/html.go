package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// siteColors are the sites' colours on every chart, in Sites order.
var siteColors = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"}

func colorOf(i int) string { return siteColors[i%len(siteColors)] }

const htmlStyle = `body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f5f5f5}.pass{color:#17803d;font-weight:600}.fail{color:#c62828;font-weight:700}.skip{color:#777}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts svg{border:1px solid #eee;background:#fff}
.small{color:#555;font-size:.92em}details{margin:.5em 0}code{background:#f5f5f5;padding:0 .2em}`

// WriteHTML writes rep as one self-contained HTML page: inline style, inline SVG charts,
// no script and nothing fetched from elsewhere.
func WriteHTML(w io.Writer, rep *Report) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	e := html.EscapeString
	p("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Spillway bench report</title>\n<style>%s</style></head><body>\n", htmlStyle)
	p("<h1>Spillway bench report</h1>\n")
	overall := `<span class="pass">all verdicts pass</span>`
	if !rep.Pass {
		overall = `<span class="fail">some verdicts failed</span>`
	}
	short := ""
	if rep.Short {
		short = " (-short)"
	}
	p("<p>Started %s, %.0f s in all%s: %s.</p>\n<table class=\"small\">\n", e(rep.Started), rep.Seconds, short, overall)
	for _, kv := range provenance(rep) {
		v := e(kv[1])
		if kv[0] == "Command" {
			v = "<code>" + v + "</code>"
		}
		p("<tr><th>%s</th><td>%s</td></tr>\n", e(kv[0]), v)
	}
	p("</table>\n")
	p("<table><tr><th>scenario</th><th>verdict</th><th>checks passed</th><th>p99</th><th>errors</th><th>seconds</th></tr>\n")
	for _, r := range rep.Scenarios {
		passed := r.Passed()
		p("<tr><td><a href=\"#%s\">%s</a></td><td>%s</td><td>%d/%d</td><td>%s</td><td>%s</td><td>%.1f</td></tr>\n",
			e(anchor(r.Name)), e(r.Name), verdictHTML(r.Verdict), passed, len(r.Checks),
			e(figure(r.Figures, "p99_ms", " ms")), e(figure(r.Figures, "errors", "")), r.Seconds)
	}
	p("</table>\n")
	for _, r := range rep.Scenarios {
		p("<h2 id=\"%s\">%s — %s</h2>\n", e(anchor(r.Name)), e(r.Name), e(r.Title))
		p("<p>Verdict: %s</p>\n<p>%s</p>\n", verdictHTML(r.Verdict), e(r.Description))
		if r.Note != "" {
			p("<p class=\"small\">Note: %s</p>\n", e(r.Note))
		}
		if len(r.Checks) > 0 {
			p("<table><tr><th>check</th><th>measured</th><th>threshold</th><th>result</th></tr>\n")
			for _, c := range r.Checks {
				res := `<span class="pass">pass</span>`
				if !c.Pass {
					res = `<span class="fail">FAIL</span>`
				}
				p("<tr><td>%s</td><td>%s</td><td>%s %s</td><td>%s</td></tr>\n", e(c.Name), e(num(c.Measured, c.Unit)), e(c.Op), e(num(c.Threshold, c.Unit)), res)
			}
			p("</table>\n")
		}
		if b := r.Baseline; b != nil {
			if b.Note != "" {
				p("<p class=\"small\">Against the baseline: %s.</p>\n", e(b.Note))
			}
			if len(b.Rows) > 0 {
				p("<details%s><summary>Against the baseline</summary><table><tr><th>figure</th><th>baseline</th><th>now</th><th>change</th><th>judged</th></tr>\n", map[bool]string{true: " open"}[hasRegression(b)])
				for _, row := range b.Rows {
					cls := ""
					if row.Regressed {
						cls = ` class="fail"`
					}
					p("<tr><td>%s</td><td>%g</td><td>%g</td><td>%s</td><td%s>%s</td></tr>\n", e(row.Figure), row.Baseline, row.Now, e(changeText(row)), cls, e(judgedText(row, false)))
				}
				p("</table></details>\n")
			}
		}
		if t := r.Table; t != nil {
			p("<table><tr>")
			for _, h := range t.Header {
				p("<th>%s</th>", e(h))
			}
			p("</tr>\n")
			for _, row := range t.Rows {
				p("<tr>")
				for _, c := range row {
					p("<td>%s</td>", e(c))
				}
				p("</tr>\n")
			}
			p("</table>\n")
		}
		if s := r.Series; s != nil && len(s.T) > 0 {
			p("<div class=\"charts\">\n")
			io.WriteString(w, shareChart(s))
			io.WriteString(w, latencyChart(s))
			io.WriteString(w, inflightChart(s))
			io.WriteString(w, rateChart(s))
			p("</div>\n")
		}
		p("<details><summary>Parameters and measurements</summary><table>\n")
		for _, k := range sortedKeys(r.Params) {
			p("<tr><th>%s</th><td>%s</td></tr>\n", e(k), e(fmt.Sprint(r.Params[k])))
		}
		for _, k := range sortedKeys(r.Figures) {
			p("<tr><td>%s</td><td>%g</td></tr>\n", e(k), r.Figures[k])
		}
		p("</table></details>\n")
	}
	p("<p class=\"small\">Written by <code>spillway bench</code>. The same data, series included, is in results.json.</p>\n</body></html>\n")
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

// line is one line of a chart.
type line struct {
	name   string
	color  string
	dashed bool
	x, y   []float64
}

// chart draws lines on one pair of axes as an SVG element.
type chart struct {
	title, unit string
	yMax        float64 // 0: from the data
	lines       []line
	marks       []Mark
	xMax        float64
}

const (
	chartW, chartH = 530, 260
	padL, padR     = 52, 12
	padT, padB     = 26, 58
)

func (c chart) svg() string {
	var sb strings.Builder
	e := html.EscapeString
	yMax := c.yMax
	if yMax <= 0 {
		for _, l := range c.lines {
			for _, v := range l.y {
				yMax = math.Max(yMax, v)
			}
		}
		yMax = niceCeil(yMax * 1.05)
	}
	xMax := c.xMax // the run's length; points beyond it (requests still draining) are left out
	if xMax <= 0 {
		for _, l := range c.lines {
			for _, v := range l.x {
				xMax = math.Max(xMax, v)
			}
		}
	}
	if xMax <= 0 {
		xMax = 1
	}
	pw, ph := float64(chartW-padL-padR), float64(chartH-padT-padB)
	px := func(x float64) float64 { return padL + x/xMax*pw }
	py := func(y float64) float64 { return padT + ph - math.Min(y, yMax)/yMax*ph }
	fmt.Fprintf(&sb, `<svg width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`,
		chartW, chartH, chartW, chartH)
	fmt.Fprintf(&sb, `<text x="%d" y="16" font-size="13" font-weight="600">%s</text>`, padL, e(c.title))
	// Grid and axes.
	for i := 0; i <= 4; i++ {
		y := yMax * float64(i) / 4
		fmt.Fprintf(&sb, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>`, padL, py(y), chartW-padR, py(y))
		fmt.Fprintf(&sb, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, padL-4, py(y)+4, e(tick(y)+c.unit))
	}
	for i := 0; i <= 5; i++ {
		x := xMax * float64(i) / 5
		fmt.Fprintf(&sb, `<text x="%.1f" y="%d" text-anchor="middle">%ss</text>`, px(x), chartH-padB+14, e(tick(x)))
	}
	fmt.Fprintf(&sb, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`, padL, padT, pw, ph)
	// Events: a line each, labelled when there are few.
	for k, m := range c.marks {
		if m.T > xMax {
			continue
		}
		fmt.Fprintf(&sb, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.0f" stroke="#aaa" stroke-dasharray="2,3"><title>%s at %.2fs</title></line>`,
			px(m.T), padT, px(m.T), padT+ph, e(m.Label), m.T)
		if len(c.marks) <= 12 {
			// Staggered, so that labels of events close in time do not overprint.
			fmt.Fprintf(&sb, `<text x="%.1f" y="%d" fill="#777" font-size="9">%s</text>`, px(m.T)+2, padT+10+10*(k%4), e(m.Label))
		}
	}
	for _, l := range c.lines {
		var pts []string
		for i := range l.x {
			if i < len(l.y) && !math.IsNaN(l.y[i]) && l.x[i] <= xMax {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(l.x[i]), py(l.y[i])))
			}
		}
		dash := ""
		if l.dashed {
			dash = ` stroke-dasharray="6,4" stroke-opacity="0.7"`
		}
		fmt.Fprintf(&sb, `<polyline fill="none" stroke="%s" stroke-width="1.6"%s points="%s"/>`, l.color, dash, strings.Join(pts, " "))
	}
	// Legend.
	x, y := float64(padL), float64(chartH-padB+30)
	for _, l := range c.lines {
		dash := ""
		if l.dashed {
			dash = ` stroke-dasharray="6,4"`
		}
		fmt.Fprintf(&sb, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2"%s/><text x="%.0f" y="%.0f">%s</text>`,
			x, y-4, x+18, y-4, l.color, dash, x+22, y, e(l.name))
		x += 30 + 6.5*float64(len(l.name))
		if x > chartW-110 {
			x, y = padL, y+15
		}
	}
	sb.WriteString("</svg>\n")
	return sb.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func tick(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

// mid are the middles of the series' buckets.
func mid(s *Series) []float64 {
	out := make([]float64, len(s.T))
	for i, t := range s.T {
		out[i] = t + s.Bucket/2
	}
	return out
}

func shareChart(s *Series) string {
	c := chart{title: "Share of 2xx answers per site (dashed: target)", unit: "%", yMax: 100, marks: s.Marks,
		xMax: s.T[len(s.T)-1] + s.Bucket}
	x := mid(s)
	for i, name := range s.Sites {
		c.lines = append(c.lines, line{name: name, color: colorOf(i), x: x, y: s.Share[i]},
			line{name: name + " target", color: colorOf(i), dashed: true, x: x, y: s.Target[i]})
	}
	return c.svg()
}

func latencyChart(s *Series) string {
	c := chart{title: "Latency percentiles (from when each request was due)", unit: "ms", marks: s.Marks,
		xMax: s.T[len(s.T)-1] + s.Bucket}
	x := mid(s)
	c.lines = []line{{name: "p50", color: "#2b8cbe", x: x, y: s.P50}, {name: "p90", color: "#e6a700", x: x, y: s.P90},
		{name: "p99", color: "#d62728", x: x, y: s.P99}}
	return c.svg()
}

func inflightChart(s *Series) string {
	c := chart{title: "In flight per site (dashed: its limit)", marks: s.Marks, xMax: s.T[len(s.T)-1] + s.Bucket}
	for i, name := range s.Sites {
		c.lines = append(c.lines, line{name: name, color: colorOf(i), x: s.ST, y: s.Inflight[i]},
			line{name: name + " limit", color: colorOf(i), dashed: true, x: s.ST, y: s.Limit[i]})
	}
	return c.svg()
}

func rateChart(s *Series) string {
	c := chart{title: "Offered and answered (2xx) rate, errors", unit: "/s", marks: s.Marks, xMax: s.T[len(s.T)-1] + s.Bucket}
	x := mid(s)
	errs := make([]float64, len(s.Errors))
	for i, n := range s.Errors {
		errs[i] = float64(n) / s.Bucket
	}
	c.lines = []line{{name: "offered", color: "#555", dashed: true, x: x, y: s.Offered},
		{name: "answered 2xx", color: "#17803d", x: x, y: s.Achieved}, {name: "errors", color: "#c62828", x: x, y: errs}}
	return c.svg()
}

func hasRegression(c *Comparison) bool {
	for _, r := range c.Rows {
		if r.Regressed {
			return true
		}
	}
	return false
}
