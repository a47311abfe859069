package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway/spillway/bench/sim"
)

// Target mode is tested against a Spillway this process starts (simulated sites on
// loopback, the proxy built as `spillway run` builds it, its admin API on a port of its
// own), and against plain loopback servers where what matters is what the client sends.
// Verdicts depend on timing and are not asserted; what the run measured and judged is.

// startTargetEnv starts simulated sites and Spillway in front of them with its admin API:
// a deployment for target mode.
func startTargetEnv(t *testing.T, sites []SiteSpec, queue int, queueTimeout time.Duration) *Env {
	t.Helper()
	env, err := StartEnv(EnvOptions{Sites: sites, Dir: t.TempDir(), Service: service, Seed: 1,
		HealthInterval: 100 * time.Millisecond, QueueSize: queue, QueueTimeout: queueTimeout, Admin: true,
		Affinity: "{cookie: SESSION}"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	return env
}

func checkNamed(r *Result, prefix string) *Check {
	for i := range r.Checks {
		if strings.HasPrefix(r.Checks[i].Name, prefix) {
			return &r.Checks[i]
		}
	}
	return nil
}

// The proxy's own view: the split it counted, its in-flight against limits and its sheds
// are judged beside the client's view, and sessions are followed by the site header the
// simulated backends send.
func TestTargetSteadyJudgesTheProxysView(t *testing.T) {
	env := startTargetEnv(t, standardSites(), 100, 0)
	var progress strings.Builder
	rep, err := RunTarget(context.Background(), TargetOptions{Target: env.URL, Admin: env.AdminURL,
		Rate: 100, Duration: 2 * time.Second, SampleEvery: 200 * time.Millisecond, Progress: &progress, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != ModeTarget || rep.Seed != 7 || len(rep.Scenarios) != 1 {
		t.Fatalf("mode %q seed %d scenarios %d", rep.Mode, rep.Seed, len(rep.Scenarios))
	}
	r := rep.Scenarios[0]
	if r.Name != "steady" || (r.Verdict != Pass && r.Verdict != Fail) {
		t.Fatalf("%s: verdict %s (%s)", r.Name, r.Verdict, r.Note)
	}
	for _, name := range []string{"p99 over the run", "requests not answered 2xx", "requests not sent",
		"highest in-flight at one backend", "idc1 share of the proxy's 2xx answers", "idc2 share of the proxy's 2xx answers",
		"aws share of the proxy's 2xx answers", "requests shed by the proxy"} {
		if checkNamed(r, name) == nil {
			t.Errorf("no check %q among %v", name, r.Checks)
		}
	}
	// Every request the client saw answered 2xx, the proxy counted (its final sample waits
	// for its in-flight to drain).
	if ok, pok := r.Figures["ok"], r.Figures["proxy.ok"]; ok == 0 || pok != ok {
		t.Errorf("client ok %v, proxy ok %v", ok, pok)
	}
	var sum float64
	for _, s := range env.Sites {
		sum += r.Figures["proxy.share."+s]
		if r.Figures["proxy.target_share."+s] == 0 {
			t.Errorf("no target share for %s: %v", s, r.Figures)
		}
	}
	if sum < 99.9 || sum > 100.1 {
		t.Errorf("proxy shares add to %v", sum)
	}
	if got := rep.Target; got == nil || !strings.HasPrefix(got.ConfigHash, "sha256:") || len(got.Sites) != 3 || got.Generation == 0 {
		t.Errorf("target info %+v", got)
	}
	if s := r.Series; s == nil || !slices.Equal(s.Sites, env.Sites) || s.Bucket != 1 || len(s.ST) == 0 {
		t.Errorf("series %+v", s)
	}
	if !strings.Contains(progress.String(), "=== steady") || !strings.Contains(progress.String(), "sheds 0") {
		t.Errorf("progress:\n%s", progress.String())
	}
}

// Sessions carry the affinity cookie; where the answers name no site, the proxy's explain
// API tells which site served a sample of each session's requests. The proxy keeps a
// session on its site while the site has room (here: a tenth of capacity).
func TestTargetSessionsStickThroughExplain(t *testing.T) {
	env := startTargetEnv(t, standardSites(), 100, 0)
	rep, err := RunTarget(context.Background(), TargetOptions{Target: env.URL, Admin: env.AdminURL,
		Rate: 60, Duration: 2 * time.Second, Sessions: 12, SiteHeader: "X-Not-Sent", SampleEvery: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Scenarios[0]
	if r.Figures["sessions.explain_asked"] == 0 || r.Figures["sessions.site_known"] == 0 {
		t.Fatalf("figures %v, note %q", r.Figures, r.Note)
	}
	for _, name := range []string{"session requests the proxy placed by their affinity key (GET /api/v1/explain)", "sessions whose preferred site changed"} {
		if c := checkNamed(r, name); c == nil || !c.Pass {
			t.Errorf("stickiness: %s: %v", name, c)
		}
	}
	if !strings.Contains(r.Note, "shares are reported, not judged") || checkNamed(r, "idc1 share") != nil {
		t.Errorf("the split was judged with sessions: %q %v", r.Note, r.Checks)
	}

	// A cookie the proxy's affinity does not read: the proxy places the requests by the
	// split, and the check says so.
	rep, err = RunTarget(context.Background(), TargetOptions{Target: env.URL, Admin: env.AdminURL,
		Rate: 60, Duration: time.Second, Sessions: 6, SessionCookie: "JSESSIONID", SampleEvery: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r = rep.Scenarios[0]
	if c := checkNamed(r, "session requests the proxy placed by their affinity key"); c == nil || c.Pass || c.Measured != 0 {
		t.Errorf("wrong cookie: %v", c)
	}
	if r.Verdict != Fail {
		t.Errorf("verdict %s", r.Verdict)
	}
}

// Without -admin the verdict uses the client's view, and says so; without a site header
// stickiness cannot be known, and the report says that too.
func TestTargetClientViewOnly(t *testing.T) {
	env := startTargetEnv(t, standardSites(), 100, 0)
	rep, err := RunTarget(context.Background(), TargetOptions{Target: env.URL, Rate: 50, Duration: time.Second,
		Sessions: 4, SiteHeader: "X-Not-Sent"})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Scenarios[0]
	if !strings.Contains(r.Note, "client's view only") || !strings.Contains(r.Note, "stickiness not determinable") {
		t.Errorf("note %q", r.Note)
	}
	for _, c := range r.Checks {
		if strings.Contains(c.Name, "proxy") || strings.Contains(c.Name, "backend") || strings.Contains(c.Name, "sessions") {
			t.Errorf("check %q without -admin", c.Name)
		}
	}
	if rep.Target.ConfigHash != "" || rep.Target.BuildInfo != nil {
		t.Errorf("target info without admin: %+v", rep.Target)
	}
}

// A ramp stops at the first step that does not hold and reports the capacity found. One
// backend of 4 slots (about 37 req/s) with a short queue: 5 req/s holds, 70 does not.
func TestTargetRampStopsAtTheFirstStepThatFails(t *testing.T) {
	env := startTargetEnv(t, []SiteSpec{{Name: "idc1", Weight: 1, Backends: 1, Limit: 4}}, 10, 100*time.Millisecond)
	rep, err := RunTarget(context.Background(), TargetOptions{Scenarios: []string{"ramp"}, Target: env.URL,
		Admin: env.AdminURL, Rate: 5, RampTo: 200, RampSteps: 4, Duration: 8 * time.Second, SampleEvery: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Scenarios[0]
	if r.Verdict == Error {
		t.Fatal(r.Note)
	}
	if r.Figures["breach_rps"] != 70 {
		t.Fatalf("breach at %v req/s, want 70; figures %v; note %q; table %v", r.Figures["breach_rps"], r.Figures, r.Note, r.Table)
	}
	if n := len(r.Table.Rows); n != 2 || r.Table.Rows[0][5] != "yes" || r.Table.Rows[1][5] != "no" {
		t.Errorf("steps %v", r.Table.Rows)
	}
	if c := r.Figures["capacity_rps"]; c <= 0 || c > 70 {
		t.Errorf("capacity %v", c)
	}
	if r.Figures["proxy.sheds"] == 0 {
		t.Errorf("no shed counted by the proxy past capacity: %v", r.Figures)
	}
	// The load stopped at the breach: nothing was due after it.
	if r.Series.T[len(r.Series.T)-1] >= 8 {
		t.Errorf("the series runs to %v s", r.Series.T[len(r.Series.T)-1])
	}
}

// A soak watches the proxy's resident memory and goroutines from its /metrics.
func TestTargetSoakWatchesMemoryAndGoroutines(t *testing.T) {
	env := startTargetEnv(t, standardSites(), 100, 0)
	rep, err := RunTarget(context.Background(), TargetOptions{Scenarios: []string{"soak", "spike"}, Target: env.URL,
		Admin: env.AdminURL, Rate: 40, Duration: 2 * time.Second, SampleEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	soak, spike := rep.Scenarios[0], rep.Scenarios[1]
	for _, name := range []string{"proxy resident memory", "proxy goroutines"} {
		if checkNamed(soak, name) == nil {
			t.Errorf("soak: no check %q: %v (note %q)", name, soak.Checks, soak.Note)
		}
	}
	if soak.Figures["proxy.rss_mb.early"] <= 0 || soak.Figures["proxy.goroutines.end"] <= 0 {
		t.Errorf("soak figures %v", soak.Figures)
	}
	if spike.Params["spike_rps"] != 120.0 || len(spike.Series.Marks) != 2 {
		t.Errorf("spike params %v marks %v", spike.Params, spike.Series.Marks)
	}
}

func TestTargetRefusesSimulatedOnlyScenarios(t *testing.T) {
	_, err := RunTarget(context.Background(), TargetOptions{Scenarios: []string{"outage", "stedy"}, Target: "http://127.0.0.1:1"})
	var oe *OptionsError
	if !errors.As(err, &oe) || !strings.Contains(err.Error(), "scenario outage runs only against simulated sites") ||
		!strings.Contains(err.Error(), `unknown scenario "stedy"`) {
		t.Fatalf("got %v", err)
	}
	_, err = RunTarget(context.Background(), TargetOptions{Target: "ftp://x", Rate: -1, Concurrency: -2})
	for _, want := range []string{"target", "rate", "concurrency"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	// Too many requests for the bounds: refused before anything is sent.
	_, err = RunTarget(context.Background(), TargetOptions{Target: "http://127.0.0.1:1", Rate: 100_000, Duration: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "lower -rate or -duration") {
		t.Errorf("got %v", err)
	}
	// An admin API that does not answer stops the run before any load.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = RunTarget(context.Background(), TargetOptions{Target: "http://" + addr, Admin: "http://" + addr, Duration: time.Second})
	if err == nil || !strings.Contains(err.Error(), "admin API does not answer") {
		t.Errorf("got %v", err)
	}
}

// recorder is a loopback server that keeps what it was sent.
type recorder struct {
	mu   sync.Mutex
	seen []string // "METHOD path proto body-sha header cookie"
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	sum := sha256.Sum256(b)
	cookie := ""
	if c, err := r.Cookie("SESSION"); err == nil {
		cookie = c.Value
	}
	rc.mu.Lock()
	rc.seen = append(rc.seen, strings.Join([]string{r.Method, r.URL.RequestURI(), r.Proto, hex.EncodeToString(sum[:4]),
		r.Header.Get("X-Bench-Test"), cookie, r.Header.Get("X-Request-Id")}, " "))
	rc.mu.Unlock()
	w.Header().Set(sim.HeaderSite, "only")
	io.WriteString(w, "ok")
}

// -paths, -header and -sessions shape what is sent: each line of the paths file in turn,
// with its body; the headers on every request; a session cookie, round robin.
func TestTargetSendsThePathsFile(t *testing.T) {
	rc := &recorder{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	dir := t.TempDir()
	body := []byte(`{"amount": 10}`)
	os.WriteFile(filepath.Join(dir, "pay.json"), body, 0o644)
	os.WriteFile(filepath.Join(dir, "paths.txt"), []byte("# a comment\nGET /accounts?id=1\n\nPOST /payments pay.json\r\n"), 0o644)
	paths, err := ReadPaths(filepath.Join(dir, "paths.txt"), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := RunTarget(context.Background(), TargetOptions{Target: srv.URL, Paths: paths, Rate: 40, Duration: time.Second,
		Header: http.Header{"X-Bench-Test": {"yes"}}, Sessions: 3})
	if err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.seen) == 0 || float64(len(rc.seen)) != rep.Scenarios[0].Figures["requests"] {
		t.Fatalf("server saw %d, report says %v", len(rc.seen), rep.Scenarios[0].Figures["requests"])
	}
	sum := sha256.Sum256(body)
	empty := sha256.Sum256(nil)
	ids := map[string]bool{}
	count := map[string]int{}
	for _, s := range rc.seen {
		f := strings.Split(s, " ")
		switch f[0] + " " + f[1] {
		case "GET /accounts?id=1":
			if f[3] != hex.EncodeToString(empty[:4]) {
				t.Errorf("GET with a body: %s", s)
			}
		case "POST /payments":
			if f[3] != hex.EncodeToString(sum[:4]) {
				t.Errorf("POST body: %s", s)
			}
		default:
			t.Errorf("unexpected request %s", s)
		}
		if f[2] != "HTTP/1.1" || f[4] != "yes" || !strings.HasPrefix(f[5], "bench-0-") || ids[f[6]] {
			t.Errorf("request %s", s)
		}
		ids[f[6]] = true
		count[f[0]]++
		count[f[5]]++
	}
	if d := count["GET"] - count["POST"]; d < -1 || d > 1 {
		t.Errorf("paths not sent in turn: %v", count)
	}
	if count["bench-0-0"] == 0 || count["bench-0-2"] == 0 || count["bench-0-3"] != 0 {
		t.Errorf("sessions: %v", count)
	}
}

// HTTP/2: over TLS (checked against -ca-file) by ALPN, and h2c over http://.
func TestTargetHTTP2AndCAFile(t *testing.T) {
	rc := &recorder{}
	tlsSrv := httptest.NewUnstartedServer(rc)
	tlsSrv.EnableHTTP2 = true
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o644)

	h2c := httptest.NewUnstartedServer(rc)
	h2c.Config.Protocols = new(http.Protocols)
	h2c.Config.Protocols.SetHTTP1(true)
	h2c.Config.Protocols.SetUnencryptedHTTP2(true)
	h2c.Start()
	defer h2c.Close()

	for _, tc := range []struct {
		name, url, ca string
		h2            bool
		proto         string
	}{
		{"tls h2", tlsSrv.URL, ca, true, "HTTP/2.0"},
		{"tls h1", tlsSrv.URL, ca, false, "HTTP/1.1"},
		{"h2c", h2c.URL, "", true, "HTTP/2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc.mu.Lock()
			rc.seen = nil
			rc.mu.Unlock()
			rep, err := RunTarget(context.Background(), TargetOptions{Target: tc.url, CAFile: tc.ca, HTTP2: tc.h2, Rate: 30, Duration: 500 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if r := rep.Scenarios[0]; r.Figures["ok"] == 0 || r.Figures["errors"] != 0 {
				t.Fatalf("figures %v", r.Figures)
			}
			rc.mu.Lock()
			defer rc.mu.Unlock()
			for _, s := range rc.seen {
				if f := strings.Split(s, " "); f[2] != tc.proto {
					t.Fatalf("sent %s, want %s", f[2], tc.proto)
				}
			}
		})
	}
	// Without the CA the server's certificate is refused: every request fails.
	rep, err := RunTarget(context.Background(), TargetOptions{Target: tlsSrv.URL, Rate: 20, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Scenarios[0]; r.Figures["ok"] != 0 || r.Figures["failed"] == 0 || r.Verdict != Fail {
		t.Errorf("without the CA: verdict %s, figures %v", r.Verdict, r.Figures)
	}
	if _, err := RunTarget(context.Background(), TargetOptions{Target: tlsSrv.URL, CAFile: filepath.Join(t.TempDir(), "none.pem")}); err == nil {
		t.Error("a missing CA file was accepted")
	}
	var buf bytes.Buffer
	buf.WriteString("not a certificate")
	bad := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(bad, buf.Bytes(), 0o644)
	if _, err := RunTarget(context.Background(), TargetOptions{Target: tlsSrv.URL, CAFile: bad}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a CA file without certificates: %v", err)
	}
}

// HTTP/2 to Spillway itself: its plain listener speaks h2c, which -http2 uses over http://
// (prior knowledge: an HTTP/1.1-only listener would fail every request).
func TestTargetHTTP2ThroughSpillway(t *testing.T) {
	env := startTargetEnv(t, standardSites(), 100, 0)
	rep, err := RunTarget(context.Background(), TargetOptions{Target: env.URL, Admin: env.AdminURL, HTTP2: true,
		Rate: 40, Duration: time.Second, SampleEvery: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Scenarios[0]
	if r.Figures["ok"] == 0 || r.Figures["errors"] != 0 || r.Figures["proxy.ok"] != r.Figures["ok"] || rep.Target.Protocol != "HTTP/2" {
		t.Errorf("figures %v, protocol %s", r.Figures, rep.Target.Protocol)
	}
}

// A fleet: two replicas behind one address (a round-robin front, as a load balancer), and
// -admin naming both. The proxy's view adds their counts up, each replica's build and
// config is recorded, replicas that differ are said so, and the explain API is asked of
// each in turn.
func TestTargetFleetAddsUpReplicas(t *testing.T) {
	a := startTargetEnv(t, standardSites(), 100, 0)
	b := startTargetEnv(t, standardSites(), 100, 0)
	var urls []*url.URL
	for _, e := range []*Env{a, b} {
		u, err := url.Parse(e.URL)
		if err != nil {
			t.Fatal(err)
		}
		urls = append(urls, u)
	}
	var next atomic.Uint64
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	front := httptest.NewServer(&httputil.ReverseProxy{Transport: tr, Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(urls[next.Add(1)%2])
	}})
	defer front.Close()

	rep, err := RunTarget(context.Background(), TargetOptions{Scenarios: []string{"soak"}, Target: front.URL,
		Admin: a.AdminURL + ", " + b.AdminURL, Rate: 60, Duration: 3 * time.Second, Sessions: 4,
		// (The growth check wants samples from 10% to 20% of the run: at 3 s and a sample
		// every 50 ms that window has six, enough when the whole suite loads the machine.)
		SiteHeader: "X-Not-Sent", SampleEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ti := rep.Target
	if len(ti.Replicas) != 2 || ti.Replicas[0].Admin != a.AdminURL || ti.Replicas[1].Admin != b.AdminURL ||
		!strings.Contains(ti.Note, "do not show the same sites, weights and backends") {
		t.Fatalf("target %+v", ti)
	}
	r := rep.Scenarios[0]
	if r.Figures["ok"] == 0 || r.Figures["proxy.ok"] != r.Figures["ok"] {
		t.Errorf("client ok %v, the replicas' ok %v", r.Figures["ok"], r.Figures["proxy.ok"])
	}
	if r.Figures["sessions.explained"] == 0 || r.Figures["sessions.explain_failed"] >= r.Figures["sessions.explain_asked"] {
		t.Errorf("explain across replicas: %v", r.Figures)
	}
	if checkNamed(r, "proxy resident memory") == nil || !strings.Contains(r.Note, "grew most at") {
		t.Errorf("soak growth by replica: %v, note %q", r.Checks, r.Note)
	}
	out := t.TempDir()
	if err := WriteReport(out, rep); err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(filepath.Join(out, MarkdownFile))
	if !bytes.Contains(md, []byte("Target replica 2: "+b.AdminURL)) || !bytes.Contains(md, []byte("Target warning: ")) {
		t.Errorf("report.md:\n%.1500s", md)
	}
}

// Interrupted (Ctrl-C), a run stops at once: the scenario under way is an error that says
// so, the report holds what ran, and nothing it started is left running (goleak).
func TestTargetInterrupted(t *testing.T) {
	env := startTargetEnv(t, standardSites(), 100, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	progress := &signalWriter{want: "steady       1s", seen: make(chan struct{})}
	done := make(chan struct{})
	defer close(done)
	go func() { // cancel once the run is under way: at its first progress line
		select {
		case <-progress.seen:
			cancel()
		case <-done:
		}
	}()
	rep, err := RunTarget(ctx, TargetOptions{Scenarios: []string{"steady", "spike"}, Target: env.URL, Admin: env.AdminURL,
		Rate: 50, Duration: time.Minute, Progress: progress})
	if !errors.Is(err, context.Canceled) || rep == nil || len(rep.Scenarios) != 1 {
		t.Fatalf("err %v, report %+v", err, rep)
	}
	if r := rep.Scenarios[0]; r.Verdict != Error || !strings.Contains(r.Note, "canceled") {
		t.Errorf("verdict %s, note %q", r.Verdict, r.Note)
	}
}

// signalWriter closes seen when what was written contains want.
type signalWriter struct {
	mu   sync.Mutex
	b    strings.Builder
	want string
	seen chan struct{}
	once sync.Once
}

func (s *signalWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Write(p)
	if strings.Contains(s.b.String(), s.want) {
		s.once.Do(func() { close(s.seen) })
	}
	return len(p), nil
}
