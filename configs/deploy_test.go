package configs_test

// Tests of the deployment files next to the config: the Grafana dashboard
// (grafana-dashboard.json) and the Prometheus alerting rules (prometheus-alerts.yaml). They
// check the files' shape, and that every metric they name is one a running Spillway exports.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	"github.com/spillway/spillway/proxy/runtime"
)

const (
	dashboardFile = "grafana-dashboard.json"
	alertsFile    = "prometheus-alerts.yaml"
)

// grafanaDS is a panel's or a target's datasource reference.
type grafanaDS struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// grafanaPanel is the part of a Grafana panel the tests look at.
type grafanaPanel struct {
	ID          int        `json:"id"`
	Type        string     `json:"type"`
	Title       string     `json:"title"`
	Description string     `json:"description"`
	Datasource  *grafanaDS `json:"datasource"`
	GridPos     struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string     `json:"refId"`
		Expr       string     `json:"expr"`
		Datasource *grafanaDS `json:"datasource"`
	} `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Thresholds *struct {
				Steps []struct {
					Value *float64 `json:"value"`
				} `json:"steps"`
			} `json:"thresholds"`
		} `json:"defaults"`
		Overrides []struct {
			Matcher struct {
				ID      string `json:"id"`
				Options string `json:"options"`
			} `json:"matcher"`
			Properties []struct {
				ID    string          `json:"id"`
				Value json.RawMessage `json:"value"`
			} `json:"properties"`
		} `json:"overrides"`
	} `json:"fieldConfig"`
	Panels []grafanaPanel `json:"panels"` // a row's panels, when collapsed
}

// grafanaDashboard is the part of a Grafana dashboard the tests look at.
type grafanaDashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
			Multi      bool            `json:"multi"`
			IncludeAll bool            `json:"includeAll"`
			Datasource *grafanaDS      `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []grafanaPanel `json:"panels"`
}

// ruleFile is a Prometheus rule file.
type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// loadDashboard reads and decodes the dashboard, and returns it with its panels flattened
// (a row's panels included; rows themselves left out).
func loadDashboard(t *testing.T) (*grafanaDashboard, []grafanaPanel) {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(data) {
		t.Fatalf("%s is not valid JSON", dashboardFile)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var flat []grafanaPanel
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			flat = append(flat, p)
		}
	}
	walk(d.Panels)
	if len(flat) == 0 {
		t.Fatalf("%s has no panels", dashboardFile)
	}
	return &d, flat
}

// loadRules reads and decodes the alerting rules, refusing unknown keys.
func loadRules(t *testing.T) *ruleFile {
	t.Helper()
	data, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var rf ruleFile
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	if len(rf.Groups) == 0 {
		t.Fatalf("%s has no groups", alertsFile)
	}
	return &rf
}

// exprs returns every PromQL expression of both files, each with where it stands.
func exprs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	_, panels := loadDashboard(t)
	for _, p := range panels {
		for _, tg := range p.Targets {
			out[fmt.Sprintf("%s: panel %q target %s", dashboardFile, p.Title, tg.RefID)] = tg.Expr
		}
	}
	for _, g := range loadRules(t).Groups {
		for i, r := range g.Rules {
			out[fmt.Sprintf("%s: group %q rule %d (%s)", alertsFile, g.Name, i, r.Alert+r.Record)] = r.Expr
		}
	}
	return out
}

func TestGrafanaDashboard(t *testing.T) {
	d, panels := loadDashboard(t)
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard title %q, uid %q; want both", d.Title, d.UID)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d; want a current one (>= 36)", d.SchemaVersion)
	}

	vars := map[string]int{}
	for i, v := range d.Templating.List {
		vars[v.Name] = i
	}
	if i, ok := vars["datasource"]; !ok {
		t.Errorf("no datasource variable")
	} else if v := d.Templating.List[i]; v.Type != "datasource" || string(v.Query) != `"prometheus"` {
		t.Errorf("datasource variable: type %q query %s; want a datasource variable of Prometheus sources", v.Type, v.Query)
	}
	if i, ok := vars["site"]; !ok {
		t.Errorf("no site variable")
	} else {
		v := d.Templating.List[i]
		const def = "label_values(spillway_site_weight, site)"
		if v.Type != "query" || !strings.Contains(string(v.Query), def) || !v.Multi || !v.IncludeAll {
			t.Errorf("site variable: type %q query %s multi %v all %v; want a multi-value query variable %s with All",
				v.Type, v.Query, v.Multi, v.IncludeAll, def)
		}
		if v.Datasource == nil || v.Datasource.UID != "${datasource}" {
			t.Errorf("site variable datasource %+v; want the datasource variable", v.Datasource)
		}
	}

	ids := map[int]string{}
	for _, p := range panels {
		if p.Title == "" {
			t.Errorf("panel %d (%s) has no title", p.ID, p.Type)
		}
		if p.Description == "" {
			t.Errorf("panel %q has no description", p.Title)
		}
		if prev, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("panel %q has id %d, not unique (also %q)", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q datasource %+v; want {prometheus ${datasource}}", p.Title, p.Datasource)
		}
		if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q gridPos %+v outside the 24-column grid", p.Title, g)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no target", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %q has an empty expr", p.Title, tg.RefID)
			}
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q target refId %q empty or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && tg.Datasource.UID != p.Datasource.UID {
				t.Errorf("panel %q target %q datasource %+v differs from the panel's", p.Title, tg.RefID, tg.Datasource)
			}
		}
	}

	// The panels the on-call needs, found by what they query.
	find := func(what string, match func(p grafanaPanel, expr string) bool) *grafanaPanel {
		t.Helper()
		for i, p := range panels {
			for _, tg := range p.Targets {
				if match(p, tg.Expr) {
					return &panels[i]
				}
			}
		}
		t.Errorf("no panel shows %s", what)
		return nil
	}
	has := func(sub ...string) func(grafanaPanel, string) bool {
		return func(_ grafanaPanel, expr string) bool {
			for _, s := range sub {
				if !strings.Contains(expr, s) {
					return false
				}
			}
			return true
		}
	}
	if p := find("live share", has("spillway_site_share")); p != nil {
		target := false
		for _, tg := range p.Targets {
			// The target counts only sites with a backend up: during a site's outage its
			// share goes to the others by weight, and they must not look off target.
			target = target || strings.Contains(tg.Expr, "spillway_site_weight") && strings.Contains(tg.Expr, "sum(spillway_site_weight") &&
				strings.Contains(tg.Expr, "spillway_backend_up) > 0")
		}
		if !target {
			t.Errorf("panel %q: no target share (weight / sum of the weights of sites with a backend up) next to the live share", p.Title)
		}
		dashed := false
		for _, o := range p.FieldConfig.Overrides {
			for _, prop := range o.Properties {
				dashed = dashed || prop.ID == "custom.lineStyle" && strings.Contains(string(prop.Value), "dash")
			}
		}
		if !dashed {
			t.Errorf("panel %q: the target share is not drawn dashed (a custom.lineStyle override)", p.Title)
		}
	}
	find("request rate by site", has("rate(spillway_requests_total", "by (site)"))
	find("request rate by status class", has("rate(spillway_requests_total", `"code"`, "label_replace"))
	for _, q := range []string{"0.5", "0.9", "0.99"} {
		find("latency p"+strings.TrimPrefix(q, "0."), has("histogram_quantile("+q+",", "rate(spillway_request_duration_seconds_bucket", "[1m]", "le"))
	}
	if p := find("saturation", has("spillway_inflight", "/", "spillway_site_limit")); p != nil {
		var steps []float64
		if th := p.FieldConfig.Defaults.Thresholds; th != nil {
			for _, s := range th.Steps {
				if s.Value != nil {
					steps = append(steps, *s.Value)
				}
			}
		}
		if !slices.Contains(steps, 0.8) || !slices.Contains(steps, 1) {
			t.Errorf("panel %q thresholds %v; want steps at 0.8 and 1", p.Title, steps)
		}
	}
	find("spillover by from, to and reason", has("rate(spillway_spillover_total", "from", "to", "reason"))
	find("shed by reason", has("rate(spillway_shed_total", "reason"))
	find("queue waiting", has("spillway_queue_waiting"))
	backendHealth := func(p grafanaPanel, expr string) bool {
		return strings.Contains(expr, "spillway_backend_up") && !strings.Contains(expr, "spillway_site_weight")
	}
	if p := find("backend health", backendHealth); p != nil && p.Type != "state-timeline" && p.Type != "table" {
		t.Errorf("backend health panel %q is a %s; want a state timeline or a table", p.Title, p.Type)
	}
	find("retries by reason", has("rate(spillway_retries_total", "reason"))
	find("config reloads", has("increase(spillway_config_reloads_total", "result"))
}

// durationRE is a Prometheus duration as rules use them.
var durationRE = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)

func TestPrometheusAlerts(t *testing.T) {
	rf := loadRules(t)
	severities := map[string]bool{"critical": true, "warning": true, "info": true}
	// An alert that fires at once: a refused reload is worth knowing immediately.
	noFor := map[string]bool{"SpillwayReloadFailed": true}
	seen := map[string]bool{}
	alerts := map[string]bool{}
	groups := map[string]bool{}
	for _, g := range rf.Groups {
		if g.Name == "" || groups[g.Name] {
			t.Errorf("group name %q empty or repeated", g.Name)
		}
		groups[g.Name] = true
		if len(g.Rules) == 0 {
			t.Errorf("group %q has no rules", g.Name)
		}
		for i, r := range g.Rules {
			where := fmt.Sprintf("group %q rule %d (%s)", g.Name, i, r.Alert)
			if r.Alert == "" {
				t.Errorf("%s: no alert name (this file holds alerts only)", where)
				continue
			}
			if r.Record != "" {
				t.Errorf("%s: both alert and record", where)
			}
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("%s: empty expr", where)
			}
			switch {
			case r.For == "" && !noFor[r.Alert]:
				t.Errorf("%s: no for: a blip would page", where)
			case r.For != "" && !durationRE.MatchString(r.For):
				t.Errorf("%s: for %q is not a duration", where, r.For)
			}
			sev := r.Labels["severity"]
			if !severities[sev] {
				t.Errorf("%s: severity %q; want critical, warning or info", where, sev)
			}
			if key := r.Alert + "/" + sev; seen[key] {
				t.Errorf("%s: a second rule with the same alert name and severity", where)
			} else {
				seen[key] = true
			}
			alerts[r.Alert] = true
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", where, a)
				}
			}
			// Runbook-style: say where to look.
			if d := r.Annotations["description"]; !strings.Contains(d, "/api/v1/state") || !strings.Contains(strings.ToLower(d), "dashboard") {
				t.Errorf("%s: the description does not point at GET /api/v1/state and the dashboard", where)
			}
			for _, a := range []string{r.Annotations["summary"], r.Annotations["description"]} {
				if !templatesClosed(a) {
					t.Errorf("%s: an annotation has a {{ without its }} (or the reverse)\n%s", where, a)
				}
			}
		}
	}
	for _, name := range []string{"SpillwaySiteDown", "SpillwayBackendDown", "SpillwaySustainedSpill", "SpillwayShedding",
		"SpillwayReloadFailed", "SpillwaySaturated", "SpillwayShareOffTarget"} {
		if !alerts[name] {
			t.Errorf("no alert %s", name)
		}
	}
	if !seen["SpillwayShedding/critical"] {
		t.Errorf("no critical SpillwayShedding (queue_full)")
	}
	if !seen["SpillwaySiteDown/critical"] {
		t.Errorf("SpillwaySiteDown is not critical")
	}
}

// TestExprSyntax checks every expression cheaply: balanced brackets outside strings, and no
// Grafana variable left in an alert (Prometheus would not expand it). (The full PromQL
// parser lives in github.com/prometheus/prometheus, which this module does not depend on.)
func TestExprSyntax(t *testing.T) {
	for where, e := range exprs(t) {
		if err := balanced(e); err != nil {
			t.Errorf("%s: %v\n%s", where, err, e)
		}
		if strings.HasPrefix(where, alertsFile) && strings.Contains(e, "$") {
			t.Errorf("%s: a template variable in an alert expression\n%s", where, e)
		}
	}
	// The checker itself.
	for _, bad := range []string{"sum(rate(x[5m])", "x{a=\"b\"", "rate(x[5m)]", ")(", `x{a="(("}}`} {
		if balanced(bad) == nil {
			t.Errorf("balanced(%q) = nil; want an error", bad)
		}
	}
	if err := balanced(`sum by (a) (rate(x{a=~"(b|c)[", b='}'}[5m]))`); err != nil {
		t.Errorf("balanced: %v", err)
	}
	for s, want := range map[string]bool{"": true, "a {{ $labels.site }} b {{ $value }}": true, "{{ x": false, "x }}": false,
		"{{ a {{ b }}": false, "}} {{": false} {
		if got := templatesClosed(s); got != want {
			t.Errorf("templatesClosed(%q) = %v, want %v", s, got, want)
		}
	}
}

// templatesClosed reports whether every {{ of a Go template is closed by a }} before the
// next {{, and no }} stands alone.
func templatesClosed(s string) bool {
	for {
		open, end := strings.Index(s, "{{"), strings.Index(s, "}}")
		switch {
		case open < 0 && end < 0:
			return true
		case open < 0 || end < open:
			return false
		}
		s = s[open+2:]
		if next, end := strings.Index(s, "{{"), strings.Index(s, "}}"); end < 0 || next >= 0 && next < end {
			return false
		}
		s = s[strings.Index(s, "}}")+2:]
	}
}

// balanced reports whether the brackets of a PromQL expression pair up, skipping string
// literals ("...", '...', `...`) and # comments.
func balanced(e string) error {
	var stack []rune
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	rs := []rune(e)
	for i := 0; i < len(rs); i++ {
		switch c := rs[i]; c {
		case '"', '\'', '`':
			j := i + 1
			for ; j < len(rs) && rs[j] != c; j++ {
				if rs[j] == '\\' && c != '`' {
					j++
				}
			}
			if j >= len(rs) {
				return fmt.Errorf("unterminated string at %d", i)
			}
			i = j
		case '#':
			for i < len(rs) && rs[i] != '\n' {
				i++
			}
		case '(', '[', '{':
			stack = append(stack, c)
		case ')', ']', '}':
			if len(stack) == 0 || stack[len(stack)-1] != pairs[c] {
				return fmt.Errorf("unexpected %q at %d", c, i)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if len(stack) > 0 {
		return fmt.Errorf("%d unclosed bracket(s), last %q", len(stack), stack[len(stack)-1])
	}
	return nil
}

// metricRE finds Spillway metric names in an expression.
var metricRE = regexp.MustCompile(`spillway_[a-z_]+`)

// TestMetricNamesExported checks that the dashboard and the alerts name only metrics a
// running Spillway exports, and that they cover what the on-call needs.
func TestMetricNamesExported(t *testing.T) {
	exported := exportedMetrics(t)
	used := map[string]bool{}
	for where, e := range exprs(t) {
		names := metricRE.FindAllString(e, -1)
		if len(names) == 0 {
			t.Errorf("%s names no spillway_ metric\n%s", where, e)
		}
		for _, n := range names {
			used[n] = true
			if !exported[n] {
				t.Errorf("%s uses %s, which Spillway does not export", where, n)
			}
		}
	}
	// Every metric that matters on call, in each file.
	for _, file := range []string{dashboardFile, alertsFile} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"spillway_site_share", "spillway_site_weight", "spillway_inflight", "spillway_site_limit",
			"spillway_spillover_total", "spillway_shed_total", "spillway_config_reloads_total", "spillway_backend_up"} {
			if !bytes.Contains(data, []byte(n)) {
				t.Errorf("%s never names %s", file, n)
			}
		}
	}
	// The dashboard shows every Spillway metric.
	_, panels := loadDashboard(t)
	inDash := map[string]bool{}
	for _, p := range panels {
		for _, tg := range p.Targets {
			for _, n := range metricRE.FindAllString(tg.Expr, -1) {
				inDash[strings.TrimSuffix(n, "_bucket")] = true
			}
		}
	}
	for n := range exported {
		if strings.HasPrefix(n, "spillway_") && !strings.HasSuffix(n, "_bucket") && !strings.HasSuffix(n, "_sum") &&
			!strings.HasSuffix(n, "_count") && !inDash[n] {
			t.Errorf("the dashboard does not show %s", n)
		}
	}
}

// exportedMetrics runs a Reloader on two sites of test backends, drives requests through it
// until it has retried, spilled and shed, and returns the names of the metric families its
// registry gathers (a histogram's _bucket, _sum and _count series included).
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	// hits tells which site's backend holds a request; release lets them all go.
	hits := make(chan string, 64)
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	backend := func(site string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			if r.Header.Get("X-Test-Block") == site {
				hits <- site
				<-release
			}
			if r.Header.Get("X-Test-Fail") == site {
				// A 502 from the backend itself: an idempotent request is retried elsewhere.
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			io.WriteString(w, "ok "+site)
		}))
	}
	a, b := backend("a"), backend("b")
	defer a.Close()
	defer b.Close()

	// One backend per site, one request at a time each: easy to fill. A queue of one slot
	// that gives up fast. No ejections, so the failing tries leave the backends up.
	dir := t.TempDir()
	path := filepath.Join(dir, "spillway.yaml")
	// A burst-only pool found by a targets file that does not exist: its discovery fails
	// (and is counted) without taking any traffic.
	targets := filepath.Join(dir, "missing-targets.txt")
	cfg := fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: a, weight: 1, backends: [%q], max_inflight: 1}
  - {name: b, weight: 1, backends: [%q], max_inflight: 1}
  - {name: pool, weight: 0, elastic: true, discovery: {file: %q, interval: 1h}}
spillover: {queue: {size: 1, timeout: 1s}}
outlier: {consecutive_failures: 0}
`, a.URL, b.URL, targets)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	r := runtime.NewReloader(runtime.ReloaderOptions{Path: path, Metrics: reg})
	if err := r.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	defer func() { cancel(); r.Close() }()
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	client := srv.Client()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer unblock()

	get := func(header, site string) (int, error) {
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
		if err != nil {
			return 0, err
		}
		if header != "" {
			req.Header.Set(header, site)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	// async sends a request in the background; its status comes on the channel.
	async := func(header, site string) <-chan int {
		done := make(chan int, 1)
		wg.Go(func() {
			code, err := get(header, site)
			if err != nil {
				t.Errorf("GET through the proxy: %v", err)
			}
			done <- code
		})
		return done
	}
	gather := func() []*dto.MetricFamily {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatalf("Gather: %v", err)
		}
		return mfs
	}
	gauge := func(name string) float64 {
		for _, mf := range gather() {
			if mf.GetName() == name && len(mf.GetMetric()) == 1 {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}

	// Plain traffic, and a retry: site b's backend answers 502, the proxy tries again.
	for range 4 {
		if code, err := get("", ""); err != nil || code != http.StatusOK {
			t.Fatalf("GET: %d, %v; want 200", code, err)
		}
	}
	for i := 0; len(r.Handler().Retries()) == 0; i++ {
		if i == 20 {
			t.Fatal("20 requests failing on site b and none retried")
		}
		if code, err := get("X-Test-Fail", "b"); err != nil || code != http.StatusOK {
			t.Fatalf("GET failing on b: %d, %v; want 200 after a retry", code, err)
		}
	}

	// holdSite sends requests that block on site's backend until one is held there.
	holdSite := func(site string) {
		t.Helper()
		for range 10 {
			done := async("X-Test-Block", site)
			select {
			case s := <-hits:
				if s != site {
					t.Fatalf("held on %s, want %s", s, site)
				}
				return
			case <-done: // the split sent it to the other site, which answered at once
			case <-time.After(10 * time.Second):
				t.Fatalf("a request for %s neither held nor answered", site)
			}
		}
		t.Fatalf("10 requests and none held on site %s", site)
	}

	// A spill: site a is full, so what the split gives it goes to b.
	holdSite("a")
	for range 4 {
		if code, err := get("", ""); err != nil || code != http.StatusOK {
			t.Fatalf("GET while a is full: %d, %v; want 200", code, err)
		}
	}

	// Sheds: both sites full; one request waits in the queue (and times out), the next
	// finds the queue full.
	holdSite("b")
	for i := 0; ; i++ {
		if i == 5 {
			t.Fatal("no request seen waiting in the queue")
		}
		waiter := async("", "")
		deadline := time.Now().Add(5 * time.Second)
		for gauge("spillway_queue_waiting") < 1 && len(waiter) == 0 && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		if gauge("spillway_queue_waiting") >= 1 {
			if code, err := get("", ""); err != nil || code != http.StatusServiceUnavailable {
				t.Fatalf("GET with the queue full: %d, %v; want 503", code, err)
			}
			if code := <-waiter; code != http.StatusServiceUnavailable {
				t.Fatalf("queued GET: %d; want 503 after the queue timeout", code)
			}
			break
		}
		<-waiter
	}
	unblock()
	wg.Wait()

	names := map[string]bool{}
	byName := map[string]*dto.MetricFamily{}
	for _, mf := range gather() {
		n := mf.GetName()
		byName[n] = mf
		names[n] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			names[n+"_bucket"], names[n+"_sum"], names[n+"_count"] = true, true, true
		}
	}
	// What the traffic above must have produced.
	for _, c := range []struct{ family, label, value string }{
		{"spillway_retries_total", "reason", "upstream_502"},
		{"spillway_spillover_total", "reason", "saturated"},
		{"spillway_shed_total", "reason", "queue_full"},
		{"spillway_shed_total", "reason", "queue_timeout"},
		{"spillway_config_reloads_total", "result", "failure"},
		{"spillway_backend_up", "backend", a.URL},
	} {
		found := false
		if mf := byName[c.family]; mf != nil {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == c.label && l.GetValue() == c.value
				}
			}
		}
		if !found {
			t.Errorf("gathered no %s{%s=%q}", c.family, c.label, c.value)
		}
	}
	if len(names) < 12 {
		t.Errorf("gathered only %v", names)
	}
	for _, n := range fleetMetrics(t) { // cluster_test.go
		names[n] = true
	}
	return names
}
