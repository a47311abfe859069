package admin_test

// Tests of the admin API (issue 5) against a real runtime.Reloader: the state API, weights
// with ramps, drains, reloads, persist=true, explain, bearer-token auth and the audit log.
// Real sockets: backends, the proxy and the admin API each listen on 127.0.0.1.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/admin"
	"github.com/spillway/spillway/proxy/proxytest"
	"github.com/spillway/spillway/proxy/runtime"
	"github.com/spillway/spillway/proxy/telemetry"
)

const (
	opsToken = "ops-secret-0123456789"
	ciToken  = "ci-secret-9876543210"
)

// adminEnv is a Reloader serving a config, the proxy on it, and the admin API.
type adminEnv struct {
	r      *runtime.Reloader
	path   string // the config file
	proxy  string // http://host:port of the proxy
	api    string // http://host:port of the admin API
	client *http.Client
	audit  *observer.ObservedLogs
	reg    *prometheus.Registry
}

// startAdmin starts a Reloader on yaml (written to a file of mode 0640 in a temporary
// directory), the proxy and the admin API with the tokens ops and ci. Create backends
// before calling it, so that they close after the proxy.
func startAdmin(t *testing.T, yaml string, openReads bool) *adminEnv {
	t.Helper()
	e := &adminEnv{reg: prometheus.NewRegistry()}
	core, audit := observer.New(zapcore.InfoLevel)
	e.audit = audit
	recent := telemetry.NewRecent(64)
	rl := proxytest.StartReloader(t, yaml, runtime.ReloaderOptions{Audit: zap.New(core),
		Recorders: []proxy.Recorder{recent}, Metrics: e.reg})
	e.r, e.path, e.proxy = rl.R, rl.Path, rl.URL

	api := httptest.NewServer(admin.New(admin.Options{Control: e.r,
		Tokens:    admin.Tokens{"ops": opsToken, "ci": ciToken},
		OpenReads: openReads, Metrics: promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{}), Recent: recent}))
	t.Cleanup(api.Close)
	e.api = api.URL
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	e.client = &http.Client{Transport: tr, Timeout: proxytest.Liveness}
	return e
}

// call sends a request to the admin API with token (none if "") and returns the status,
// the headers and the body.
func (e *adminEnv) call(t *testing.T, method, path, token, body string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.api+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// must sends a request that must be answered 200 and decodes its JSON body into v.
func (e *adminEnv) must(t *testing.T, method, path, token, body string, v any) {
	t.Helper()
	status, _, got := e.call(t, method, path, token, body)
	if status != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, path, status, got)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(got), v); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, got, err)
		}
	}
}

// state reads GET /api/v1/state.
func (e *adminEnv) state(t *testing.T) runtime.State {
	t.Helper()
	var st runtime.State
	e.must(t, http.MethodGet, "/api/v1/state", opsToken, "", &st)
	return st
}

// site is the state of the site called name.
func (e *adminEnv) site(t *testing.T, name string) runtime.SiteState {
	t.Helper()
	for _, s := range e.state(t).Sites {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no site %q in the state", name)
	return runtime.SiteState{}
}

// get sends a GET through the proxy with extra headers (pairs) and returns the body.
func (e *adminEnv) get(t *testing.T, path string, headers ...string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.proxy+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return string(b)
}

// heldBackend answers name, holding requests to /hold until release gets a value; each held
// request is announced on arrived.
func heldBackend(t *testing.T, name string) (url string, arrived, release chan struct{}) {
	arrived, release = make(chan struct{}, 10), make(chan struct{}, 10)
	stop := make(chan struct{})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-stop:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, name)
	}))
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(stop) }) // runs before s.Close, which waits for handlers
	return s.URL, arrived, release
}

// config is a 5:3:2 config in block style, with comments, a blank line and a flow-style
// site, to show that persist=true keeps the layout.
func config(idc1, idc2, aws, extra string) string {
	return fmt.Sprintf(`# Spillway: the bank's channel traffic.
listen:
  http: "127.0.0.1:0"   # never bound by these tests

sites:
  - name: idc1      # first datacenter
    weight: 5       # half the traffic
    backends: [%q]
  - {name: idc2, weight: 3, backends: [%q]}   # flow style
  - name: aws
    weight:   2     # odd spacing stays
    elastic: true
    backends:
      - %q
retries: {attempts: 1}
%s`, idc1, idc2, aws, extra)
}

func threeBackends(t *testing.T) (string, string, string) {
	return proxytest.NameBackend(t, "idc1").URL, proxytest.NameBackend(t, "idc2").URL, proxytest.NameBackend(t, "aws").URL
}

// errorBody checks that body is JSON {"error": "..."} with a message.
func errorBody(t *testing.T, what, body string, h http.Header) {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Errorf("%s: body %q is not JSON: %v", what, body, err)
		return
	}
	if msg, _ := v["error"].(string); msg == "" {
		t.Errorf("%s: body %q has no error message", what, body)
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
}

// Changes need a valid bearer token (401 without one, 403 with a wrong one, JSON error
// bodies); reads are open with OpenReads and need a token without it.
func TestAdminAuth(t *testing.T) {
	a, b, c := threeBackends(t)
	for _, open := range []bool{true, false} {
		t.Run(fmt.Sprintf("OpenReads=%v", open), func(t *testing.T) {
			e := startAdmin(t, config(a, b, c, ""), open)
			readStatus := http.StatusOK
			if !open {
				readStatus = http.StatusUnauthorized
			}
			for _, tc := range []struct {
				method, path, token, body string
				want                      int
			}{
				{"GET", "/healthz", "", "", 200},
				{"GET", "/readyz", "", "", 200},
				{"GET", "/api/v1/state", "", "", readStatus},
				{"GET", "/metrics", "", "", readStatus},
				{"GET", "/api/v1/explain?request_id=x", "", "", map[bool]int{true: 404, false: 401}[open]},
				{"GET", "/api/v1/state", "wrong-token-0123456789", "", map[bool]int{true: 200, false: 403}[open]},
				{"GET", "/api/v1/state", ciToken, "", 200},
				{"GET", "/metrics", opsToken, "", 200},
				{"PUT", "/api/v1/sites/idc1/weight", "", `{"weight":7}`, 401},
				{"PUT", "/api/v1/sites/idc1/weight", "wrong-token-0123456789", `{"weight":7}`, 403},
				{"PUT", "/api/v1/sites/idc1/weight", opsToken[:10], `{"weight":7}`, 403},
				{"DELETE", "/api/v1/sites/idc1/weight", "", "", 401},
				{"POST", "/api/v1/sites/idc1/drain", "", "", 401},
				{"POST", "/api/v1/sites/idc1/drain", "nope-nope-nope-nope", "", 403},
				{"POST", "/api/v1/sites/idc1/undrain", "", "", 401},
				{"POST", "/api/v1/reload", "", "", 401},
				{"POST", "/api/v1/reload", "wrong-token-0123456789", "", 403},
				{"PUT", "/api/v1/sites/nope/weight", "", `{"weight":7}`, 401}, // auth before lookup
			} {
				status, h, body := e.call(t, tc.method, tc.path, tc.token, tc.body)
				what := fmt.Sprintf("%s %s token %q", tc.method, tc.path, tc.token)
				if status != tc.want {
					t.Errorf("%s: %d %s, want %d", what, status, body, tc.want)
					continue
				}
				if status == 401 || status == 403 {
					errorBody(t, what, body, h)
				}
				if status == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s: WWW-Authenticate %q, want a Bearer challenge", what, h.Get("WWW-Authenticate"))
				}
			}
			// Other ways of sending a token that is not a bearer token.
			for _, auth := range []string{"Basic b3BzOnNlY3JldA==", "Bearer", "Bearer ", opsToken, "Token " + opsToken} {
				req, _ := http.NewRequest(http.MethodPost, e.api+"/api/v1/sites/idc1/drain", nil)
				req.Header.Set("Authorization", auth)
				resp, err := e.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("Authorization %q: %d, want 401", auth, resp.StatusCode)
				}
			}
			// The scheme is case-insensitive.
			req, _ := http.NewRequest(http.MethodPut, e.api+"/api/v1/sites/idc1/weight", strings.NewReader(`{"weight":6}`))
			req.Header.Set("Authorization", "bearer "+opsToken)
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("lower-case bearer scheme: %d, want 200", resp.StatusCode)
			}
			// Only that change happened.
			st := e.state(t)
			if len(st.Changes) != 1 || st.Sites[0].Weight != 6 || st.Sites[0].Drained {
				t.Errorf("after refused changes and one accepted: changes %+v, idc1 %+v", st.Changes, st.Sites[0])
			}
		})
	}
}

// PUT and DELETE of a weight, as the state API and the audit log show them.
func TestAdminWeightStateAndAudit(t *testing.T) {
	a, b, c := threeBackends(t)
	e := startAdmin(t, config(a, b, c, ""), true)
	for range 10 {
		e.get(t, "/")
	}

	var site runtime.SiteState
	e.must(t, http.MethodPut, "/api/v1/sites/idc2/weight", opsToken, `{"weight":7}`, &site)
	if site.Name != "idc2" || site.Weight != 7 || site.ConfiguredWeight != 3 || site.Override == nil || site.Override.Weight != 7 {
		t.Errorf("PUT answered %+v, want idc2 at 7 (configured 3) with an override", site)
	}
	if !strings.HasPrefix(site.Override.By, "ops (127.0.0.1:") {
		t.Errorf("override by %q, want the token's identity and the caller's address", site.Override.By)
	}

	// The state API's raw JSON has every field the operators need.
	status, _, raw := e.call(t, http.MethodGet, "/api/v1/state", "", "")
	if status != http.StatusOK {
		t.Fatalf("GET state: %d", status)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"generation", "source", "loaded_at", "ready", "queue", "rates", "sites", "history", "changes", "reloads"} {
		if _, ok := m[k]; !ok {
			t.Errorf("state has no %q", k)
		}
	}
	if rates, _ := m["rates"].(map[string]any); rates == nil || rates["shed"] == nil {
		t.Errorf("state rates %v, want a shed rate", m["rates"])
	}
	sites, _ := m["sites"].([]any)
	if len(sites) != 3 {
		t.Fatalf("state has %d sites, want 3", len(sites))
	}
	for _, s := range sites {
		s := s.(map[string]any)
		for _, k := range []string{"name", "weight", "configured_weight", "override", "drained", "elastic", "target_share", "share", "limit", "inflight", "spilling", "rates", "backends"} {
			if _, ok := s[k]; !ok {
				t.Errorf("site %v has no %q", s["name"], k)
			}
		}
		rates, _ := s["rates"].(map[string]any)
		for _, k := range []string{"requests", "errors", "spilled_from", "spilled_to"} {
			if _, ok := rates[k]; !ok {
				t.Errorf("site %v rates have no %q", s["name"], k)
			}
		}
		bs, _ := s["backends"].([]any)
		if len(bs) != 1 {
			t.Errorf("site %v has %d backends, want 1", s["name"], len(bs))
			continue
		}
		for _, k := range []string{"addr", "up", "healthy", "ejected", "limit", "inflight", "latency_ms"} {
			if _, ok := bs[0].(map[string]any)[k]; !ok {
				t.Errorf("site %v's backend has no %q", s["name"], k)
			}
		}
		if bs[0].(map[string]any)["up"] != true {
			t.Errorf("site %v's backend is not up", s["name"])
		}
	}
	st := e.state(t)
	if st.Generation != 1 || st.Source != e.path || !st.Ready {
		t.Errorf("state generation %d source %q ready %v, want 1, %s, true", st.Generation, st.Source, st.Ready, e.path)
	}
	if got := st.Sites[1].TargetShare; got < 7.0/14-1e-9 || got > 7.0/14+1e-9 {
		t.Errorf("idc2 target share %g, want 7/14", got)
	}
	if st.Sites[0].Override != nil || st.Sites[2].Override != nil {
		t.Errorf("overrides on sites nobody changed: %+v %+v", st.Sites[0].Override, st.Sites[2].Override)
	}

	e.must(t, http.MethodDelete, "/api/v1/sites/idc2/weight", ciToken, "", &site)
	if site.Weight != 3 || site.Override != nil {
		t.Errorf("DELETE answered %+v, want idc2 back at 3 without override", site)
	}

	st = e.state(t)
	if len(st.Changes) != 2 {
		t.Fatalf("changes %+v, want 2", st.Changes)
	}
	if c := st.Changes[0]; c.Action != "clear_weight" || c.Site != "idc2" || !strings.HasPrefix(c.Who, "ci (127.0.0.1:") || c.Before != "7" || c.After != "3 (configured)" {
		t.Errorf("newest change %+v, want clear_weight of idc2 by ci from 7 to 3 (configured)", c)
	}
	if c := st.Changes[1]; c.Action != "weight" || c.Site != "idc2" || !strings.HasPrefix(c.Who, "ops (127.0.0.1:") || c.Before != "3" || c.After != "7" {
		t.Errorf("older change %+v, want weight of idc2 by ops from 3 to 7", c)
	}

	entries := e.audit.All()
	if len(entries) != 2 {
		t.Fatalf("%d audit entries, want 2: %v", len(entries), entries)
	}
	who := regexp.MustCompile(`^(ops|ci) \(127\.0\.0\.1:\d+\)$`)
	for i, want := range []map[string]string{
		{"action": "weight", "site": "idc2", "before": "3", "after": "7"},
		{"action": "clear_weight", "site": "idc2", "before": "7", "after": "3 (configured)"},
	} {
		f := entries[i].ContextMap()
		for k, v := range want {
			if f[k] != v {
				t.Errorf("audit entry %d: %s = %v, want %q", i, k, f[k], v)
			}
		}
		if s, _ := f["who"].(string); !who.MatchString(s) {
			t.Errorf("audit entry %d: who %q, want the token's name and the remote address", i, s)
		}
	}
}

// Bad bodies are 400, unknown sites 404, with JSON error bodies; nothing changes.
func TestAdminRefusesBadChanges(t *testing.T) {
	a, b, c := threeBackends(t)
	e := startAdmin(t, config(a, b, c, ""), true)
	for _, tc := range []struct {
		name, method, path, body string
		want                     int
	}{
		{"not JSON", "PUT", "/api/v1/sites/idc1/weight", `weight=7`, 400},
		{"empty body", "PUT", "/api/v1/sites/idc1/weight", ``, 400},
		{"no weight", "PUT", "/api/v1/sites/idc1/weight", `{"ramp":"10s"}`, 400},
		{"weight a string", "PUT", "/api/v1/sites/idc1/weight", `{"weight":"7"}`, 400},
		{"weight a fraction", "PUT", "/api/v1/sites/idc1/weight", `{"weight":7.5}`, 400},
		{"unknown field", "PUT", "/api/v1/sites/idc1/weight", `{"weight":7,"persist":true}`, 400},
		{"bad ramp", "PUT", "/api/v1/sites/idc1/weight", `{"weight":7,"ramp":"soon"}`, 400},
		{"negative ramp", "PUT", "/api/v1/sites/idc1/weight", `{"weight":7,"ramp":"-1s"}`, 400},
		{"ramp too long", "PUT", "/api/v1/sites/idc1/weight", `{"weight":7,"ramp":"2h"}`, 400},
		{"negative weight", "PUT", "/api/v1/sites/idc1/weight", `{"weight":-1}`, 400},
		{"weight too big", "PUT", "/api/v1/sites/idc1/weight", `{"weight":1001}`, 400},
		{"bad persist", "PUT", "/api/v1/sites/idc1/weight?persist=yes", `{"weight":7}`, 400},
		{"huge body", "PUT", "/api/v1/sites/idc1/weight", `{"weight":7,"ramp":"` + strings.Repeat("1", 70<<10) + `s"}`, 400},
		{"unknown site weight", "PUT", "/api/v1/sites/nope/weight", `{"weight":7}`, 404},
		{"unknown site clear", "DELETE", "/api/v1/sites/nope/weight", ``, 404},
		{"unknown site drain", "POST", "/api/v1/sites/nope/drain", ``, 404},
		{"unknown site undrain", "POST", "/api/v1/sites/nope/undrain", ``, 404},
		{"explain without id", "GET", "/api/v1/explain", ``, 400},
		{"explain unknown id", "GET", "/api/v1/explain?request_id=never-seen", ``, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := e.call(t, tc.method, tc.path, opsToken, tc.body)
			if status != tc.want {
				t.Fatalf("%d %s, want %d", status, body, tc.want)
			}
			errorBody(t, tc.name, body, h)
		})
	}
	// Every site at weight 0 is refused.
	e.must(t, http.MethodPut, "/api/v1/sites/idc2/weight", opsToken, `{"weight":0}`, nil)
	e.must(t, http.MethodPut, "/api/v1/sites/aws/weight", opsToken, `{"weight":0}`, nil)
	if status, h, body := e.call(t, http.MethodPut, "/api/v1/sites/idc1/weight", opsToken, `{"weight":0}`); status != 400 {
		t.Errorf("last weight to 0: %d %s, want 400", status, body)
	} else {
		errorBody(t, "last weight to 0", body, h)
	}
	st := e.state(t)
	applied, refused := 0, 0
	for _, c := range st.Changes {
		switch {
		case c.Result == "refused" && c.Reason != "" && strings.HasPrefix(c.Who, "ops ("):
			refused++
		case c.Result == "":
			applied++
		default:
			t.Errorf("entry %+v, want applied, or refused with its reason and who", c)
		}
	}
	// Every refused change (17 in the table, the last weight 0) is audited as a refused
	// attempt; the two reads are not changes.
	if applied != 2 || refused != 18 || st.Sites[0].Weight != 5 || st.Sites[0].Drained {
		t.Errorf("after refused changes: %d applied and %d refused entries, idc1 %+v; want 2 and 18, idc1 untouched", applied, refused, st.Sites[0])
	}
	// Draining the last site with a weight is allowed while an elastic site remains (aws, at
	// weight 0, takes everything then); once aws is drained too, it is refused.
	e.must(t, http.MethodPost, "/api/v1/sites/idc1/drain", opsToken, "", nil)
	if status, _, body := e.call(t, http.MethodPost, "/api/v1/sites/aws/drain", opsToken, ""); status != 400 {
		t.Errorf("draining the last site that could take traffic: %d %s, want 400", status, body)
	}
}

// A ramp moves the weight gradually: every value seen is between from and to, some are
// strictly between, and the target is reached.
func TestAdminWeightRamp(t *testing.T) {
	a, b, c := threeBackends(t)
	e := startAdmin(t, config(a, b, c, ""), true)
	var site runtime.SiteState
	e.must(t, http.MethodPut, "/api/v1/sites/idc1/weight", opsToken, `{"weight":10,"ramp":"1s"}`, &site)
	if site.Override == nil || site.Override.Weight != 10 || site.Override.Ramp != "1s" {
		t.Fatalf("override %+v, want 10 over 1s", site.Override)
	}
	if site.Weight < 5 || site.Weight >= 10 {
		t.Errorf("weight %g right after the PUT, want from 5 towards 10", site.Weight)
	}
	var seen []float64
	last := site.Weight
	proxytest.WaitFor(t, "the ramp to reach 10", func() bool {
		w := e.site(t, "idc1").Weight
		if w < 5 || w > 10 {
			t.Fatalf("weight %g during a ramp from 5 to 10", w)
		}
		if w < last {
			t.Fatalf("weight went back from %g to %g during a ramp up", last, w)
		}
		last = w
		if w > 5 && w < 10 {
			seen = append(seen, w)
		}
		return w == 10
	})
	if len(seen) == 0 {
		t.Error("no weight strictly between 5 and 10 seen during a 1s ramp")
	}
	if st := e.state(t); st.Sites[0].Override == nil || st.Sites[0].Override.Weight != 10 {
		t.Errorf("after the ramp: override %+v, want 10 until cleared", st.Sites[0].Override)
	}
}

// Drain: no new requests (sessions included, which move to another site), in-flight ones
// finish; undrain brings the site and its sessions back.
func TestAdminDrainAndUndrain(t *testing.T) {
	idc1, arrived, release := heldBackend(t, "idc1")
	idc2, aws := proxytest.NameBackend(t, "idc2").URL, proxytest.NameBackend(t, "aws").URL
	e := startAdmin(t, config(idc1, idc2, aws, "affinity: {header: X-Session-Id}\n"), true)

	// Sessions pinned to each site.
	sessions := map[string]string{}
	for i := 0; i < 200 && (sessions["idc1"] == "" || sessions["idc2"] == ""); i++ {
		key := fmt.Sprintf("session-%d", i)
		site := e.get(t, "/", "X-Session-Id", key)
		if sessions[site] == "" {
			sessions[site] = key
		}
	}
	if sessions["idc1"] == "" || sessions["idc2"] == "" {
		t.Fatalf("no session key maps to idc1 and idc2 among 200: %v", sessions)
	}

	held := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, e.proxy+"/hold", nil)
		req.Header.Set("X-Session-Id", sessions["idc1"])
		resp, err := e.client.Do(req)
		if err != nil {
			held <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		held <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	proxytest.Receive(t, arrived, "the held request at idc1")

	var site runtime.SiteState
	e.must(t, http.MethodPost, "/api/v1/sites/idc1/drain", opsToken, "", &site)
	if !site.Drained || site.Inflight != 1 || site.TargetShare != 0 {
		t.Errorf("drain answered %+v, want drained, 1 in flight, target share 0", site)
	}
	for i := range 20 {
		if got := e.get(t, fmt.Sprintf("/after-drain/%d", i)); got == "idc1" {
			t.Fatalf("request %d went to the drained idc1", i)
		}
	}
	moved := e.get(t, "/", "X-Session-Id", sessions["idc1"])
	if moved == "idc1" {
		t.Fatal("idc1's session still goes to the drained idc1")
	}
	for range 5 {
		if got := e.get(t, "/", "X-Session-Id", sessions["idc1"]); got != moved {
			t.Fatalf("idc1's session went to %s, then %s: not re-pinned to one site", moved, got)
		}
	}
	if got := e.get(t, "/", "X-Session-Id", sessions["idc2"]); got != "idc2" {
		t.Errorf("idc2's session went to %s after draining idc1, want idc2", got)
	}

	release <- struct{}{}
	if got := proxytest.Receive(t, held, "the held request's answer"); got != "200 idc1" {
		t.Errorf("the request in flight at the drain got %q, want 200 idc1", got)
	}
	proxytest.WaitFor(t, "idc1 in-flight 0", func() bool { return e.site(t, "idc1").Inflight == 0 })

	e.must(t, http.MethodPost, "/api/v1/sites/idc1/undrain", ciToken, "", &site)
	if site.Drained {
		t.Error("undrain answered a drained site")
	}
	if got := e.get(t, "/", "X-Session-Id", sessions["idc1"]); got != "idc1" {
		t.Errorf("idc1's session went to %s after undrain, want idc1", got)
	}
	ch := e.state(t).Changes
	if len(ch) != 2 || ch[0].Action != "undrain" || ch[0].Before != "drained" || ch[0].After != "serving" ||
		ch[1].Action != "drain" || ch[1].Before != "serving" || ch[1].After != "drained" {
		t.Errorf("changes %+v, want undrain (drained → serving) after drain (serving → drained)", ch)
	}
	if n := e.audit.FilterField(zap.String("action", "drain")).Len(); n != 1 {
		t.Errorf("%d drain audit entries, want 1", n)
	}
}

// POST /api/v1/reload reloads; a bad config is 422 with every problem at its file:line,
// the running config stays, and the failure is counted.
func TestAdminReload(t *testing.T) {
	a, b, c := threeBackends(t)
	e := startAdmin(t, config(a, b, c, ""), true)
	var got map[string]any
	e.must(t, http.MethodPost, "/api/v1/reload", opsToken, "", &got)
	if got["generation"] != 2.0 || got["source"] != e.path {
		t.Errorf("reload answered %v, want generation 2 and the file", got)
	}

	bad := strings.Replace(config(a, b, c, "timeouts: {conect: 1s}\n"), "weight: 5 ", "weight: -5", 1)
	if err := os.WriteFile(e.path, []byte(bad), 0o640); err != nil {
		t.Fatal(err)
	}
	status, h, body := e.call(t, http.MethodPost, "/api/v1/reload", opsToken, "")
	if status != http.StatusUnprocessableEntity {
		t.Fatalf("reload of a bad config: %d %s, want 422", status, body)
	}
	errorBody(t, "bad reload", body, h)
	var refused struct {
		Problems []string `json:"problems"`
	}
	if err := json.Unmarshal([]byte(body), &refused); err != nil {
		t.Fatal(err)
	}
	want := []*regexp.Regexp{
		regexp.MustCompile(`^` + regexp.QuoteMeta(e.path) + `:7:13: sites\[0\]\.weight: must be between 0 and 1000`),
		regexp.MustCompile(`^` + regexp.QuoteMeta(e.path) + `:16:12: timeouts\.conect: unknown key "conect"`),
	}
	if len(refused.Problems) != len(want) {
		t.Errorf("problems %q, want %d", refused.Problems, len(want))
	}
	for _, re := range want {
		found := false
		for _, p := range refused.Problems {
			found = found || re.MatchString(p)
		}
		if !found {
			t.Errorf("no problem matches %s in %q", re, refused.Problems)
		}
	}
	st := e.state(t)
	if st.Generation != 2 || st.Sites[0].Weight != 5 || st.Reloads.OK != 1 || st.Reloads.Failed != 1 {
		t.Errorf("after a refused reload: generation %d, idc1 weight %g, reloads %+v; want 2, 5, 1 ok 1 failed", st.Generation, st.Sites[0].Weight, st.Reloads)
	}
	if ch := st.Changes; len(ch) != 2 || ch[0].Action != "reload" || !strings.HasPrefix(ch[0].After, "refused: ") || ch[1].After != "generation 2" {
		t.Errorf("changes %+v, want the refused reload and the one before", ch)
	}
	_, _, metrics := e.call(t, http.MethodGet, "/metrics", "", "")
	if !strings.Contains(metrics, `spillway_config_reloads_total{result="failure"} 1`) ||
		!strings.Contains(metrics, `spillway_config_reloads_total{result="success"} 1`) {
		t.Errorf("metrics do not count 1 success and 1 failure:\n%s", metrics)
	}
	if got := e.get(t, "/"); got == "" {
		t.Error("no answer after a refused reload")
	}
}

// persist=true writes the weight into the file atomically, changing nothing else; the
// reload that follows makes it the configured weight.
func TestAdminPersistWeight(t *testing.T) {
	a, b, c := threeBackends(t)
	original := config(a, b, c, "")
	e := startAdmin(t, original, true)
	before, err := os.Stat(e.path)
	if err != nil {
		t.Fatal(err)
	}

	var site runtime.SiteState
	e.must(t, http.MethodPut, "/api/v1/sites/idc2/weight?persist=true", opsToken, `{"weight":12}`, &site)
	want := strings.Replace(original, "{name: idc2, weight: 3,", "{name: idc2, weight: 12,", 1)
	got, err := os.ReadFile(e.path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("file after persist:\n%s\nwant (only idc2's weight changed):\n%s", got, want)
	}
	after, err := os.Stat(e.path)
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(before, after) {
		t.Error("the file was rewritten in place, not replaced by a rename")
	}
	if after.Mode().Perm() != 0o640 {
		t.Errorf("mode %v after persist, want 0640", after.Mode().Perm())
	}
	if ents, _ := os.ReadDir(filepath.Dir(e.path)); len(ents) != 1 {
		var names []string
		for _, en := range ents {
			names = append(names, en.Name())
		}
		t.Errorf("files left in the config's directory: %v", names)
	}
	if site.Weight != 12 || site.ConfiguredWeight != 12 || site.Override != nil {
		t.Errorf("PUT answered %+v, want weight 12 as configured, no override", site)
	}
	st := e.state(t)
	if st.Generation != 2 {
		t.Errorf("generation %d after persist, want 2 (the file was reloaded)", st.Generation)
	}
	if c := st.Changes[1]; c.Action != "weight" || c.Before != "3" || c.After != "12 (persisted)" {
		t.Errorf("change %+v, want 3 → 12 (persisted)", c)
	}
	// The reload that followed says what it changed.
	if c := st.Changes[0]; c.Action != "reload" || len(c.Items) != 1 || c.Items[0].Path != "sites.idc2.weight" ||
		c.Items[0].Before != "3" || c.Items[0].After != "12" {
		t.Errorf("reload entry %+v, want one item: sites.idc2.weight 3 → 12", c)
	}

	// With a ramp: the file has the target at once, the override ramps and then gives way
	// to the file.
	e.must(t, http.MethodPut, "/api/v1/sites/aws/weight?persist=true", opsToken, `{"weight":4,"ramp":"300ms"}`, &site)
	want = strings.Replace(want, "weight:   2     # odd spacing stays", "weight:   4     # odd spacing stays", 1)
	if got, _ := os.ReadFile(e.path); string(got) != want {
		t.Errorf("file after persist with ramp:\n%s\nwant:\n%s", got, want)
	}
	if site.Override == nil || site.Override.Weight != 4 || site.ConfiguredWeight != 4 {
		t.Errorf("PUT with ramp answered %+v, want an override ramping to 4, configured 4", site)
	}
	proxytest.WaitFor(t, "the persisted ramp to end and give way to the file", func() bool {
		s := e.site(t, "aws")
		return s.Weight == 4 && s.Override == nil
	})

}

// persist=true for a weight the file does not write as a plain number (here an alias) is
// refused with a JSON error, and neither the file nor the running weight changes.
func TestAdminPersistRefused(t *testing.T) {
	a, b, c := threeBackends(t)
	original := fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: &same 3, backends: [%q]}
  - {name: idc2, weight: *same, backends: [%q]}   # the same as idc1
  - {name: aws, weight: 2, backends: [%q], elastic: true}
`, a, b, c)
	e := startAdmin(t, original, true)
	status, h, body := e.call(t, http.MethodPut, "/api/v1/sites/idc2/weight?persist=true", opsToken, `{"weight":4}`)
	if status < 400 {
		t.Fatalf("persist of a weight written as an alias: %d %s, want an error", status, body)
	}
	errorBody(t, "persist refused", body, h)
	if got, _ := os.ReadFile(e.path); string(got) != original {
		t.Errorf("file changed by a refused persist:\n%s", got)
	}
	if s := e.site(t, "idc2"); s.Weight != 3 || s.Override != nil {
		t.Errorf("idc2 after a refused persist: %+v, want untouched", s)
	}
	if ch := e.state(t).Changes; len(ch) != 1 || ch[0].Result != "refused" || !strings.Contains(ch[0].Reason, "persist") {
		t.Errorf("changes after a refused persist: %+v, want one refused attempt with its reason", ch)
	}
}

// GET /api/v1/explain says where a recent request went and why.
func TestAdminExplain(t *testing.T) {
	a, b, c := threeBackends(t)
	e := startAdmin(t, config(a, b, c, ""), true)
	body := e.get(t, "/account", "X-Request-Id", "explain-me-1")
	var got struct {
		Request proxy.RequestInfo `json:"request"`
		Why     string            `json:"why"`
	}
	proxytest.WaitFor(t, "the request to be kept", func() bool {
		status, _, raw := e.call(t, http.MethodGet, "/api/v1/explain?request_id=explain-me-1", "", "")
		return status == http.StatusOK && json.Unmarshal([]byte(raw), &got) == nil
	})
	r := got.Request
	if r.ID != "explain-me-1" || r.Path != "/account" || r.Status != 200 || r.Site != body || r.Preferred != body {
		t.Errorf("explained request %+v, want explain-me-1 /account 200 at %s", r, body)
	}
	if !strings.Contains(got.Why, "preferred "+body) || !strings.Contains(got.Why, "answered 200") || !strings.Contains(got.Why, "backend "+r.Backend) {
		t.Errorf("why %q, want the preferred site, the backend and the answer", got.Why)
	}
}

// /readyz follows the Reloader's readiness; /healthz does not.
func TestAdminReadiness(t *testing.T) {
	a, b, c := threeBackends(t)
	e := startAdmin(t, config(a, b, c, ""), false)
	check := func(path string, want int) {
		t.Helper()
		if status, _, body := e.call(t, http.MethodGet, path, "", ""); status != want {
			t.Errorf("GET %s: %d %s, want %d", path, status, body, want)
		}
	}
	check("/readyz", 200)
	e.r.SetReady(false)
	check("/readyz", 503)
	check("/healthz", 200)
	e.r.SetReady(true)
	check("/readyz", 200)
}

// Changes from many callers at once are all applied and audited (run with -race).
func TestAdminConcurrentChanges(t *testing.T) {
	a, b, c := threeBackends(t)
	e := startAdmin(t, config(a, b, c, ""), true)
	var failed atomic.Int64
	done := make(chan struct{})
	for i := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for j := range 5 {
				body := fmt.Sprintf(`{"weight":%d,"ramp":"50ms"}`, 1+(i+j)%9)
				req, _ := http.NewRequest(http.MethodPut, e.api+"/api/v1/sites/idc1/weight", bytes.NewBufferString(body))
				req.Header.Set("Authorization", "Bearer "+opsToken)
				resp, err := e.client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
		}()
	}
	for range 8 {
		proxytest.Receive(t, done, "a caller to finish")
	}
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of 40 concurrent changes failed", n)
	}
	if n := e.audit.Len(); n != 40 {
		t.Errorf("%d audit entries, want 40", n)
	}
	if n := len(e.state(t).Changes); n != 40 {
		t.Errorf("%d changes listed, want 40", n)
	}
}

// LoadTokens reads named and bare tokens, skips comments, adds the environment's, and
// refuses short, unnamed, duplicate or missing tokens with the file's line.
func TestLoadTokens(t *testing.T) {
	write := func(content string) string {
		p := filepath.Join(t.TempDir(), "admin.token")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("# operators\n\nalice: alice-secret-0123456789\n  bob:bob-secret-0123456789  \n")
	tokens, err := admin.LoadTokens(good, "env-secret-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	want := admin.Tokens{"alice": "alice-secret-0123456789", "bob": "bob-secret-0123456789", "env": "env-secret-0123456789"}
	if fmt.Sprint(tokens) != fmt.Sprint(want) {
		t.Errorf("tokens %v, want %v", tokens, want)
	}
	bare := write("bare-secret-0123456789\n")
	if tokens, err := admin.LoadTokens(bare, ""); err != nil || tokens["admin"] != "bare-secret-0123456789" || len(tokens) != 1 {
		t.Errorf("bare secret: %v %v, want it named admin", tokens, err)
	}
	if tokens, err := admin.LoadTokens("", ""); err != nil || len(tokens) != 0 {
		t.Errorf("no file, no env: %v %v, want no tokens and no error", tokens, err)
	}
	for _, tc := range []struct{ name, file, env, want string }{
		{"short", write("# x\nalice: short\n"), "", ":2: "},
		{"unnamed", write(": nameless-secret-0123456789\n"), "", ":1: "},
		{"duplicate", write("a: aaaaaaaaaaaaaaaaaaaa\na: bbbbbbbbbbbbbbbbbbbb\n"), "", ":2: "},
		{"empty file", write("# nothing\n"), "", "has no token"},
		{"missing file", filepath.Join(t.TempDir(), "nope"), "", "no such file"},
		{"short env", "", "short", "SPILLWAY_ADMIN_TOKEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := admin.LoadTokens(tc.file, tc.env); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}

	// The bench's client side reads the same file: the first token's secret.
	for _, tc := range []struct{ name, file, want, err string }{
		{"named", write("# ops\nops: first-secret-0123456789\nci: second-secret-0123456789\n"), "first-secret-0123456789", ""},
		{"bare", bare, "bare-secret-0123456789", ""},
		{"empty secret", write("ops:\n"), "", ":1: empty token"},
		{"empty file", write("\n# nothing\n"), "", "has no token"},
	} {
		t.Run("first "+tc.name, func(t *testing.T) {
			got, err := admin.FirstToken(tc.file)
			if got != tc.want || (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
				t.Errorf("FirstToken: %q %v, want %q and an error containing %q", got, err, tc.want, tc.err)
			}
		})
	}
}

// A config whose access log cannot be opened is a bad config like any other: the reload is
// refused with 422 and the problem at its file:line, and the running config stays.
func TestAdminReloadRefusesUnopenableAccessLog(t *testing.T) {
	a, b, c := threeBackends(t)
	e := startAdmin(t, config(a, b, c, ""), true)
	bad := config(a, b, c, fmt.Sprintf("access_log: {output: %q}\n", filepath.Join(t.TempDir(), "missing-dir", "access.log")))
	if err := os.WriteFile(e.path, []byte(bad), 0o640); err != nil {
		t.Fatal(err)
	}
	status, _, body := e.call(t, http.MethodPost, "/api/v1/reload", opsToken, "")
	var refused struct {
		Problems []string `json:"problems"`
	}
	json.Unmarshal([]byte(body), &refused)
	if status != http.StatusUnprocessableEntity || len(refused.Problems) != 1 ||
		!strings.HasPrefix(refused.Problems[0], e.path+":16:") || !strings.Contains(refused.Problems[0], "access_log.output") {
		t.Errorf("reload with an access_log.output that cannot be opened: %d %s; want 422 with the problem at %s:16 (access_log.output)", status, body, e.path)
	}
	if st := e.state(t); st.Generation != 1 || st.Reloads.Failed != 1 {
		t.Errorf("generation %d, failed reloads %d; want 1, 1", st.Generation, st.Reloads.Failed)
	}
}

// A body with anything after its JSON object is a bad body: 400, and nothing changes.
func TestAdminRefusesTrailingData(t *testing.T) {
	a, b, c := threeBackends(t)
	e := startAdmin(t, config(a, b, c, ""), true)
	status, _, body := e.call(t, http.MethodPut, "/api/v1/sites/idc1/weight", opsToken, `{"weight":7} {"weight":9}`)
	if status != http.StatusBadRequest {
		t.Errorf("PUT weight with two JSON objects: %d %s, want 400 (the decoder reads the first and ignores the rest)", status, body)
	}
	if s := e.site(t, "idc1"); s.Weight != 5 {
		t.Errorf("idc1 weight %g after a bad body, want 5", s.Weight)
	}
}
