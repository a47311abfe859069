package admin

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// startDashboardServer starts the server under test: the dashboard at "/" and
// the admin API beside it, and returns its base URL, the admin token, and a
// func that reads GET /api/v1/state. The browser tests know the server only
// through these three, so this is the one place to switch from the in-memory
// fake below to the real admin server.
//
// The server must come up with three sites, idc1, idc2 and aws, with weights
// 5, 3 and 2 and no overrides.
func startDashboardServer(t *testing.T) (baseURL, token string, getState func(t *testing.T) map[string]any) {
	t.Helper()
	token = "test-token-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	api := newFakeAPI(token, time.Now)
	mux := http.NewServeMux()
	mux.Handle("/{$}", Dashboard())
	api.register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, token, func(t *testing.T) map[string]any {
		t.Helper()
		return fetchDashboardState(t, srv.Client(), srv.URL)
	}
}

// fetchDashboardState reads and decodes GET /api/v1/state.
func fetchDashboardState(t *testing.T, c *http.Client, baseURL string) map[string]any {
	t.Helper()
	resp, err := c.Get(baseURL + "/api/v1/state")
	if err != nil {
		t.Fatalf("GET /api/v1/state: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /api/v1/state: read body: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v1/state: %s: %s", resp.Status, body)
	}
	var state map[string]any
	if err := json.Unmarshal(body, &state); err != nil {
		t.Fatalf("GET /api/v1/state: decode: %v", err)
	}
	return state
}

// fakeAPI is an in-memory stand-in for the admin API of the dashboard: the
// JSON contract of GET /api/v1/state and the weight, drain and undrain
// changes, with bearer-token checks and an audit list. Its numbers are made
// up but plausible: a 5:3:2 split at about 400 requests/s with an earlier
// spike that spilled idc1's excess to the elastic aws pool (and shed a few
// requests), and a spike going on now. The history advances one point per
// second of the clock, computed when the state is read, so the fake runs no
// goroutine of its own.
type fakeAPI struct {
	token string
	now   func() time.Time

	mu       sync.Mutex
	rng      *rand.Rand
	sites    []*fakeSite
	history  []fakePoint
	changes  []fakeChange
	loadedAt time.Time
}

type fakeSite struct {
	name       string
	configured int
	override   *fakeOverride
	drained    bool
	elastic    bool
	capacity   float64 // answers per second before it spills; 0: no cap
	backends   []fakeBackend
}

type fakeOverride struct {
	Weight int       `json:"weight"`
	Ramp   string    `json:"ramp,omitempty"`
	Since  time.Time `json:"since"`
	By     string    `json:"by"`
}

type fakeBackend struct {
	Addr      string  `json:"addr"`
	Up        bool    `json:"up"`      // takes requests: healthy and not ejected
	Healthy   bool    `json:"healthy"` // passes its active probes
	Ejected   bool    `json:"ejected"` // by passive outlier detection
	Limit     int     `json:"limit"`
	Inflight  int     `json:"inflight"`
	Ramp      float64 `json:"ramp"`
	LatencyMS float64 `json:"latency_ms"`
}

// fakePoint is one second of history; the spill counts by site are the
// fake's own bookkeeping, used for the sites' live rates.
type fakePoint struct {
	T       int64          `json:"t"`
	Answers map[string]int `json:"answers"`
	Spilled int            `json:"spilled"`
	Shed    int            `json:"shed"`

	spilledFrom, spilledTo map[string]int
	desired                map[string]float64
}

type fakeChange struct {
	Time   time.Time `json:"time"`
	Who    string    `json:"who"`
	Action string    `json:"action"`
	Site   string    `json:"site"`
	Before string    `json:"before"`
	After  string    `json:"after"`
}

const fakeHistory = 300 // points kept, one per second

func newFakeAPI(token string, now func() time.Time) *fakeAPI {
	f := &fakeAPI{
		token: token,
		now:   now,
		rng:   rand.New(rand.NewPCG(5, 3)),
		sites: []*fakeSite{
			{name: "idc1", configured: 5, capacity: 240, backends: []fakeBackend{
				{Addr: "http://10.0.1.10:8080", Up: true, Healthy: true, Limit: 256, Ramp: 1, LatencyMS: 2.3},
				{Addr: "http://10.0.1.11:8080", Up: true, Healthy: true, Limit: 256, Ramp: 1, LatencyMS: 2.9},
			}},
			{name: "idc2", configured: 3, capacity: 200, backends: []fakeBackend{
				{Addr: "https://10.0.2.10:8443", Up: true, Healthy: true, Limit: 256, Ramp: 1, LatencyMS: 3.4},
				{Addr: "https://10.0.2.11:8443", Up: false, Healthy: true, Ejected: true, Limit: 256, Ramp: 1, LatencyMS: 41.7},
				{Addr: "https://10.0.2.12:8443", Up: false, Healthy: false, Limit: 256, Ramp: 1},
			}},
			{name: "aws", configured: 2, elastic: true, backends: []fakeBackend{
				{Addr: "http://10.20.0.5:8080", Up: true, Healthy: true, Limit: 128, Ramp: 1, LatencyMS: 7.8},
				{Addr: "http://10.20.1.7:8080", Up: true, Healthy: true, Limit: 128, Ramp: 1, LatencyMS: 8.4},
				{Addr: "http://10.20.2.9:8080", Up: true, Healthy: true, Limit: 128, Ramp: 0.35, LatencyMS: 9.1},
			}},
		},
	}
	start := now().Unix() - fakeHistory + 1
	f.loadedAt = time.Unix(start-600, 0).UTC()
	for i := range fakeHistory {
		f.history = append(f.history, f.point(start+int64(i), fakeLoad(i)))
	}
	return f
}

// fakeLoad is the request rate of the i-th second of the made-up history: a
// steady 400/s, a spike to 600/s from 60 to 100 s in (idc1 spills, and at its
// top the queue overflows), and a spike to 520/s from 255 s on that has not
// ended yet.
func fakeLoad(i int) float64 {
	switch {
	case i >= 60 && i < 100:
		ramp := math.Min(float64(i-60), float64(100-i)) / 8
		return 400 + 200*math.Min(1, ramp)
	case i >= 255:
		return 400 + 120*math.Min(1, float64(i-255)/10)
	}
	return 400
}

// point makes one second of history from the current weights: each site gets
// its share of load, a site over its capacity spills the excess to the
// elastic site, and past 590/s some requests are shed.
func (f *fakeAPI) point(t int64, load float64) fakePoint {
	load *= 1 + 0.03*(f.rng.Float64()*2-1)
	p := fakePoint{T: t, Answers: map[string]int{}, spilledFrom: map[string]int{}, spilledTo: map[string]int{}, desired: map[string]float64{}}
	shares := f.targetShares()
	if load > 590 {
		p.Shed = int(load-590) / 2
		load -= float64(p.Shed)
	}
	excess := 0.0
	for _, s := range f.sites {
		want := load * shares[s.name]
		p.desired[s.name] = want
		if s.capacity > 0 && want > s.capacity {
			p.spilledFrom[s.name] = int(want - s.capacity)
			excess += want - s.capacity
			want = s.capacity
		}
		p.Answers[s.name] = int(math.Round(want))
	}
	for _, s := range f.sites {
		if s.elastic && !s.drained && excess > 0 {
			p.Answers[s.name] += int(math.Round(excess))
			p.spilledTo[s.name] = int(math.Round(excess))
			p.Spilled = int(math.Round(excess))
			break
		}
	}
	return p
}

func (s *fakeSite) weight() int {
	if s.override != nil {
		return s.override.Weight
	}
	return s.configured
}

func (f *fakeAPI) targetShares() map[string]float64 {
	total := 0
	for _, s := range f.sites {
		if !s.drained {
			total += s.weight()
		}
	}
	shares := map[string]float64{}
	for _, s := range f.sites {
		if !s.drained && total > 0 {
			shares[s.name] = float64(s.weight()) / float64(total)
		} else {
			shares[s.name] = 0
		}
	}
	return shares
}

// advance adds a history point for each whole second since the last one.
func (f *fakeAPI) advance() {
	now := f.now().Unix()
	last := f.history[len(f.history)-1].T
	if now-last > fakeHistory {
		last = now - fakeHistory
	}
	for t := last + 1; t <= now; t++ {
		f.history = append(f.history, f.point(t, fakeLoad(fakeHistory)))
	}
	if n := len(f.history); n > fakeHistory {
		f.history = append([]fakePoint(nil), f.history[n-fakeHistory:]...)
	}
}

func (f *fakeAPI) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/state", f.handleState)
	mux.HandleFunc("PUT /api/v1/sites/{name}/weight", f.authorized(f.handleSetWeight))
	mux.HandleFunc("DELETE /api/v1/sites/{name}/weight", f.authorized(f.handleClearWeight))
	mux.HandleFunc("POST /api/v1/sites/{name}/drain", f.authorized(f.handleDrain(true)))
	mux.HandleFunc("POST /api/v1/sites/{name}/undrain", f.authorized(f.handleDrain(false)))
}

func fakeWriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func fakeWriteError(w http.ResponseWriter, code int, msg string) {
	fakeWriteJSON(w, code, map[string]string{"error": msg})
}

// authorized checks the bearer token, then runs h with the fake's lock held
// and the named site, or answers 404.
func (f *fakeAPI) authorized(h func(w http.ResponseWriter, r *http.Request, s *fakeSite)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		given, ok := strings.CutPrefix(auth, "Bearer ")
		if auth == "" || !ok || given == "" {
			fakeWriteError(w, http.StatusUnauthorized, "missing bearer token")
			return
		}
		if subtle.ConstantTimeCompare([]byte(given), []byte(f.token)) != 1 {
			fakeWriteError(w, http.StatusForbidden, "invalid bearer token")
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.advance()
		name := r.PathValue("name")
		for _, s := range f.sites {
			if s.name == name {
				h(w, r, s)
				return
			}
		}
		fakeWriteError(w, http.StatusNotFound, fmt.Sprintf("no site %q", name))
	}
}

func (f *fakeAPI) audit(r *http.Request, action, site, before, after string) {
	c := fakeChange{Time: f.now().UTC(), Who: "ops (" + r.RemoteAddr + ")", Action: action, Site: site, Before: before, After: after}
	f.changes = append([]fakeChange{c}, f.changes...)
	if len(f.changes) > 50 {
		f.changes = f.changes[:50]
	}
}

func (f *fakeAPI) handleSetWeight(w http.ResponseWriter, r *http.Request, s *fakeSite) {
	var body struct {
		Weight *int   `json:"weight"`
		Ramp   string `json:"ramp"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		fakeWriteError(w, http.StatusBadRequest, "bad body: "+err.Error())
		return
	}
	if body.Weight == nil {
		fakeWriteError(w, http.StatusBadRequest, "weight is required")
		return
	}
	if *body.Weight < 0 || *body.Weight > 1000 {
		fakeWriteError(w, http.StatusBadRequest, fmt.Sprintf("weight %d out of range [0, 1000]", *body.Weight))
		return
	}
	after := strconv.Itoa(*body.Weight)
	if body.Ramp != "" {
		d, err := time.ParseDuration(body.Ramp)
		if err != nil || d < 0 {
			fakeWriteError(w, http.StatusBadRequest, fmt.Sprintf("ramp %q: want a duration such as 30s", body.Ramp))
			return
		}
		after += " (ramp " + body.Ramp + ")"
	}
	before := strconv.Itoa(s.weight())
	s.override = &fakeOverride{Weight: *body.Weight, Ramp: body.Ramp, Since: f.now().UTC(), By: "ops"}
	f.audit(r, "weight", s.name, before, after)
	fakeWriteJSON(w, http.StatusOK, f.siteJSON(s))
}

func (f *fakeAPI) handleClearWeight(w http.ResponseWriter, r *http.Request, s *fakeSite) {
	before := strconv.Itoa(s.weight())
	s.override = nil
	f.audit(r, "clear_weight", s.name, before, strconv.Itoa(s.configured))
	fakeWriteJSON(w, http.StatusOK, f.siteJSON(s))
}

func (f *fakeAPI) handleDrain(drain bool) func(w http.ResponseWriter, r *http.Request, s *fakeSite) {
	return func(w http.ResponseWriter, r *http.Request, s *fakeSite) {
		word := map[bool]string{true: "drained", false: "serving"}
		action := map[bool]string{true: "drain", false: "undrain"}[drain]
		f.audit(r, action, s.name, word[s.drained], word[drain])
		s.drained = drain
		fakeWriteJSON(w, http.StatusOK, f.siteJSON(s))
	}
}

func (f *fakeAPI) handleState(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance()
	recent := f.history[max(0, len(f.history)-10):]
	var total, shed float64
	for _, p := range recent {
		for _, n := range p.Answers {
			total += float64(n)
		}
		shed += float64(p.Shed)
	}
	n := float64(len(recent))
	sites := make([]map[string]any, 0, len(f.sites))
	for _, s := range f.sites {
		sites = append(sites, f.siteJSON(s))
	}
	fakeWriteJSON(w, http.StatusOK, map[string]any{
		"generation": 3,
		"source":     "configs/spillway.yaml",
		"loaded_at":  f.loadedAt,
		"ready":      true,
		"queue":      map[string]int{"waiting": int(shed / n * 3), "size": 1000},
		"rates":      map[string]float64{"requests": fakeRound1(total / n), "shed": fakeRound1(shed / n)},
		"sites":      sites,
		"history":    f.history,
		"changes":    append([]fakeChange{}, f.changes...),
		"reloads":    map[string]int{"ok": 2, "failed": 1},
	})
}

// siteJSON is a site as the state and the change endpoints show it. The
// caller holds f.mu.
func (f *fakeAPI) siteJSON(s *fakeSite) map[string]any {
	recent := f.history[max(0, len(f.history)-10):]
	var answers, all, desired, from, to float64
	for _, p := range recent {
		answers += float64(p.Answers[s.name])
		for _, n := range p.Answers {
			all += float64(n)
		}
		desired += p.desired[s.name]
		from += float64(p.spilledFrom[s.name])
		to += float64(p.spilledTo[s.name])
	}
	n := float64(len(recent))
	limit := 0
	backends := make([]fakeBackend, len(s.backends))
	copy(backends, s.backends)
	for _, b := range backends {
		if b.Up {
			limit += int(float64(b.Limit) * b.Ramp)
		}
	}
	spilling := from > 0 && len(recent) > 0 && recent[len(recent)-1].spilledFrom[s.name] > 0
	inflight := limit
	if !spilling {
		// Below capacity, in flight grows with the load it is given.
		load := desired / n
		if s.capacity > 0 {
			inflight = int(float64(limit) * 0.9 * math.Min(1, load/s.capacity))
		} else {
			inflight = int(load / 4)
		}
	}
	left := inflight
	for i := range backends {
		b := &backends[i]
		if !b.Up || limit == 0 {
			continue
		}
		b.Inflight = min(left, int(float64(inflight)*float64(b.Limit)*b.Ramp/float64(limit)+0.5))
		left -= b.Inflight
	}
	share := 0.0
	if all > 0 {
		share = answers / all
	}
	var override any
	if s.override != nil {
		o := *s.override
		override = &o
	}
	return map[string]any{
		"name":              s.name,
		"weight":            s.weight(),
		"configured_weight": s.configured,
		"override":          override,
		"drained":           s.drained,
		"elastic":           s.elastic,
		"target_share":      f.targetShares()[s.name],
		"share":             math.Round(share*1000) / 1000,
		"limit":             limit,
		"inflight":          inflight,
		"spilling":          spilling,
		"rates": map[string]float64{
			"requests":     fakeRound1(answers / n),
			"errors":       0,
			"spilled_from": fakeRound1(from / n),
			"spilled_to":   fakeRound1(to / n),
		},
		"backends": backends,
	}
}

func fakeRound1(v float64) float64 { return math.Round(v*10) / 10 }

// TestFakeAPI pins the fake to the contract the page is written against, so
// that the browser tests exercise the same shapes as the real API.
//
// It runs against the fake itself, not startDashboardServer, because it pins
// the fake's own error texts.
func TestFakeAPI(t *testing.T) {
	const token = "fake-token"
	mux := http.NewServeMux()
	newFakeAPI(token, time.Now).register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	base := srv.URL
	getState := func(t *testing.T) map[string]any { return fetchDashboardState(t, srv.Client(), base) }
	state := getState(t)
	for _, k := range []string{"generation", "source", "loaded_at", "ready", "queue", "rates", "sites", "history", "changes"} {
		if _, ok := state[k]; !ok {
			t.Errorf("state has no %q", k)
		}
	}
	if h := state["history"].([]any); len(h) != fakeHistory {
		t.Errorf("history has %d points, want %d", len(h), fakeHistory)
	}

	do := func(method, path, tok, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name, method, path, token, body string
		code                            int
		contains                        string
	}{
		{"no token", "PUT", "/api/v1/sites/idc1/weight", "", `{"weight":7}`, 401, "missing bearer token"},
		{"wrong token", "PUT", "/api/v1/sites/idc1/weight", "nope", `{"weight":7}`, 403, "invalid bearer token"},
		{"no site", "PUT", "/api/v1/sites/idc9/weight", token, `{"weight":7}`, 404, "no site"},
		{"bad body", "PUT", "/api/v1/sites/idc1/weight", token, `{"weight":"x"}`, 400, "bad body"},
		{"unknown field", "PUT", "/api/v1/sites/idc1/weight", token, `{"weight":1,"x":1}`, 400, "bad body"},
		{"bad ramp", "PUT", "/api/v1/sites/idc1/weight", token, `{"weight":1,"ramp":"soon"}`, 400, "ramp"},
		{"set", "PUT", "/api/v1/sites/idc1/weight", token, `{"weight":7,"ramp":"30s"}`, 200, `"override":{"weight":7,"ramp":"30s"`},
		{"clear", "DELETE", "/api/v1/sites/idc1/weight", token, "", 200, `"override":null`},
		{"drain", "POST", "/api/v1/sites/aws/drain", token, "", 200, `"drained":true`},
		{"undrain", "POST", "/api/v1/sites/aws/undrain", token, "", 200, `"drained":false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(tc.method, tc.path, tc.token, tc.body)
			if code != tc.code || !strings.Contains(body, tc.contains) {
				t.Errorf("%s %s = %d %s, want %d containing %q", tc.method, tc.path, code, body, tc.code, tc.contains)
			}
		})
	}
	changes := getState(t)["changes"].([]any)
	if len(changes) != 4 {
		t.Fatalf("%d changes, want 4: %v", len(changes), changes)
	}
	if first := changes[0].(map[string]any); first["action"] != "undrain" || first["site"] != "aws" {
		t.Errorf("newest change = %v, want the undrain of aws", first)
	}
}
