package bench

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// The report's charts: inline SVG, drawn from a scenario's Series.

// siteColors are the sites' colours on every chart, in Sites order.
var siteColors = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"}

func colorOf(i int) string { return siteColors[i%len(siteColors)] }

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
	f := c.frame()
	fmt.Fprintf(&sb, `<svg width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`,
		chartW, chartH, chartW, chartH)
	fmt.Fprintf(&sb, `<text x="%d" y="16" font-size="13" font-weight="600">%s</text>`, padL, html.EscapeString(c.title))
	f.axes(&sb, c.unit)
	f.marks(&sb, c.marks)
	for _, l := range c.lines {
		f.polyline(&sb, l)
	}
	legend(&sb, c.lines)
	sb.WriteString("</svg>\n")
	return sb.String()
}

// chartFrame maps a chart's data onto its plot area.
type chartFrame struct {
	xMax, yMax float64
	pw, ph     float64 // the plot area's width and height
}

// frame is c's frame: yMax from the data when c has none (rounded up), xMax the run's
// length or else the data's.
func (c chart) frame() chartFrame {
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
	return chartFrame{xMax: xMax, yMax: yMax, pw: float64(chartW - padL - padR), ph: float64(chartH - padT - padB)}
}

func (f chartFrame) px(x float64) float64 { return padL + x/f.xMax*f.pw }
func (f chartFrame) py(y float64) float64 { return padT + f.ph - math.Min(y, f.yMax)/f.yMax*f.ph }

// axes draws the grid, the ticks and the plot area's border.
func (f chartFrame) axes(sb *strings.Builder, unit string) {
	e := html.EscapeString
	for i := 0; i <= 4; i++ {
		y := f.yMax * float64(i) / 4
		fmt.Fprintf(sb, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>`, padL, f.py(y), chartW-padR, f.py(y))
		fmt.Fprintf(sb, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, padL-4, f.py(y)+4, e(tick(y)+unit))
	}
	for i := 0; i <= 5; i++ {
		x := f.xMax * float64(i) / 5
		fmt.Fprintf(sb, `<text x="%.1f" y="%d" text-anchor="middle">%ss</text>`, f.px(x), chartH-padB+14, e(tick(x)))
	}
	fmt.Fprintf(sb, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`, padL, padT, f.pw, f.ph)
}

// marks draws the events: a line each, labelled when there are few.
func (f chartFrame) marks(sb *strings.Builder, marks []Mark) {
	e := html.EscapeString
	for k, m := range marks {
		if m.T > f.xMax {
			continue
		}
		fmt.Fprintf(sb, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.0f" stroke="#aaa" stroke-dasharray="2,3"><title>%s at %.2fs</title></line>`,
			f.px(m.T), padT, f.px(m.T), padT+f.ph, e(m.Label), m.T)
		if len(marks) <= 12 {
			// Staggered, so that labels of events close in time do not overprint.
			fmt.Fprintf(sb, `<text x="%.1f" y="%d" fill="#777" font-size="9">%s</text>`, f.px(m.T)+2, padT+10+10*(k%4), e(m.Label))
		}
	}
}

// polyline draws l, without its missing (NaN) points and those beyond xMax.
func (f chartFrame) polyline(sb *strings.Builder, l line) {
	var pts []string
	for i := range l.x {
		if i < len(l.y) && !math.IsNaN(l.y[i]) && l.x[i] <= f.xMax {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", f.px(l.x[i]), f.py(l.y[i])))
		}
	}
	dash := ""
	if l.dashed {
		dash = ` stroke-dasharray="6,4" stroke-opacity="0.7"`
	}
	fmt.Fprintf(sb, `<polyline fill="none" stroke="%s" stroke-width="1.6"%s points="%s"/>`, l.color, dash, strings.Join(pts, " "))
}

// legend names the lines below the plot, wrapping when a row is full.
func legend(sb *strings.Builder, lines []line) {
	x, y := float64(padL), float64(chartH-padB+30)
	for _, l := range lines {
		dash := ""
		if l.dashed {
			dash = ` stroke-dasharray="6,4"`
		}
		fmt.Fprintf(sb, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2"%s/><text x="%.0f" y="%.0f">%s</text>`,
			x, y-4, x+18, y-4, l.color, dash, x+22, y, html.EscapeString(l.name))
		x += 30 + 6.5*float64(len(l.name))
		if x > chartW-110 {
			x, y = padL, y+15
		}
	}
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
