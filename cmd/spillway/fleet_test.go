package main

// Tests of a fleet (issue 15): several `spillway run` replicas on loopback sharing one real
// etcd (embedded), with backends that count what they have in flight, so that the fleet's
// promise — the sum in flight at a backend never exceeds its limit — is measured where it
// matters: at the backend.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/cluster/clustertest"
	"github.com/spillway/spillway/proxy/proxytest"
)

// countingBackend is a backend that holds each request for delay and records the most
// requests it had at once.
type countingBackend struct {
	srv            *httptest.Server
	now, peak, all atomic.Int64
	delay          atomic.Int64 // nanoseconds
}

// countingBackends starts a counting backend for each of the fleet config's three sites,
// each answering after delay.
func countingBackends(t *testing.T, delay time.Duration) (bs [3]*countingBackend) {
	for i := range bs {
		bs[i] = newCountingBackend(t, delay)
	}
	return bs
}

func newCountingBackend(t *testing.T, delay time.Duration) *countingBackend {
	b := &countingBackend{}
	b.delay.Store(int64(delay))
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := b.now.Add(1)
		defer b.now.Add(-1)
		for p := b.peak.Load(); n > p && !b.peak.CompareAndSwap(p, n); p = b.peak.Load() {
		}
		b.all.Add(1)
		time.Sleep(time.Duration(b.delay.Load()))
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(b.srv.Close)
	return b
}

const fleetLimit = 6 // max_inflight of every backend: the fleet's budget

func fleetConfig(node string, endpoints []string, backends [3]*countingBackend, extra string) string {
	eps, _ := json.Marshal(endpoints)
	return fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 5, backends: [%q], max_inflight: %d}
  - {name: idc2, weight: 3, backends: [%q], max_inflight: %d}
  - {name: aws, weight: 2, elastic: true, backends: [%q], max_inflight: %d}
spillover: {queue: {size: 10000, timeout: 20s}}
retries: {attempts: 1}
timeouts: {shutdown: 30s}
cluster: {name: test, node: %s, lease: 2s, etcd: {endpoints: %s}}
%s`, backends[0].srv.URL, fleetLimit, backends[1].srv.URL, fleetLimit, backends[2].srv.URL, fleetLimit, node, eps, extra)
}

// fleetState is what these tests read of GET /api/v1/state.
type fleetState struct {
	Cluster *struct {
		Name    string   `json:"name"`
		Node    string   `json:"node"`
		Members []string `json:"members"`
		Store   string   `json:"store"`
		Joined  bool     `json:"joined"`
	} `json:"cluster"`
	Sites []struct {
		Name     string  `json:"name"`
		Weight   float64 `json:"weight"`
		Drained  bool    `json:"drained"`
		Backends []struct {
			Limit int64 `json:"limit"`
		} `json:"backends"`
	} `json:"sites"`
}

func (r *opsRun) fleetState(t *testing.T) fleetState {
	t.Helper()
	status, body := r.call(http.MethodGet, r.admin+"/api/v1/state", "", "")
	if status != http.StatusOK {
		t.Fatalf("GET state: %d %s", status, body)
	}
	var st fleetState
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// load sends requests through the replicas from n clients until stop is closed, and counts
// the answers by status.
type load struct {
	wg    sync.WaitGroup
	stop  chan struct{}
	codes sync.Map // int → *atomic.Int64
}

func startLoad(t *testing.T, n int, targets func() []*opsRun) *load {
	l := &load{stop: make(chan struct{})}
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	for i := range n {
		l.wg.Go(func() {
			for k := 0; ; k++ {
				select {
				case <-l.stop:
					return
				default:
				}
				rs := targets()
				r := rs[(i+k)%len(rs)]
				code := 0
				if resp, err := client.Get(r.proxy + "/x"); err == nil {
					code = resp.StatusCode
					resp.Body.Close()
				}
				c, _ := l.codes.LoadOrStore(code, new(atomic.Int64))
				c.(*atomic.Int64).Add(1)
			}
		})
	}
	t.Cleanup(l.end)
	return l
}

func (l *load) end() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

func (l *load) String() string {
	var parts []string
	l.codes.Range(func(k, v any) bool {
		parts = append(parts, fmt.Sprintf("%v: %d", k, v.(*atomic.Int64).Load()))
		return true
	})
	return strings.Join(parts, ", ")
}

// Three replicas on one etcd: they split traffic 5:3:2 together; under overload no backend
// ever has more than its max_inflight in flight, counted at the backend, also while a fourth
// replica joins and one leaves; each replica enforces its share (6 among 3: 2 each).
func TestFleetSharesLimitsAcrossReplicas(t *testing.T) {
	t.Setenv("SPILLWAY_ADMIN_TOKEN", "")
	etcd := clustertest.Start(t, 1)
	backends := countingBackends(t, 0)
	var mu sync.Mutex
	var replicas []*opsRun
	for i := range 3 {
		replicas = append(replicas, startRun(t, opsWriteConfig(t, fleetConfig(fmt.Sprintf("r%d", i), etcd.Endpoints(), backends, ""))))
	}
	targets := func() []*opsRun { mu.Lock(); defer mu.Unlock(); return append([]*opsRun(nil), replicas...) }
	proxytest.Eventually(t, 30*time.Second, "every replica sees 3 members and holds 2 of each limit of 6", func() bool {
		for _, r := range replicas {
			st := r.fleetState(t)
			if st.Cluster == nil || len(st.Cluster.Members) != 3 || !st.Cluster.Joined || st.Cluster.Store != "up" {
				return false
			}
			for _, s := range st.Sites {
				if s.Backends[0].Limit != fleetLimit/3 {
					return false
				}
			}
		}
		return true
	})

	// The split: one request at a time through each replica, in turn.
	for range 100 {
		for _, r := range replicas {
			if status, body := r.call(http.MethodGet, r.proxy+"/split", "", ""); status != http.StatusOK {
				t.Fatalf("GET through %s: %d %s", r.proxy, status, body)
			}
		}
	}
	got := [3]int64{backends[0].all.Load(), backends[1].all.Load(), backends[2].all.Load()}
	if got != [3]int64{150, 90, 60} {
		t.Fatalf("300 requests through 3 replicas went %v to idc1, idc2, aws; want 150, 90, 60 (5:3:2)", got)
	}

	// Overload: 60 clients, backends that take 20 ms each.
	for _, b := range backends {
		b.delay.Store(int64(20 * time.Millisecond))
		b.peak.Store(0)
	}
	l := startLoad(t, 60, targets)
	proxytest.Eventually(t, 30*time.Second, "the backends are full", func() bool {
		for _, b := range backends {
			if b.all.Load() < 300+200 {
				return false
			}
		}
		return true
	})

	// A fourth replica joins under load, then the first leaves.
	r3 := startRun(t, opsWriteConfig(t, fleetConfig("r3", etcd.Endpoints(), backends, "")))
	proxytest.Eventually(t, 30*time.Second, "4 members, r3 joined", func() bool {
		st := r3.fleetState(t)
		return st.Cluster != nil && st.Cluster.Joined && len(st.Cluster.Members) == 4
	})
	mu.Lock()
	replicas = append(replicas, r3)
	mu.Unlock()
	before := backends[0].all.Load()
	proxytest.Eventually(t, 30*time.Second, "r3 takes traffic", func() bool { return backends[0].all.Load() > before+100 })
	mu.Lock()
	leaving := replicas[0]
	replicas = replicas[1:]
	mu.Unlock()
	leaving.cancel()
	select {
	case err := <-leaving.done:
		leaving.done <- err
	case <-time.After(60 * time.Second):
		t.Fatal("r0 did not stop")
	}
	proxytest.Eventually(t, 30*time.Second, "3 members again, holding 2 of each limit of 6", func() bool {
		for _, r := range targets() {
			st := r.fleetState(t)
			if len(st.Cluster.Members) != 3 || st.Sites[0].Backends[0].Limit != 2 {
				return false
			}
		}
		return true
	})
	before = backends[0].all.Load()
	proxytest.Eventually(t, 30*time.Second, "traffic goes on", func() bool { return backends[0].all.Load() > before+100 })
	l.end()
	for i, b := range backends {
		t.Logf("backend %d: peak %d in flight, %d requests", i, b.peak.Load(), b.all.Load())
		if p := b.peak.Load(); p > fleetLimit {
			t.Errorf("backend %d had %d requests in flight at once; the fleet's limit is %d", i, p, fleetLimit)
		}
	}
	t.Logf("answers: %s", l)
}

// overrideOf reads a site's override from the state API (nil: none).
type overrideView struct {
	Weight int        `json:"weight"`
	Since  time.Time  `json:"since"`
	Until  *time.Time `json:"until"`
}

func (r *opsRun) site(t *testing.T, name string) (weight float64, drained bool, o *overrideView) {
	t.Helper()
	status, body := r.call(http.MethodGet, r.admin+"/api/v1/state", "", "")
	if status != http.StatusOK {
		t.Fatalf("GET state: %d %s", status, body)
	}
	var st struct {
		Sites []struct {
			Name     string        `json:"name"`
			Weight   float64       `json:"weight"`
			Drained  bool          `json:"drained"`
			Override *overrideView `json:"override"`
		} `json:"sites"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Sites {
		if s.Name == name {
			return s.Weight, s.Drained, s.Override
		}
	}
	t.Fatalf("no site %s", name)
	return 0, false, nil
}

// A weight with a ramp and a drain made through one replica apply on the others (a ramp with
// the same start and end everywhere), and are there for a replica that starts later; the
// audit trail is the fleet's.
func TestFleetPropagatesRuntimeChanges(t *testing.T) {
	t.Setenv("SPILLWAY_ADMIN_TOKEN", opsToken)
	etcd := clustertest.Start(t, 1)
	backends := countingBackends(t, 0)
	rs := startReplicas(t, 3, etcd.Endpoints(), backends)
	if status, body := rs[0].call(http.MethodPut, rs[0].admin+"/api/v1/sites/idc1/weight", opsToken, `{"weight":9,"ramp":"1h"}`); status != http.StatusOK {
		t.Fatalf("PUT weight through r0: %d %s", status, body)
	}
	if status, body := rs[1].call(http.MethodPost, rs[1].admin+"/api/v1/sites/idc2/drain", opsToken, ""); status != http.StatusOK {
		t.Fatalf("drain through r1: %d %s", status, body)
	}
	_, _, want := rs[0].site(t, "idc1")
	if want == nil || want.Until == nil {
		t.Fatalf("r0 shows no ramping override after the change: %+v", want)
	}
	same := func(r *opsRun) bool {
		_, drained, o := r.site(t, "idc2")
		_, _, o1 := r.site(t, "idc1")
		return drained && o == nil && o1 != nil && o1.Weight == 9 && o1.Until != nil &&
			o1.Since.Equal(want.Since) && o1.Until.Equal(*want.Until)
	}
	proxytest.Eventually(t, 10*time.Second, "every replica has the override (same ramp) and the drain", func() bool {
		for _, r := range rs {
			if !same(r) {
				return false
			}
		}
		return true
	})
	late := startRun(t, opsWriteConfig(t, fleetConfig("r3", etcd.Endpoints(), backends, "")))
	if !same(late) {
		w, d, o := late.site(t, "idc1")
		t.Fatalf("a replica that starts later does not have the fleet's state: idc1 %v %v %+v, %v", w, d, o, d)
	}
	status, body := late.call(http.MethodGet, late.admin+"/api/v1/changes", "", "")
	var trail struct {
		Changes []struct {
			Node   string `json:"node"`
			Action string `json:"action"`
		} `json:"changes"`
	}
	if err := json.Unmarshal([]byte(body), &trail); status != http.StatusOK || err != nil {
		t.Fatalf("the fleet's trail, read through r3: %d %v %s", status, err, body)
	}
	nodes := map[string]string{}
	for _, c := range trail.Changes {
		nodes[c.Action] = c.Node
	}
	if nodes["weight"] != "r0" || nodes["drain"] != "r1" {
		t.Fatalf("the fleet's trail, read through r3, has the changes by %v; want weight by r0 and drain by r1:\n%s", nodes, body)
	}
	// Undrain through the late one: the others follow.
	if status, body := late.call(http.MethodPost, late.admin+"/api/v1/sites/idc2/undrain", opsToken, ""); status != http.StatusOK {
		t.Fatalf("undrain through r3: %d %s", status, body)
	}
	proxytest.Eventually(t, 10*time.Second, "every replica has idc2 back", func() bool {
		for _, r := range rs {
			if _, drained, _ := r.site(t, "idc2"); drained {
				return false
			}
		}
		return true
	})
}

// metric reads one unlabelled metric's value from a replica's /metrics.
func (r *opsRun) metric(t *testing.T, name string) string {
	t.Helper()
	status, body := r.call(http.MethodGet, r.admin+"/metrics", "", "")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d", status)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// etcd stopped: every replica keeps serving with the state and shares it had, refuses
// changes with 503 saying why, and reports the store down; etcd back: it recovers alone.
func TestFleetFailStatic(t *testing.T) {
	t.Setenv("SPILLWAY_ADMIN_TOKEN", opsToken)
	etcd := clustertest.Start(t, 1)
	backends := countingBackends(t, 0)
	rs := startReplicas(t, 2, etcd.Endpoints(), backends)
	if status, body := rs[0].call(http.MethodPost, rs[0].admin+"/api/v1/sites/idc2/drain", opsToken, ""); status != http.StatusOK {
		t.Fatalf("drain: %d %s", status, body)
	}
	proxytest.Eventually(t, 10*time.Second, "both have the drain and 2 members", func() bool {
		for _, r := range rs {
			if _, d, _ := r.site(t, "idc2"); !d || r.metric(t, "spillway_cluster_members") != "2" || r.metric(t, "spillway_cluster_store_up") != "1" {
				return false
			}
		}
		return true
	})

	etcd.Stop()
	t.Log("etcd stopped", time.Now().Format("15:04:05.000"))
	proxytest.Eventually(t, 20*time.Second, "store_up 0 on both", func() bool {
		return rs[0].metric(t, "spillway_cluster_store_up") == "0" && rs[1].metric(t, "spillway_cluster_store_up") == "0"
	})
	for _, r := range rs {
		if st := r.fleetState(t); st.Cluster.Store != "unavailable" || st.Sites[0].Backends[0].Limit != fleetLimit/2 {
			t.Fatalf("state with etcd down: %+v, want store unavailable and the share (3) kept", st)
		}
		if _, d, _ := r.site(t, "idc2"); !d {
			t.Fatal("the drain was lost with etcd down")
		}
		for range 20 {
			if status, body := r.call(http.MethodGet, r.proxy+"/x", "", ""); status != http.StatusOK {
				t.Fatalf("GET through a replica with etcd down: %d %s", status, body)
			}
		}
		status, body := r.call(http.MethodPut, r.admin+"/api/v1/sites/idc1/weight", opsToken, `{"weight":1}`)
		if status != http.StatusServiceUnavailable || !strings.Contains(body, "unavailable") {
			t.Fatalf("a change with etcd down: %d %s, want 503 saying the store is unavailable", status, body)
		}
		if w, _, _ := r.site(t, "idc1"); w != 5 {
			t.Fatalf("the refused change applied: idc1 weight %v", w)
		}
	}
	if backends[1].all.Load() != 0 {
		t.Fatalf("the drained site got %d requests", backends[1].all.Load())
	}
	time.Sleep(3 * time.Second) // longer than the lease: nothing expires while etcd is down
	if st := rs[0].fleetState(t); len(st.Cluster.Members) != 2 || st.Sites[0].Backends[0].Limit != fleetLimit/2 {
		t.Fatalf("with etcd down for longer than the lease: %+v", st)
	}

	t.Log("etcd restarting", time.Now().Format("15:04:05.000"))
	etcd.Restart()
	t.Log("etcd restarted", time.Now().Format("15:04:05.000"))
	proxytest.Eventually(t, 30*time.Second, "store_up 1 on both", func() bool {
		return rs[0].metric(t, "spillway_cluster_store_up") == "1" && rs[1].metric(t, "spillway_cluster_store_up") == "1"
	})
	if status, body := rs[1].call(http.MethodPost, rs[1].admin+"/api/v1/sites/idc2/undrain", opsToken, ""); status != http.StatusOK {
		t.Fatalf("undrain once etcd is back: %d %s", status, body)
	}
	proxytest.Eventually(t, 10*time.Second, "both have idc2 back", func() bool {
		_, d0, _ := rs[0].site(t, "idc2")
		_, d1, _ := rs[1].site(t, "idc2")
		return !d0 && !d1
	})
	rs[0].log.wait(t, "cluster store unavailable: serving with the last state and shares; runtime changes are refused until it is back")
	rs[0].log.wait(t, "cluster store reachable again: runtime changes accepted")
}

// timeouts.drain_delay: on stop, /readyz turns 503 while the proxy's listener still serves
// for that long, so that load balancers stop sending first; then the stop goes on.
func TestRunDrainDelay(t *testing.T) {
	t.Setenv("SPILLWAY_ADMIN_TOKEN", "")
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	defer backend.Close()
	r := startRun(t, opsWriteConfig(t, strings.Replace(opsConfig(backend.URL, 1, 1, ""), "{shutdown: 30s}", "{shutdown: 30s, drain_delay: 2s}", 1)))
	if status, _ := r.call(http.MethodGet, r.admin+"/readyz", "", ""); status != http.StatusOK {
		t.Fatalf("/readyz before the stop: %d", status)
	}
	r.cancel()
	r.log.wait(t, "not ready; draining before the listeners close")
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: opsLiveness}
	resp, err := fresh.Get(r.admin + "/readyz")
	if err != nil {
		t.Fatalf("/readyz during the drain delay: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz during the drain delay: %d, want 503", resp.StatusCode)
	}
	resp, err = fresh.Get(r.proxy + "/still")
	if err != nil {
		t.Fatalf("a request during the drain delay: %v (the listener must still serve)", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a request during the drain delay: %d", resp.StatusCode)
	}
	if r.log.find("stopped") != nil {
		t.Fatal("stopped before the drain delay was over")
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("run returned %v", err)
		}
		r.done <- err
	case <-time.After(opsLiveness):
		t.Fatal("run did not stop after the drain delay")
	}
	r.log.wait(t, "stopped")
}

// shares: demand — a replica that gets more of the traffic gets more of each limit, and the
// fleet still never puts more than a backend's limit in flight at it.
func TestFleetDemandSharesAcrossReplicas(t *testing.T) {
	t.Setenv("SPILLWAY_ADMIN_TOKEN", "")
	etcd := clustertest.Start(t, 1)
	backends := countingBackends(t, 20*time.Millisecond)
	var rs []*opsRun
	for i := range 3 {
		cfg := strings.Replace(fleetConfig(fmt.Sprintf("r%d", i), etcd.Endpoints(), backends, ""), "lease: 2s,", "lease: 2s, shares: demand,", 1)
		rs = append(rs, startRun(t, opsWriteConfig(t, cfg)))
	}
	// r0 gets three requests in five.
	l := startLoad(t, 60, func() []*opsRun { return []*opsRun{rs[0], rs[1], rs[0], rs[2], rs[0]} })
	limitOf := func(r *opsRun) int64 { return r.fleetState(t).Sites[0].Backends[0].Limit }
	proxytest.Eventually(t, 30*time.Second, "r0 holds more of idc1's limit than r2, and the three hold all of it", func() bool {
		a, b, c := limitOf(rs[0]), limitOf(rs[1]), limitOf(rs[2])
		return a > c && a+b+c == fleetLimit
	})
	l.end()
	for i, b := range backends {
		t.Logf("backend %d: peak %d in flight, %d requests", i, b.peak.Load(), b.all.Load())
		if p := b.peak.Load(); p > fleetLimit {
			t.Errorf("backend %d had %d requests in flight at once; the fleet's limit is %d", i, p, fleetLimit)
		}
	}
}

// A replica that cannot reach its fleet's etcd at start does not start (it has no state
// to serve with: a drain it missed would put a site back into rotation), and says why.
func TestRunWithoutEtcdDoesNotStart(t *testing.T) {
	t.Setenv("SPILLWAY_ADMIN_TOKEN", "")
	ln := must(net.Listen("tcp", "127.0.0.1:0"))
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	path := opsWriteConfig(t, opsConfig("http://127.0.0.1:9", 1, 1, fmt.Sprintf("cluster: {name: test, node: r0, etcd: {endpoints: [%q]}}\n", dead)))
	var stderr bytes.Buffer
	err := run(t.Context(), []string{"run", "-config", path}, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error()+stderr.String(), "etcd did not answer within") {
		t.Fatalf("run without etcd: %v\n%s", err, stderr.String())
	}
}

// startReplicas starts n replicas r0, r1, … of the fleet on endpoints, each with its own
// config file naming backends.
func startReplicas(t *testing.T, n int, endpoints []string, backends [3]*countingBackend) []*opsRun {
	t.Helper()
	rs := make([]*opsRun, n)
	for i := range rs {
		rs[i] = startRun(t, opsWriteConfig(t, fleetConfig(fmt.Sprintf("r%d", i), endpoints, backends, "")))
	}
	return rs
}
