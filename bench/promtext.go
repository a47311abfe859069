package bench

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// metricSample is one sample of the Prometheus text exposition format: a metric name, its
// labels and its value.
type metricSample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// metricSet is a scrape of /metrics.
type metricSet []metricSample

// maxMetricLine bounds a line of /metrics: a target is not trusted to send sane ones.
const maxMetricLine = 64 << 10

// parseMetrics reads the Prometheus text format (version 0.0.4) that Spillway's /metrics
// serves: "# HELP/TYPE" and other comments are skipped, every sample line is "name{l="v",…}
// value [timestamp]". A line it cannot read is an error naming the line, so that a target
// answering something else (an HTML page, a proxy's error) is not read as zero.
func parseMetrics(r io.Reader) (metricSet, error) {
	var out metricSet
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxMetricLine)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parseSampleLine(line)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: %w", n, err)
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return out, nil
}

func parseSampleLine(line string) (metricSample, error) {
	s := metricSample{}
	i := 0
	for i < len(line) && isMetricNameByte(line[i], i == 0) {
		i++
	}
	if i == 0 {
		return s, fmt.Errorf("want a metric name, got %.40q", line)
	}
	s.Name = line[:i]
	rest := line[i:]
	if strings.HasPrefix(rest, "{") {
		labels, n, err := parseLabels(rest)
		if err != nil {
			return s, fmt.Errorf("%s: %w", s.Name, err)
		}
		s.Labels = labels
		rest = rest[n:]
	}
	fields := strings.Fields(rest)
	if len(fields) < 1 || len(fields) > 2 {
		return s, fmt.Errorf("%s: want a value (and a timestamp), got %.40q", s.Name, rest)
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, fmt.Errorf("%s: value %.40q: not a number", s.Name, fields[0])
	}
	s.Value = v
	return s, nil
}

func isMetricNameByte(c byte, first bool) bool {
	return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || !first && '0' <= c && c <= '9'
}

// parseLabels reads `{a="x",b="y\"z"}` at the start of s and returns the labels and the
// bytes it used.
func parseLabels(s string) (map[string]string, int, error) {
	labels := map[string]string{}
	i := 1 // past '{'
	for {
		for i < len(s) && (s[i] == ' ' || s[i] == ',') {
			i++
		}
		if i < len(s) && s[i] == '}' {
			return labels, i + 1, nil
		}
		j := i
		for j < len(s) && isMetricNameByte(s[j], j == i) && s[j] != ':' {
			j++
		}
		if j == i || j+1 >= len(s) || s[j] != '=' || s[j+1] != '"' {
			return nil, 0, fmt.Errorf("bad label at %.40q", s[i:])
		}
		name := s[i:j]
		var v strings.Builder
		k := j + 2
		for ; k < len(s) && s[k] != '"'; k++ {
			if s[k] == '\\' && k+1 < len(s) {
				k++
				switch s[k] {
				case 'n':
					v.WriteByte('\n')
				default: // \\ and \"
					v.WriteByte(s[k])
				}
				continue
			}
			v.WriteByte(s[k])
		}
		if k >= len(s) {
			return nil, 0, fmt.Errorf("label %s: unterminated value", name)
		}
		labels[name] = v.String()
		i = k + 1
	}
}

// Sum adds the values of every sample named name whose labels include match (nil: all).
func (m metricSet) Sum(name string, match map[string]string) float64 {
	total := 0.0
	for _, s := range m {
		if s.Name != name || !labelsMatch(s.Labels, match) {
			continue
		}
		if !math.IsNaN(s.Value) {
			total += s.Value
		}
	}
	return total
}

// Has reports whether a sample named name is there.
func (m metricSet) Has(name string) bool {
	for _, s := range m {
		if s.Name == name {
			return true
		}
	}
	return false
}

// By adds the values of the samples named name by the value of label key.
func (m metricSet) By(name, key string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range m {
		if s.Name == name && !math.IsNaN(s.Value) {
			out[s.Labels[key]] += s.Value
		}
	}
	return out
}

// Find returns the labels of the first sample named name.
func (m metricSet) Find(name string) (map[string]string, bool) {
	for _, s := range m {
		if s.Name == name {
			return s.Labels, true
		}
	}
	return nil, false
}

func labelsMatch(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
