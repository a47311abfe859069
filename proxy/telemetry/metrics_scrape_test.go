package telemetry_test

// Tests of the metrics (issue 5): on an injected registry, scraped through promhttp after
// real traffic, every metric of DESIGN.md exists with the values the traffic implies, and
// no metric has a path label.

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spillway/spillway/proxy/proxytest"
	"github.com/spillway/spillway/proxy/runtime"
)

// promSample is one line of the text exposition.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

var (
	promLine  = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
	promLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// scrape reads reg as Prometheus does, through promhttp on a real socket.
func scrape(t *testing.T, reg *prometheus.Registry) []promSample {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape: %s: %s", resp.Status, body)
	}
	var out []promSample
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := promLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("scrape: unparsable line %q", line)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("scrape: value of %q: %v", line, err)
		}
		s := promSample{name: m[1], labels: map[string]string{}, value: v}
		for _, l := range promLabel.FindAllStringSubmatch(m[2], -1) {
			s.labels[l[1]] = l[2]
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scrape: %v", err)
	}
	return out
}

// metric returns the value of the sample called name with exactly these labels (pairs).
func metric(samples []promSample, name string, labels ...string) (float64, bool) {
	for _, s := range samples {
		if s.name != name || len(s.labels) != len(labels)/2 {
			continue
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			match = match && s.labels[labels[i]] == labels[i+1]
		}
		if match {
			return s.value, true
		}
	}
	return 0, false
}

// wantMetric checks that the sample exists with value want.
func wantMetric(t *testing.T, samples []promSample, want float64, name string, labels ...string) {
	t.Helper()
	got, ok := metric(samples, name, labels...)
	switch {
	case !ok:
		t.Errorf("no sample %s%v", name, labels)
	case got != want:
		t.Errorf("%s%v = %g, want %g", name, labels, got, want)
	}
}

// sumOf adds up the samples called name.
func sumOf(samples []promSample, name string) float64 {
	var n float64
	for _, s := range samples {
		if s.name == name {
			n += s.value
		}
	}
	return n
}

// labelSets are the label names each spillway_ family may have (histogram series carry le).
var labelSets = map[string][]string{
	"spillway_requests_total":                  {"site", "code"},
	"spillway_request_duration_seconds_bucket": {"site", "le"},
	"spillway_request_duration_seconds_sum":    {"site"},
	"spillway_request_duration_seconds_count":  {"site"},
	"spillway_inflight":                        {"site"},
	"spillway_site_limit":                      {"site"},
	"spillway_site_weight":                     {"site"},
	"spillway_site_share":                      {"site"},
	"spillway_spillover_total":                 {"from", "to", "reason"},
	"spillway_shed_total":                      {"reason"},
	"spillway_retries_total":                   {"reason"},
	"spillway_backend_up":                      {"site", "backend"},
	"spillway_config_reloads_total":            {"result"},
	"spillway_queue_waiting":                   {},
}

// checkLabels checks that every spillway_ sample has the labels of its family, none other
// (in particular no path), and that every family of labelSets appeared but those of absent
// (a labelled counter appears with its first count).
func checkLabels(t *testing.T, samples []promSample, absent ...string) {
	t.Helper()
	seen := map[string]bool{}
	for _, s := range samples {
		if !strings.HasPrefix(s.name, "spillway_") {
			continue
		}
		want, ok := labelSets[s.name]
		if !ok {
			t.Errorf("unexpected metric %s%v", s.name, s.labels)
			continue
		}
		seen[s.name] = true
		var got []string
		for l := range s.labels {
			got = append(got, l)
		}
		slices.Sort(got)
		want = slices.Sorted(slices.Values(want))
		if !slices.Equal(got, want) {
			t.Errorf("%s has labels %v, want %v", s.name, got, want)
		}
	}
	for name := range labelSets {
		if !seen[name] && !slices.Contains(absent, name) {
			t.Errorf("no %s in the scrape", name)
		}
	}
}

// After traffic that fills a site, spills, sheds and holds requests in flight, every metric
// of DESIGN.md is on the injected registry with the values that traffic implies.
func TestMetricsAfterTraffic(t *testing.T) {
	idc1 := proxytest.NewCapBackend(t, "idc1", true)
	aws := proxytest.NewCapBackend(t, "aws", true)
	down := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	var offset atomic.Int64 // the clock runs ahead by this, to read the live share at once
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	reg := prometheus.NewRegistry()
	config := fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 1, backends: [%q], max_inflight: 1}
  - {name: aws, weight: 0, backends: [%q], max_inflight: 1, elastic: true}
  - name: idc2
    weight: 3
    backends: [%q]
    max_inflight: 5
    health: {path: /healthz, interval: 20ms, timeout: 20ms, fall: 1, rise: 1}
spillover: {queue: {size: 0, timeout: 1s}}
retries: {attempts: 1}
`, idc1.URL, aws.URL, down.URL)
	e := proxytest.StartReloader(t, config, runtime.ReloaderOptions{Now: now, Metrics: reg})
	proxytest.WaitFor(t, "idc2's backend to go down", func() bool { return !e.Site(t, "idc2").Backends[0].Up })

	answers := make(chan string, 3)
	get := func(path string) {
		go func() {
			status, body, err := e.Send(http.MethodGet, path, nil)
			answers <- fmt.Sprintf("%d %s %v", status, body, err)
		}()
	}
	get("/accounts/1")
	proxytest.Receive(t, idc1.Arrived, "the first request at idc1")
	get("/accounts/2")
	proxytest.Receive(t, aws.Arrived, "the second request to spill to aws")
	status, _, err := e.Send(http.MethodGet, "/accounts/3", nil)
	if err != nil || status != http.StatusServiceUnavailable {
		t.Fatalf("third request: %d %v, want 503 (no slot, no queue)", status, err)
	}

	s := scrape(t, reg)
	wantMetric(t, s, 1, "spillway_inflight", "site", "idc1")
	wantMetric(t, s, 1, "spillway_inflight", "site", "aws")
	wantMetric(t, s, 0, "spillway_inflight", "site", "idc2")
	wantMetric(t, s, 1, "spillway_site_limit", "site", "idc1")
	wantMetric(t, s, 1, "spillway_site_limit", "site", "aws")
	wantMetric(t, s, 0, "spillway_site_limit", "site", "idc2") // its only backend is down
	wantMetric(t, s, 1, "spillway_site_weight", "site", "idc1")
	wantMetric(t, s, 0, "spillway_site_weight", "site", "aws")
	wantMetric(t, s, 3, "spillway_site_weight", "site", "idc2")
	wantMetric(t, s, 1, "spillway_spillover_total", "from", "idc1", "to", "aws", "reason", "saturated")
	wantMetric(t, s, 1, "spillway_shed_total", "reason", "queue_full")
	wantMetric(t, s, 1, "spillway_requests_total", "site", "none", "code", "503")
	wantMetric(t, s, 1, "spillway_backend_up", "site", "idc1", "backend", idc1.URL)
	wantMetric(t, s, 1, "spillway_backend_up", "site", "aws", "backend", aws.URL)
	wantMetric(t, s, 0, "spillway_backend_up", "site", "idc2", "backend", down.URL)
	wantMetric(t, s, 0, "spillway_queue_waiting")

	idc1.Release <- struct{}{}
	aws.Release <- struct{}{}
	for range 2 {
		if got := proxytest.Receive(t, answers, "a held request's answer"); !strings.HasPrefix(got, "200 ") {
			t.Errorf("held request answered %q, want 200", got)
		}
	}
	proxytest.WaitFor(t, "both requests counted", func() bool {
		return sumOf(scrape(t, reg), "spillway_requests_total") == 3
	})
	if err := e.R.Reload("test", true); err != nil {
		t.Fatal(err)
	}
	e.Write(t, "sites: [")
	if err := e.R.Reload("test", false); err == nil {
		t.Fatal("a broken file reloaded")
	}
	offset.Store(int64(2 * time.Second)) // the answers' second is now a full second of the past

	s = scrape(t, reg)
	checkLabels(t, s, "spillway_retries_total") // none yet
	wantMetric(t, s, 1, "spillway_requests_total", "site", "idc1", "code", "200")
	wantMetric(t, s, 1, "spillway_requests_total", "site", "aws", "code", "200")
	wantMetric(t, s, 1, "spillway_request_duration_seconds_count", "site", "idc1")
	wantMetric(t, s, 1, "spillway_request_duration_seconds_count", "site", "aws")
	wantMetric(t, s, 1, "spillway_request_duration_seconds_count", "site", "none")
	if d, _ := metric(s, "spillway_request_duration_seconds_sum", "site", "idc1"); d <= 0 || d > proxytest.Liveness.Seconds() {
		t.Errorf("idc1 duration sum %gs, want between 0 and %v", d, proxytest.Liveness)
	}
	if inf, _ := metric(s, "spillway_request_duration_seconds_bucket", "site", "idc1", "le", "+Inf"); inf != 1 {
		t.Errorf("idc1 +Inf bucket %g, want 1", inf)
	}
	wantMetric(t, s, 0, "spillway_inflight", "site", "idc1")
	wantMetric(t, s, 0.5, "spillway_site_share", "site", "idc1")
	wantMetric(t, s, 0.5, "spillway_site_share", "site", "aws")
	wantMetric(t, s, 0, "spillway_site_share", "site", "idc2")
	wantMetric(t, s, 1, "spillway_config_reloads_total", "result", "success")
	wantMetric(t, s, 1, "spillway_config_reloads_total", "result", "failure")
	if n := sumOf(s, "spillway_retries_total"); n != 0 {
		t.Errorf("retries %g, want 0", n)
	}
}

// A request whose first try is refused is retried elsewhere and counted by reason.
func TestMetricsCountRetries(t *testing.T) {
	good := proxytest.NameBackend(t, "aws")
	reg := prometheus.NewRegistry()
	e := proxytest.StartReloader(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 1, backends: [%q]}
  - {name: aws, weight: 0, backends: [%q], elastic: true}
retries: {attempts: 2, min_per_second: 3}
`, proxytest.RefusedURL(t), good.URL), runtime.ReloaderOptions{Metrics: reg})
	for i := range 3 {
		if body := e.MustGet(t, fmt.Sprintf("/r/%d", i)); body != "aws" {
			t.Fatalf("answered by %q, want aws after a retry", body)
		}
	}
	proxytest.WaitFor(t, "three answers counted", func() bool {
		v, _ := metric(scrape(t, reg), "spillway_requests_total", "site", "aws", "code", "200")
		return v == 3
	})
	s := scrape(t, reg)
	checkLabels(t, s, "spillway_spillover_total", "spillway_shed_total")
	wantMetric(t, s, 3, "spillway_retries_total", "reason", "connect")
	if n := sumOf(s, "spillway_spillover_total"); n != 0 {
		t.Errorf("spillover %g for retries, want 0 (a retry is not a spill)", n)
	}
}
