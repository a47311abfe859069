package proxy_test

// Tests of the Reloader (issue 5): reloads by call and by file watch, refusal of a bad
// config with every problem, zero failed requests during reloads under load, and the state
// that must outlive a reload (the split's position, in-flight, health, learned limits,
// operators' weights and drains). Real sockets on both sides; the Reloader's Handler is
// served by frontend.NewServer on 127.0.0.1.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/runtime"
)

// rlEnv is a started Reloader serving its config file through a real server.
type rlEnv struct {
	r      *runtime.Reloader
	path   string // the config file
	url    string // http://host:port of the proxy
	client *http.Client
	logs   *observer.ObservedLogs // the Reloader's operational log
	audit  *observer.ObservedLogs // its audit log
}

// startReloader writes yaml to a config file in a new temporary directory (unless opts.Path
// is set), starts a Reloader on it and serves its Handler on 127.0.0.1. Cleanups stop the
// server, cancel Start's context and Close the Reloader. Create backends before calling it,
// so that they close after the proxy. The Reloader has the telemetry `spillway run` has,
// without metrics.
func startReloader(t *testing.T, yaml string, opts runtime.ReloaderOptions) *rlEnv {
	t.Helper()
	return startReloaderMetrics(t, yaml, opts, nil)
}

// startReloaderMetrics is startReloader with the metrics registered on reg (nil: none).
func startReloaderMetrics(t *testing.T, yaml string, opts runtime.ReloaderOptions, reg prometheus.Registerer) *rlEnv {
	t.Helper()
	if opts.Path == "" {
		opts.Path = filepath.Join(t.TempDir(), "spillway.yaml")
		if err := os.WriteFile(opts.Path, []byte(yaml), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	e := &rlEnv{path: opts.Path}
	if opts.Log == nil {
		core, logs := observer.New(zapcore.DebugLevel)
		opts.Log, e.logs = zap.New(core), logs
	}
	if opts.Audit == nil {
		core, audit := observer.New(zapcore.DebugLevel)
		opts.Audit, e.audit = zap.New(core), audit
	}
	if reg != nil {
		opts.Metrics = reg
	}
	e.r = runtime.NewReloader(opts)
	ctx, cancel := context.WithCancel(context.Background())
	if err := e.r.Start(ctx); err != nil {
		cancel()
		e.r.Close()
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { cancel(); e.r.Close() })
	_, addr := serveOn(t, e.r.Config(), e.r.Handler())
	e.url = "http://" + addr
	e.client, _ = newClient(t)
	return e
}

// write replaces the config file's content in place.
func (e *rlEnv) write(t *testing.T, yaml string) {
	t.Helper()
	if err := os.WriteFile(e.path, []byte(yaml), 0o640); err != nil {
		t.Fatal(err)
	}
}

// send sends one request through the proxy and returns its status and body.
func (e *rlEnv) send(method, path string, body io.Reader) (int, string, error) {
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		return 0, "", err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// mustGet sends a GET through the proxy and fails the test unless it is answered 200; it
// returns the body (the name of the site that answered, for nameBackend).
func (e *rlEnv) mustGet(t *testing.T, path string) string {
	t.Helper()
	status, body, err := e.send(http.MethodGet, path, nil)
	if err != nil || status != http.StatusOK {
		t.Fatalf("GET %s: %d %q %v", path, status, body, err)
	}
	return body
}

// site returns the state of the site called name, failing the test if there is none.
func (e *rlEnv) site(t *testing.T, name string) runtime.SiteState {
	t.Helper()
	s, ok := e.r.Site(name)
	if !ok {
		t.Fatalf("no site %q in the state", name)
	}
	return s
}

// testClock is a settable clock for ReloaderOptions.Now.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock { return &testClock{now: time.Now()} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// threeSites is a 5:3:2 config (aws elastic) with extra top-level YAML appended.
func threeSites(idc1, idc2, aws string, w1, w2, w3 int, extra string) string {
	return fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: %d, backends: [%q]}
  - {name: idc2, weight: %d, backends: [%q]}
  - {name: aws, weight: %d, backends: [%q], elastic: true}
retries: {attempts: 1}
%s`, w1, idc1, w2, idc2, w3, aws, extra)
}

// A config with problems is refused with every problem at its file:line, in the error, the
// log and the failure count; the running config stays and keeps serving.
func TestReloadRefusesBadConfigAndKeepsRunning(t *testing.T) {
	a, b, c := nameBackend(t, "idc1"), nameBackend(t, "idc2"), nameBackend(t, "aws")
	good := threeSites(a.URL, b.URL, c.URL, 5, 3, 2, "")
	e := startReloader(t, good, runtime.ReloaderOptions{})
	bad := fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - name: idc1
    weight: -1
    backends: ["ftp://127.0.0.1:1"]
  - name: idc2
    wieght: 3
    backends: [%q]
`, b.URL)
	e.write(t, bad)
	err := e.r.Reload("test", false)
	var errs configs.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Reload of a bad config: %v, want configs.Errors", err)
	}
	want := []string{
		e.path + `:4:13: sites[0].weight: must be between 0 and 1000`,
		e.path + `:5:16: sites[0].backends[0]: want http://host:port`,
		e.path + `:7:5: sites[1].wieght: unknown key "wieght"`,
	}
	for _, w := range want {
		found := false
		for _, ce := range errs {
			found = found || strings.HasPrefix(ce.Error(), w)
		}
		if !found {
			t.Errorf("no problem starts with %q; got:\n%v", w, err)
		}
	}
	refused := e.logs.FilterMessage("config refused; the running config stays").All()
	if len(refused) != 1 {
		t.Fatalf("%d 'config refused' log entries, want 1", len(refused))
	}
	logged, _ := refused[0].ContextMap()["error"].(string)
	for _, ce := range errs {
		if !strings.Contains(logged, ce.Error()) {
			t.Errorf("the log's error lacks the problem %q; it says:\n%s", ce.Error(), logged)
		}
	}
	if ok, failed := e.r.Reloads(); ok != 0 || failed != 1 {
		t.Errorf("Reloads() = %d ok, %d failed; want 0, 1", ok, failed)
	}
	st := e.r.State()
	if st.Generation != 1 || st.Reloads.Failed != 1 {
		t.Errorf("state: generation %d, failed reloads %d; want 1, 1", st.Generation, st.Reloads.Failed)
	}
	if w := e.site(t, "idc1").Weight; w != 5 {
		t.Errorf("idc1 weight %g after a refused reload, want 5 (the running config's)", w)
	}
	seen := map[string]int{}
	for range 10 {
		seen[e.mustGet(t, "/")]++
	}
	if seen["idc1"] != 5 || seen["idc2"] != 3 || seen["aws"] != 2 {
		t.Errorf("split after a refused reload %v, want idc1 5, idc2 3, aws 2", seen)
	}

	// A file that cannot be read is refused too; the good file loads again.
	if err := os.Rename(e.path, e.path+".gone"); err != nil {
		t.Fatal(err)
	}
	if err := e.r.Reload("test", true); err == nil {
		t.Fatal("Reload of a missing file succeeded")
	}
	if err := os.Rename(e.path+".gone", e.path); err != nil {
		t.Fatal(err)
	}
	e.write(t, threeSites(a.URL, b.URL, c.URL, 4, 4, 2, ""))
	if err := e.r.Reload("test", false); err != nil {
		t.Fatalf("Reload of a good config: %v", err)
	}
	if ok, failed := e.r.Reloads(); ok != 1 || failed != 2 {
		t.Errorf("Reloads() = %d ok, %d failed; want 1, 2", ok, failed)
	}
	if g := e.r.State().Generation; g != 2 {
		t.Errorf("generation %d, want 2", g)
	}
	// An unchanged file is not reloaded unless forced.
	if err := e.r.Reload("test", false); err != nil {
		t.Fatal(err)
	}
	if g := e.r.State().Generation; g != 2 {
		t.Errorf("generation %d after reloading an unchanged file, want 2", g)
	}
	if err := e.r.Reload("test", true); err != nil {
		t.Fatal(err)
	}
	if g := e.r.State().Generation; g != 3 {
		t.Errorf("generation %d after a forced reload, want 3", g)
	}
}

// 50 reloads during steady traffic through real sockets: every request is answered 2xx,
// POSTs (never retried) included, and reloads that replace the transports (a timeouts
// change) drop nothing.
func TestReloadUnderLoadAnswersEveryRequest(t *testing.T) {
	backend := func(name string) string {
		return newBackend(t, func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, name)
		}).URL
	}
	a, b, c := backend("idc1"), backend("idc2"), backend("aws")
	configA := threeSites(a, b, c, 5, 3, 2, "")
	configB := threeSites(a, b, c, 4, 4, 2, "timeouts: {idle: 80s, connect: 3s}\n")
	e := startReloader(t, configA, runtime.ReloaderOptions{})

	var answered atomic.Int64
	var mu sync.Mutex
	var failures []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				method, body := http.MethodGet, io.Reader(nil)
				if (w+i)%2 == 1 {
					method, body = http.MethodPost, strings.NewReader("payment")
				}
				status, got, err := e.send(method, fmt.Sprintf("/w%d/%d", w, i), body)
				if err != nil || status < 200 || status > 299 {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s /w%d/%d: %d %q %v", method, w, i, status, got, err))
					mu.Unlock()
				}
				answered.Add(1)
			}
		})
	}
	for i := range 50 {
		cfg := configA
		if i%2 == 0 {
			cfg = configB
		}
		e.write(t, cfg)
		if err := e.r.Reload("test", false); err != nil {
			t.Errorf("reload %d: %v", i, err)
		}
		// Let traffic flow on this generation before the next reload.
		n := answered.Load()
		waitFor(t, "requests answered after a reload", func() bool { return answered.Load() >= n+10 })
	}
	close(stop)
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed during 50 reloads; first ones:\n%s", len(failures),
			answered.Load(), strings.Join(failures[:min(10, len(failures))], "\n"))
	}
	if ok, failed := e.r.Reloads(); ok != 50 || failed != 0 {
		t.Errorf("Reloads() = %d ok, %d failed; want 50, 0", ok, failed)
	}
	if g := e.r.State().Generation; g != 51 {
		t.Errorf("generation %d, want 51", g)
	}
	waitFor(t, "in-flight back to 0", func() bool {
		for _, s := range e.r.State().Sites {
			if s.Inflight != 0 {
				return false
			}
		}
		return true
	})
}

// The split's position survives a reload that keeps the site set: the 10 requests around a
// reload, at any point of the 5:3:2 cycle, are split 5:3:2 exactly.
func TestReloadKeepsSplitPosition(t *testing.T) {
	a, b, c := nameBackend(t, "idc1"), nameBackend(t, "idc2"), nameBackend(t, "aws")
	configA := threeSites(a.URL, b.URL, c.URL, 5, 3, 2, "")
	configB := threeSites(a.URL, b.URL, c.URL, 5, 3, 2, "timeouts: {idle: 80s}\n")
	e := startReloader(t, configA, runtime.ReloaderOptions{})
	for k := 1; k < 10; k++ {
		seen := map[string]int{}
		for range k {
			seen[e.mustGet(t, "/")]++
		}
		if k%2 == 1 {
			e.write(t, configB)
		} else {
			e.write(t, configA)
		}
		if err := e.r.Reload("test", false); err != nil {
			t.Fatalf("reload: %v", err)
		}
		for range 10 - k {
			seen[e.mustGet(t, "/")]++
		}
		if seen["idc1"] != 5 || seen["idc2"] != 3 || seen["aws"] != 2 {
			t.Errorf("reload after %d of 10 requests: split %v, want idc1 5, idc2 3, aws 2", k, seen)
		}
	}
}

// A request in flight across a reload stays counted (site and backend) and finishes; a
// backend's active health survives (a fresh start would have it down again).
func TestReloadKeepsInflightAndHealth(t *testing.T) {
	held := newCapBackend(t, "idc1", true)
	var probes atomic.Int64
	spare := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			probes.Add(1)
		}
		io.WriteString(w, "aws")
	})
	config := func(extra string) string {
		return fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 1, backends: [%q], max_inflight: 4}
  - name: aws
    weight: 0
    elastic: true
    backends: [%q]
    health: {path: /healthz, interval: 1s, rise: 1, fall: 3, initial: down}
retries: {attempts: 1}
%s`, held.url, spare.URL, extra)
	}
	e := startReloader(t, config(""), runtime.ReloaderOptions{})
	waitFor(t, "aws's backend to come up (initial: down, rise 1)", func() bool {
		return e.site(t, "aws").Backends[0].Up
	})

	answer := make(chan string, 1)
	go func() {
		status, body, err := e.send(http.MethodGet, "/held", nil)
		answer <- fmt.Sprintf("%d %s %v", status, body, err)
	}()
	await(t, held.arrived, "the request to reach idc1")
	before := e.site(t, "idc1")
	if before.Inflight != 1 || before.Backends[0].Inflight != 1 {
		t.Fatalf("before reload: idc1 in-flight %d, backend %d; want 1, 1", before.Inflight, before.Backends[0].Inflight)
	}

	e.write(t, config("timeouts: {idle: 80s}\n")) // a new transport for every site
	if err := e.r.Reload("test", false); err != nil {
		t.Fatalf("reload: %v", err)
	}
	after := e.site(t, "idc1")
	if after.Inflight != 1 || after.Backends[0].Inflight != 1 {
		t.Errorf("after reload: idc1 in-flight %d, backend %d; want 1, 1", after.Inflight, after.Backends[0].Inflight)
	}
	if aws := e.site(t, "aws"); !aws.Backends[0].Up || !aws.Backends[0].Healthy {
		t.Errorf("after reload aws's backend is %+v; its health (up) must survive the reload", aws.Backends[0])
	}
	held.release <- struct{}{}
	if got := await(t, answer, "the held request's answer"); got != "200 idc1 <nil>" {
		t.Errorf("the request in flight across the reload got %q, want 200 idc1", got)
	}
	waitFor(t, "idc1 in-flight back to 0", func() bool {
		s := e.site(t, "idc1")
		return s.Inflight == 0 && s.Backends[0].Inflight == 0
	})
}

// A learned (adaptive) limit survives a reload.
func TestReloadKeepsLearnedLimit(t *testing.T) {
	busy := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable) // an overload signal: the limit shrinks
	})
	config := func(extra string) string {
		return fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - name: idc1
    weight: 1
    backends: [%q]
    adaptive: {floor: 1, cap: 100, initial: 40}
retries: {attempts: 1}
outlier: {on_5xx: false} # 503s are its overload signal here, not failures to eject it for
%s`, busy.URL, extra)
	}
	e := startReloader(t, config(""), runtime.ReloaderOptions{})
	limit := func() int64 { return e.site(t, "idc1").Backends[0].Limit }
	if l := limit(); l != 40 {
		t.Fatalf("initial limit %d, want 40", l)
	}
	for i := 0; limit() == 40; i++ {
		if i == 1000 {
			t.Fatal("the limit did not move after 1000 overloaded answers")
		}
		if status, _, err := e.send(http.MethodGet, "/", nil); err != nil || status != http.StatusServiceUnavailable {
			t.Fatalf("GET: %d %v", status, err)
		}
	}
	learned := limit()
	e.write(t, config("timeouts: {idle: 80s}\n"))
	if err := e.r.Reload("test", false); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if l := limit(); l != learned {
		t.Errorf("limit %d after reload, want the learned %d", l, learned)
	}
}

// Operators' weights and drains survive reloads until cleared; the state shows which
// weights are overrides; an override of a site a reload removes is dropped.
func TestOverridesAndDrainsSurviveReload(t *testing.T) {
	a, b, c := nameBackend(t, "idc1"), nameBackend(t, "idc2"), nameBackend(t, "aws")
	e := startReloader(t, threeSites(a.URL, b.URL, c.URL, 5, 3, 2, ""), runtime.ReloaderOptions{})
	if err := e.r.SetWeight("idc2", 7, 0, "alice", false); err != nil {
		t.Fatal(err)
	}
	if err := e.r.SetDrained("aws", true, "bob"); err != nil {
		t.Fatal(err)
	}
	e.write(t, threeSites(a.URL, b.URL, c.URL, 6, 4, 2, ""))
	if err := e.r.Reload("test", false); err != nil {
		t.Fatal(err)
	}
	idc1, idc2, aws := e.site(t, "idc1"), e.site(t, "idc2"), e.site(t, "aws")
	if idc1.Weight != 6 || idc1.ConfiguredWeight != 6 || idc1.Override != nil {
		t.Errorf("idc1 after reload: weight %g, configured %d, override %+v; want 6, 6, none", idc1.Weight, idc1.ConfiguredWeight, idc1.Override)
	}
	if idc2.Weight != 7 || idc2.ConfiguredWeight != 4 || idc2.Override == nil || idc2.Override.Weight != 7 || idc2.Override.By != "alice" {
		t.Errorf("idc2 after reload: weight %g, configured %d, override %+v; want 7, 4, an override of 7 by alice", idc2.Weight, idc2.ConfiguredWeight, idc2.Override)
	}
	if !aws.Drained || aws.TargetShare != 0 {
		t.Errorf("aws after reload: drained %v, target share %g; want drained, 0", aws.Drained, aws.TargetShare)
	}
	if got, want := idc2.TargetShare, 7.0/13; got < want-1e-9 || got > want+1e-9 {
		t.Errorf("idc2 target share %g, want 7/13", got)
	}
	seen := map[string]int{}
	for range 130 {
		seen[e.mustGet(t, "/")]++
	}
	if seen["aws"] != 0 || seen["idc1"] < 58 || seen["idc1"] > 62 || seen["idc2"] < 68 || seen["idc2"] > 72 {
		t.Errorf("130 requests after reload went %v, want idc1 ~60, idc2 ~70, aws none (drained)", seen)
	}

	if err := e.r.ClearWeight("idc2", "alice"); err != nil {
		t.Fatal(err)
	}
	if err := e.r.SetDrained("aws", false, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := e.r.Reload("test", true); err != nil {
		t.Fatal(err)
	}
	idc2, aws = e.site(t, "idc2"), e.site(t, "aws")
	if idc2.Weight != 4 || idc2.Override != nil || aws.Drained {
		t.Errorf("after clearing and a reload: idc2 weight %g override %+v, aws drained %v; want 4, none, false", idc2.Weight, idc2.Override, aws.Drained)
	}
	changes := e.r.State().Changes
	var actions []string
	for _, c := range changes {
		actions = append(actions, c.Action+" "+c.Site+" by "+c.Who)
	}
	if got, want := strings.Join(actions, ", "), "reload  by test, undrain aws by bob, clear_weight idc2 by alice, reload  by test, drain aws by bob, weight idc2 by alice"; got != want {
		t.Errorf("changes (newest first): %s\nwant %s", got, want)
	}

	// A site the config drops loses its override and its drain; it comes back without them.
	if err := e.r.SetWeight("aws", 9, 0, "alice", false); err != nil {
		t.Fatal(err)
	}
	if err := e.r.SetDrained("aws", true, "bob"); err != nil {
		t.Fatal(err)
	}
	e.write(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 5, backends: [%q]}
  - {name: idc2, weight: 3, backends: [%q]}
`, a.URL, b.URL))
	if err := e.r.Reload("test", false); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.r.Site("aws"); ok {
		t.Fatal("aws still in the state after a reload without it")
	}
	if n := e.logs.FilterMessage("weight override dropped: the site is gone").Len(); n != 1 {
		t.Errorf("%d 'override dropped' log lines, want 1", n)
	}
	e.write(t, threeSites(a.URL, b.URL, c.URL, 5, 3, 2, ""))
	if err := e.r.Reload("test", false); err != nil {
		t.Fatal(err)
	}
	if aws := e.site(t, "aws"); aws.Weight != 2 || aws.Override != nil || aws.Drained {
		t.Errorf("aws back: weight %g override %+v drained %v; want 2, none, false", aws.Weight, aws.Override, aws.Drained)
	}
}

// A ramp moves the effective weight along a line from the weight in effect to the target,
// by the Reloader's clock; it survives a reload, and a new change mid-ramp starts from
// where the ramp was.
func TestWeightRampFollowsTheClock(t *testing.T) {
	a, b, c := nameBackend(t, "idc1"), nameBackend(t, "idc2"), nameBackend(t, "aws")
	clock := newTestClock()
	e := startReloader(t, threeSites(a.URL, b.URL, c.URL, 5, 3, 2, ""), runtime.ReloaderOptions{Now: clock.Now})
	weight := func() float64 { return e.site(t, "idc1").Weight }
	if err := e.r.SetWeight("idc1", 10, 10*time.Second, "alice", false); err != nil {
		t.Fatal(err)
	}
	if w := weight(); w != 5 {
		t.Errorf("weight %g at the ramp's start, want 5", w)
	}
	o := e.site(t, "idc1").Override
	if o == nil || o.Weight != 10 || o.Ramp != "10s" || o.By != "alice" {
		t.Errorf("override %+v, want weight 10, ramp 10s, by alice", o)
	}
	clock.advance(5 * time.Second)
	waitFor(t, "weight 7.5 half-way through the ramp", func() bool { return weight() == 7.5 })

	e.write(t, threeSites(a.URL, b.URL, c.URL, 5, 3, 2, "timeouts: {idle: 80s}\n"))
	if err := e.r.Reload("test", false); err != nil {
		t.Fatal(err)
	}
	if w := weight(); w != 7.5 {
		t.Errorf("weight %g right after a reload mid-ramp, want 7.5", w)
	}
	clock.advance(2500 * time.Millisecond)
	waitFor(t, "weight 8.75 three quarters through the ramp", func() bool { return weight() == 8.75 })

	// A new change mid-ramp starts from the weight in effect.
	if err := e.r.SetWeight("idc1", 5, 10*time.Second, "bob", false); err != nil {
		t.Fatal(err)
	}
	if w := weight(); w != 8.75 {
		t.Errorf("weight %g at the start of the second ramp, want 8.75", w)
	}
	clock.advance(10 * time.Second)
	waitFor(t, "the second ramp to end at 5", func() bool { return weight() == 5 })
	if o := e.site(t, "idc1").Override; o == nil || o.Weight != 5 {
		t.Errorf("override after the ramp %+v, want weight 5 until cleared", o)
	}
	var ch []runtime.Change
	for _, c := range e.r.State().Changes {
		if c.Action == "weight" {
			ch = append(ch, c)
		}
	}
	if len(ch) != 2 || ch[0].Before != "8.75" || !strings.HasPrefix(ch[0].After, "5 (ramp 10s)") || ch[1].Before != "5" {
		t.Errorf("changes %+v, want the second ramp from 8.75 to 5 (ramp 10s), the first from 5", ch)
	}
}

// Runtime changes are checked: unknown sites, weights out of range, ramps out of range, and
// a change that would leave no site in the split are refused and change nothing. Each
// refusal is in the audit trail as a refused attempt with its reason.
func TestRuntimeChangesAreChecked(t *testing.T) {
	a, b := nameBackend(t, "idc1"), nameBackend(t, "aws")
	e := startReloader(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 5, backends: [%q]}
  - {name: aws, weight: 0, backends: [%q], elastic: true}
`, a.URL, b.URL), runtime.ReloaderOptions{})
	for _, tc := range []struct {
		name string
		do   func() error
		want error
	}{
		{"unknown site weight", func() error { return e.r.SetWeight("nope", 1, 0, "t", false) }, runtime.ErrNoSite},
		{"unknown site clear", func() error { return e.r.ClearWeight("nope", "t") }, runtime.ErrNoSite},
		{"unknown site drain", func() error { return e.r.SetDrained("nope", true, "t") }, runtime.ErrNoSite},
		{"negative weight", func() error { return e.r.SetWeight("idc1", -1, 0, "t", false) }, runtime.ErrInvalid},
		{"weight too big", func() error { return e.r.SetWeight("idc1", configs.MaxWeight+1, 0, "t", false) }, runtime.ErrInvalid},
		{"negative ramp", func() error { return e.r.SetWeight("idc1", 1, -time.Second, "t", false) }, runtime.ErrInvalid},
		{"ramp too long", func() error { return e.r.SetWeight("idc1", 1, 2*time.Hour, "t", false) }, runtime.ErrInvalid},
		{"every weight 0", func() error { return e.r.SetWeight("idc1", 0, 0, "t", false) }, runtime.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
	if s := e.site(t, "idc1"); s.Weight != 5 || s.Override != nil || s.Drained {
		t.Errorf("idc1 after refused changes: %+v", s)
	}
	changes := e.r.State().Changes
	if len(changes) != 8 {
		t.Errorf("%d changes recorded for 8 refused changes: %+v", len(changes), changes)
	}
	for _, c := range changes {
		if c.Result != "refused" || c.Reason == "" || c.Who != "t" {
			t.Errorf("entry %+v, want a refused attempt by t with its reason", c)
		}
	}
	if len(changes) > 0 && (changes[0].Action != "weight" || !strings.Contains(changes[0].Reason, "every site would have weight 0")) {
		t.Errorf("newest entry %+v, want the refused weight 0 with its reason", changes[0])
	}
	if n := e.audit.Len(); n != 8 {
		t.Errorf("%d audit log lines for 8 refused changes", n)
	}
}

// watchEnv runs the Reloader's Watch until the test ends.
func (e *rlEnv) watch(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.r.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
}

// retrying repeats change until cond holds: the watch starts asynchronously, so a change
// made before it watches is not seen; making the change again (same content) is harmless.
func retrying(t *testing.T, what string, change func(), cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(liveness)
	for {
		change()
		next := time.Now().Add(time.Second)
		for time.Now().Before(next) {
			if cond() {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", liveness, what)
		}
	}
}

// replaceByRename writes content to a new file in path's directory and renames it over
// path, as editors and config management do.
func replaceByRename(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// The watched config file reloads when an editor replaces it by rename, when a Kubernetes
// ConfigMap volume swaps its ..data symlink, and once after a burst of writes; a bad file
// is refused and the running config stays.
func TestWatchReloadsTheConfigFile(t *testing.T) {
	a, b, c := nameBackend(t, "idc1"), nameBackend(t, "idc2"), nameBackend(t, "aws")
	withIDC1 := func(w int) string { return threeSites(a.URL, b.URL, c.URL, w, 3, 2, "") }

	t.Run("rename", func(t *testing.T) {
		e := startReloader(t, withIDC1(5), runtime.ReloaderOptions{})
		e.watch(t)
		retrying(t, "the renamed file to load", func() { replaceByRename(t, e.path, withIDC1(6)) },
			func() bool { return e.site(t, "idc1").Weight == 6 })
		if g := e.r.State().Generation; g != 2 {
			t.Errorf("generation %d, want 2", g)
		}
		if m := e.logs.FilterMessage("config reloaded").All(); len(m) != 1 || m[0].ContextMap()["source"] != "file" {
			t.Errorf("reload log entries %v, want one with source file", m)
		}
	})

	t.Run("configmap symlink swap", func(t *testing.T) {
		dir := t.TempDir()
		n := 0
		publish := func(content string) {
			n++
			ts := filepath.Join(dir, fmt.Sprintf("..2026_11_25_%d", n))
			if err := os.Mkdir(ts, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(ts, "spillway.yaml"), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			tmp := filepath.Join(dir, "..data_tmp")
			if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
			if n > 1 { // the kubelet removes the previous version
				if err := os.RemoveAll(filepath.Join(dir, fmt.Sprintf("..2026_11_25_%d", n-1))); err != nil {
					t.Fatal(err)
				}
			}
		}
		publish(withIDC1(5))
		path := filepath.Join(dir, "spillway.yaml")
		if err := os.Symlink(filepath.Join("..data", "spillway.yaml"), path); err != nil {
			t.Fatal(err)
		}
		e := startReloader(t, "", runtime.ReloaderOptions{Path: path})
		e.watch(t)
		retrying(t, "the swapped ConfigMap to load", func() { publish(withIDC1(7)) },
			func() bool { return e.site(t, "idc1").Weight == 7 })
		// The next update is seen too, although the directory the link pointed into at
		// start is gone.
		publish(withIDC1(8))
		waitFor(t, "the second swap to load", func() bool { return e.site(t, "idc1").Weight == 8 })
		if _, failed := e.r.Reloads(); failed != 0 {
			t.Errorf("%d failed reloads, want 0", failed)
		}
	})

	t.Run("burst settles into one reload", func(t *testing.T) {
		e := startReloader(t, withIDC1(5), runtime.ReloaderOptions{})
		e.watch(t)
		retrying(t, "the watch to work", func() { replaceByRename(t, e.path, withIDC1(6)) },
			func() bool { return e.site(t, "idc1").Weight == 6 })
		okBefore, _ := e.r.Reloads()
		// An in-place save in pieces: each write leaves a half-written file for a moment.
		final := withIDC1(9)
		f, err := os.OpenFile(e.path, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		piece := len(final)/3 + 1
		for i := 0; i < len(final); i += piece {
			if _, err := f.WriteString(final[i:min(i+piece, len(final))]); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the saved file to load", func() bool { return e.site(t, "idc1").Weight == 9 })
		ok, failed := e.r.Reloads()
		if failed != 0 || ok-okBefore != 1 {
			t.Errorf("a save in 3 writes made %d reloads and %d failures, want 1 and 0", ok-okBefore, failed)
		}
	})

	t.Run("bad file refused", func(t *testing.T) {
		e := startReloader(t, withIDC1(5), runtime.ReloaderOptions{})
		e.watch(t)
		retrying(t, "the refusal", func() { replaceByRename(t, e.path, strings.Replace(withIDC1(5), "weight: 3", "weight: -3", 1)) },
			func() bool { _, failed := e.r.Reloads(); return failed >= 1 })
		if g := e.r.State().Generation; g != 1 {
			t.Errorf("generation %d after a refused file, want 1", g)
		}
		if w := e.site(t, "idc2").Weight; w != 3 {
			t.Errorf("idc2 weight %g after a refused file, want 3", w)
		}
		if body := e.mustGet(t, "/"); body == "" {
			t.Error("no answer after a refused file")
		}
		re := regexp.MustCompile(regexp.QuoteMeta(e.path) + `:\d+:\d+: sites\[1\]\.weight`)
		found := false
		for _, entry := range e.logs.FilterMessage("config refused; the running config stays").All() {
			s, _ := entry.ContextMap()["error"].(string)
			found = found || re.MatchString(s)
		}
		if !found {
			t.Errorf("no refusal logged with the problem's file:line; logs: %v", e.logs.All())
		}
		// One line per refused reload: the watch does not log the refusal a second time.
		_, failed := e.r.Reloads()
		if n := e.logs.FilterMessage("config refused; the running config stays").Len(); int64(n) != int64(failed) || e.logs.FilterMessage("the changed config file was refused").Len() != 0 {
			t.Errorf("%d refusal lines for %d refused reloads, want one each; logs: %v", n, failed, e.logs.All())
		}
	})
}

// A persisted weight whose reload is refused (here by a Check, as `spillway run` refuses a
// file that moves a listener) must not be reported as done while the running config says
// otherwise: either SetWeight fails, or the weight in effect stays marked as an override.
func TestPersistedWeightWhoseReloadIsRefused(t *testing.T) {
	a, b, c := nameBackend(t, "idc1"), nameBackend(t, "idc2"), nameBackend(t, "aws")
	sameListen := func(cfg *configs.Config) error {
		if cfg.Listen.HTTP != "127.0.0.1:0" {
			return configs.Errors{cfg.Errorf("listen", "the listeners are opened at start")}
		}
		return nil
	}
	good := threeSites(a.URL, b.URL, c.URL, 5, 3, 2, "")
	e := startReloader(t, good, runtime.ReloaderOptions{Checks: []configs.Check{sameListen}})
	// An edit waiting for a restart: the file moves the listener.
	e.write(t, strings.Replace(good, `"127.0.0.1:0"`, `"127.0.0.1:1"`, 1))
	if err := e.r.Reload("file", false); err == nil {
		t.Fatal("the Check did not refuse the moved listener")
	}

	// The file with the weight changed would be refused too: persist refuses it, and
	// nothing changes.
	before, _ := os.ReadFile(e.path)
	err := e.r.SetWeight("idc2", 12, 0, "alice", true)
	if !errors.Is(err, runtime.ErrInvalid) {
		t.Fatalf("SetWeight(persist) on a file a reload would refuse: %v, want ErrInvalid", err)
	}
	if s := e.site(t, "idc2"); s.Weight != 3 || s.Override != nil {
		t.Errorf("a refused persist changed idc2: weight %g, override %+v", s.Weight, s.Override)
	}
	if after, _ := os.ReadFile(e.path); string(after) != string(before) {
		t.Error("a refused persist changed the file")
	}
}

// A reload refused after Build (here: its access log cannot be opened) must leave the
// running generation's state alone. Build of a config whose site has no health checks
// marks that site's known-down backends up in the shared Registry; if the config is then
// refused, the running health monitor (which reports only transitions) still thinks the
// backend is down and never marks it down again.
func TestRefusedReloadKeepsBackendHealth(t *testing.T) {
	var probes atomic.Int64
	dead := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			probes.Add(1)
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	good := nameBackend(t, "idc2")
	config := func(health, extra string) string {
		return fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - name: idc1
    weight: 1
    backends: [%q]
%s  - {name: idc2, weight: 1, backends: [%q]}
retries: {attempts: 1}
%s`, dead.URL, health, good.URL, extra)
	}
	withHealth := "    health: {path: /healthz, interval: 20ms, timeout: 20ms, fall: 1, rise: 1}\n"
	e := startReloader(t, config(withHealth, ""), runtime.ReloaderOptions{})
	up := func() bool { return e.site(t, "idc1").Backends[0].Up }
	waitFor(t, "idc1's backend to be marked down", func() bool { return !up() })

	unopenable := filepath.Join(t.TempDir(), "missing-dir", "access.log")
	e.write(t, config("", fmt.Sprintf("access_log: {output: %q}\n", unopenable)))
	if err := e.r.Reload("test", false); err == nil {
		t.Fatal("a config whose access log cannot be opened was accepted")
	}
	if g := e.r.State().Generation; g != 1 {
		t.Fatalf("generation %d after a refused reload, want 1", g)
	}
	n := probes.Load()
	waitFor(t, "three more probes of the running generation", func() bool { return probes.Load() >= n+3 })
	if up() {
		t.Errorf("after a refused reload idc1's backend, whose probes fail, is up in the running " +
			"generation (Build of the refused config marked it up; proxy/table.go Build, \"Its site no longer has health checks\")")
	}
}

// A drained site takes no new requests, not even spillover: with the preferred site full
// and the elastic site drained, a request is shed; undrained, the elastic site takes it.
func TestDrainedSiteTakesNoSpillover(t *testing.T) {
	idc1 := newCapBackend(t, "idc1", true)
	aws := nameBackend(t, "aws")
	e := startReloader(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 1, backends: [%q], max_inflight: 1}
  - {name: aws, weight: 0, backends: [%q], elastic: true}
spillover: {queue: {size: 0, timeout: 1s}}
retries: {attempts: 1}
`, idc1.url, aws.URL), runtime.ReloaderOptions{})
	if err := e.r.SetDrained("aws", true, "ops"); err != nil {
		t.Fatal(err)
	}
	held := make(chan int, 1)
	go func() {
		status, _, _ := e.send(http.MethodGet, "/held", nil)
		held <- status
	}()
	await(t, idc1.arrived, "the request at idc1")
	if status, body, err := e.send(http.MethodGet, "/excess", nil); err != nil || status != http.StatusServiceUnavailable {
		t.Errorf("excess request with aws drained: %d %q %v, want 503 (no spillover to a drained site)", status, body, err)
	}
	if err := e.r.SetDrained("aws", false, "ops"); err != nil {
		t.Fatal(err)
	}
	if body := e.mustGet(t, "/excess"); body != "aws" {
		t.Errorf("excess request with aws undrained went to %q, want aws", body)
	}
	idc1.release <- struct{}{}
	if s := await(t, held, "the held answer"); s != http.StatusOK {
		t.Errorf("held request: %d", s)
	}
}

// The state's live share follows the split and matches the target share.
func TestStateShowsLiveShareAgainstTarget(t *testing.T) {
	a, b, c := nameBackend(t, "idc1"), nameBackend(t, "idc2"), nameBackend(t, "aws")
	var offset atomic.Int64 // the clock runs ahead by this, to read the share at once
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	rec := &tally{}
	e := startReloader(t, threeSites(a.URL, b.URL, c.URL, 5, 3, 2, ""),
		runtime.ReloaderOptions{Now: now, Recorders: []proxy.Recorder{rec}})
	for range 100 {
		e.mustGet(t, "/")
	}
	waitFor(t, "100 requests recorded", func() bool { return rec.n.Load() == 100 })
	offset.Store(int64(2 * time.Second))
	st := e.r.State()
	for i, want := range []float64{0.5, 0.3, 0.2} {
		s := st.Sites[i]
		if s.Share != want || s.TargetShare != want {
			t.Errorf("%s: share %g, target %g; want both %g", s.Name, s.Share, s.TargetShare, want)
		}
		if s.Rates.Requests != want*100/10 {
			t.Errorf("%s: %g requests/s over 10 s, want %g", s.Name, s.Rates.Requests, want*100/10)
		}
	}
	if st.Rates.Requests != 10 || st.Rates.Shed != 0 {
		t.Errorf("total rates %+v, want 10 requests/s and no shed", st.Rates)
	}
	var answered int64
	for _, p := range st.History {
		for _, n := range p.Answers {
			answered += n
		}
	}
	if answered != 100 {
		t.Errorf("history counts %d answers, want 100", answered)
	}
}
