package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/health"
	"github.com/spillway/spillway/proxy/frontend"
)

// scripted is a backend that counts the requests it received and answers each as its
// script says: "ok", "reset" (read the request, then cut the connection), "502", or
// "midbody" (send headers and part of the body, then cut).
type scripted struct {
	srv      *httptest.Server
	received atomic.Int64
	bodies   chan [32]byte // sha256 of each request body received
}

func newScripted(t *testing.T, site, script string) *scripted {
	t.Helper()
	s := &scripted{bodies: make(chan [32]byte, 100)}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.received.Add(1)
		s.bodies <- sha256.Sum256(body)
		switch script {
		case "reset":
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.(*net.TCPConn).SetLinger(0)
				conn.Close()
			}
		case "502":
			w.WriteHeader(http.StatusBadGateway)
			io.WriteString(w, "upstream of "+site+" is gone\n")
		case "midbody":
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "partial")
			http.NewResponseController(w).Flush()
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		default:
			fmt.Fprintf(w, "ok from %s", site)
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// refusedURL is an address where nothing listens.
func refusedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

type retryEnv struct {
	url     string
	srv     *frontend.Server
	handler *Handler
	table   *Table
	reg     *balancer.Registry
	logs    *observer.ObservedLogs
	client  *http.Client
}

// startRetryProxy runs the proxy over two sites: "first" (weight 1, takes the first try of
// request number 0 of every period) and "second", with extra YAML appended.
func startRetryProxy(t *testing.T, first, second, extra string) *retryEnv {
	t.Helper()
	cfg, err := configs.Parse("t.yaml", fmt.Appendf(nil,
		"sites:\n- {name: first, weight: 1, backends: [%q]}\n- {name: second, weight: 1, backends: [%q]}\n%s", first, second, extra))
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	reg := balancer.NewRegistry()
	table, err := Build(cfg, Deps{Registry: reg, Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(table.Close)
	h := NewHandler(table, zap.New(core))
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	url, srv := serveInternalSrv(t, cfg, h)
	return &retryEnv{url: url, srv: srv, handler: h, table: table, reg: reg, logs: logs,
		client: &http.Client{Transport: tr}}
}

func (e *retryEnv) do(t *testing.T, method string, body []byte, header http.Header) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, e.url+"/pay", bytes.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res.StatusCode, string(b)
}

func TestBankSafeRetries(t *testing.T) {
	body := bytes.Repeat([]byte("payment;"), 1024) // 8 KiB: kept for replay
	for _, tc := range []struct {
		name         string
		first        string // script of the backend that gets the first try, or "refused"
		method       string
		header       http.Header
		body         []byte
		wantStatus   int
		wantBody     string
		wantFirst    int64 // requests the first backend received
		wantSecond   int64
		wantRetryWhy string // reason counted for the retry, "" for none
	}{
		{name: "POST reached a backend that reset: 502, sent once", first: "reset", method: "POST", body: body,
			wantStatus: 502, wantBody: "Bad Gateway\n", wantFirst: 1, wantSecond: 0},
		{name: "GET reached a backend that reset: retried elsewhere", first: "reset", method: "GET",
			wantStatus: 200, wantBody: "ok from second", wantFirst: 1, wantSecond: 1, wantRetryWhy: reasonBadGateway.String()},
		{name: "PUT (idempotent) with a body: retried with the same body", first: "reset", method: "PUT", body: body,
			wantStatus: 200, wantBody: "ok from second", wantFirst: 1, wantSecond: 1, wantRetryWhy: reasonBadGateway.String()},
		{name: "POST with an idempotency key: retried", first: "reset", method: "POST", body: body,
			header:     http.Header{"Idempotency-Key": {"pay-42"}},
			wantStatus: 200, wantBody: "ok from second", wantFirst: 1, wantSecond: 1, wantRetryWhy: reasonBadGateway.String()},
		{name: "POST whose idempotency key its Connection header strips: not retried", first: "reset", method: "POST", body: body,
			header:     http.Header{"Idempotency-Key": {"pay-42"}, "Connection": {"Idempotency-Key"}},
			wantStatus: 502, wantBody: "Bad Gateway\n", wantFirst: 1, wantSecond: 0},
		{name: "POST to an https backend whose certificate is not trusted: retried, received once", first: "untrusted-tls", method: "POST", body: body,
			wantStatus: 200, wantBody: "ok from second", wantFirst: 0, wantSecond: 1, wantRetryWhy: reasonBackendTLS.String()},
		{name: "POST to a refused port: retried elsewhere, received once", first: "refused", method: "POST", body: body,
			wantStatus: 200, wantBody: "ok from second", wantFirst: 0, wantSecond: 1, wantRetryWhy: reasonConnect.String()},
		{name: "PUT whose body was too large to keep: not retried", first: "reset", method: "PUT", body: bytes.Repeat([]byte("x"), 200<<10),
			wantStatus: 502, wantBody: "Bad Gateway\n", wantFirst: 1, wantSecond: 0},
		{name: "GET answered 502 by the backend: retried", first: "502", method: "GET",
			wantStatus: 200, wantBody: "ok from second", wantFirst: 1, wantSecond: 1, wantRetryWhy: reasonUpstream502.String()},
		{name: "POST answered 502 by the backend: passed through", first: "502", method: "POST", body: body,
			wantStatus: 502, wantBody: "upstream of first is gone\n", wantFirst: 1, wantSecond: 0},
		{name: "GET broken off mid-body: not retried", first: "midbody", method: "GET",
			wantStatus: 200, wantBody: "partial", wantFirst: 1, wantSecond: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var first *scripted
			firstURL := refusedURL(t)
			switch tc.first {
			case "refused":
			case "untrusted-tls":
				// The handshake fails before the request is written: it never reached it.
				tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					t.Error("a request reached the backend whose certificate is not trusted")
				}))
				tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0)
				t.Cleanup(tlsSrv.Close)
				firstURL = tlsSrv.URL
			default:
				first = newScripted(t, "first", tc.first)
				firstURL = first.srv.URL
			}
			second := newScripted(t, "second", "ok")
			e := startRetryProxy(t, firstURL, second.srv.URL, "outlier: {consecutive_failures: 0}\n")
			req, _ := http.NewRequest(tc.method, e.url+"/pay", bytes.NewReader(tc.body))
			for k, v := range tc.header {
				req.Header[k] = v
			}
			res, err := e.client.Do(req)
			if tc.first == "midbody" {
				// The client sees the start of the answer and then the cut.
				if err != nil {
					t.Fatal(err)
				}
				b, rerr := io.ReadAll(res.Body)
				res.Body.Close()
				if rerr == nil || string(b) != tc.wantBody {
					t.Fatalf("body %q, err %v; want %q cut short", b, rerr, tc.wantBody)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != tc.wantStatus || string(b) != tc.wantBody && !strings.HasPrefix(string(b), tc.wantBody+"request_id: ") {
					t.Fatalf("got %d %q, want %d %q", res.StatusCode, b, tc.wantStatus, tc.wantBody)
				}
			}
			if first != nil && first.received.Load() != tc.wantFirst {
				t.Errorf("first backend received %d, want %d", first.received.Load(), tc.wantFirst)
			}
			if got := second.received.Load(); got != tc.wantSecond {
				t.Errorf("second backend received %d, want %d", got, tc.wantSecond)
			}
			if tc.wantSecond == 1 && len(tc.body) > 0 {
				if sum := <-second.bodies; sum != sha256.Sum256(tc.body) {
					t.Errorf("the retried body differs from what the client sent")
				}
			}
			retries := e.handler.Retries()
			if tc.wantRetryWhy == "" && len(retries) != 0 || tc.wantRetryWhy != "" && (len(retries) != 1 || retries[tc.wantRetryWhy] != 1) {
				t.Errorf("retries %v, want one for %q", retries, tc.wantRetryWhy)
			}
			if tc.wantRetryWhy != "" {
				lines := e.logs.FilterMessage("retrying").All()
				if len(lines) != 1 {
					t.Fatalf("want one 'retrying' log entry, got %v", e.logs.All())
				}
				// It names the try that failed (site and backend) and the next one: the
				// first try always goes to "first" here.
				f := lines[0].ContextMap()
				if f["site"] != "first" || f["backend"] != e.table.cfg.Sites[0].Backends[0] ||
					f["next_site"] != "second" || f["next_backend"] != e.table.cfg.Sites[1].Backends[0] {
					t.Errorf("retrying line %v, want site/backend of the first try and next_site/next_backend of the second", f)
				}
			}
			// Shutdown returns once every handler has returned, leases released.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := e.srv.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			for _, s := range e.table.Sites() {
				if s.Inflight() != 0 {
					t.Errorf("site %s in-flight %d, want 0", s.Name, s.Inflight())
				}
			}
		})
	}
}

func TestRetryBudgetCapsRetries(t *testing.T) {
	// Both sites refuse: every request fails. With a budget of 0 and a floor of 3 a second,
	// 3 retries fit in the (frozen) second, however many requests come.
	e := startRetryProxy(t, refusedURL(t), refusedURL(t),
		"retries: {attempts: 2, budget: 0, min_per_second: 3}\noutlier: {consecutive_failures: 0}\n")
	frozen := time.Unix(1000, 0)
	e.table.retry.budget.now = func() time.Time { return frozen }
	for range 60 {
		if status, _ := e.do(t, "GET", nil, nil); status != http.StatusBadGateway {
			t.Fatalf("status %d, want 502", status)
		}
	}
	if got := e.handler.Retries()[reasonConnect.String()]; got != 3 {
		t.Fatalf("%d retries for 60 failing requests, want the floor's 3", got)
	}
	if n := e.logs.FilterMessage("retry budget exhausted").Len(); n != 57 {
		t.Fatalf("want 57 'retry budget exhausted' entries, got %d", n)
	}
}

func TestRetryBudgetWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newRetryBudget(0.2, 1, func() time.Time { return now }, nil)
	allowedOf := func(n int) int {
		allowed := 0
		for range n {
			if b.allow() {
				allowed++
			}
		}
		return allowed
	}
	for range 100 {
		b.request()
	}
	if got := allowedOf(50); got != 20 {
		t.Fatalf("allowed %d retries for 100 requests at 20%%, want 20", got)
	}
	now = now.Add(budgetWindow * time.Second) // the window has moved past all of them
	if got := allowedOf(50); got != 1 {
		t.Fatalf("allowed %d retries with no recent requests, want the floor of 1 a second", got)
	}
	now = now.Add(time.Second)
	if got := allowedOf(50); got != 1 {
		t.Fatalf("allowed %d retries in the next second, want the floor of 1", got)
	}
}

func TestRetryBudgetConcurrentNeverOverspends(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newRetryBudget(0, 5, func() time.Time { return now }, nil)
	var allowed atomic.Int64
	done := make(chan struct{})
	for range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 100 {
				if b.allow() {
					allowed.Add(1)
				}
			}
		}()
	}
	for range 8 {
		<-done
	}
	if allowed.Load() != 5 {
		t.Fatalf("8 goroutines were allowed %d retries, want exactly the floor of 5", allowed.Load())
	}
}

func TestPassiveEjectionMovesTrafficAway(t *testing.T) {
	second := newScripted(t, "second", "ok")
	cfg, err := configs.Parse("t.yaml", fmt.Appendf(nil,
		"sites:\n- {name: first, weight: 1, backends: [%q, %q]}\n- {name: second, weight: 1, backends: [%q]}\n"+
			"retries: {attempts: 1}\noutlier: {consecutive_failures: 3, base_ejection: 1m, max_ejection_percent: 50}\n",
		refusedURL(t), second.srv.URL, second.srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	reg := balancer.NewRegistry()
	outliers := NewOutliers(cfg, reg, nil)
	defer outliers.Close()
	table := mustBuild(t, cfg, Deps{Registry: reg, Outliers: outliers})
	outliers.SetMembers(table.Members())
	e := &retryEnv{url: serveInternal(t, cfg, NewHandler(table, nil)), client: &http.Client{Transport: &http.Transport{}}}
	defer e.client.CloseIdleConnections()
	refused := cfg.Sites[0].Backends[0]
	// Each failure also weighs in the refusing backend's cost (issue 12: fast failures must
	// not look cheap), so it gets a request again only once that penalty has decayed (about
	// 0.7 s): its 3 failures in a row take a second or two, not 3 requests.
	deadline := time.Now().Add(10 * time.Second) // a liveness bound, not a timing
	for !outliers.Ejected("first", refused) {
		if time.Now().After(deadline) {
			t.Fatal("the refusing backend was never ejected within 10s")
		}
		e.do(t, "GET", nil, nil)
		for len(second.bodies) > 0 {
			<-second.bodies // the scripted backend records at most 100
		}
	}
	if reg.Backend(balancer.BackendID{Site: "first", Addr: refused}).Up() {
		t.Fatal("ejected backend still up in the registry")
	}
	for range 40 {
		if status, _ := e.do(t, "GET", nil, nil); status != http.StatusOK {
			t.Fatalf("status %d after the ejection, want 200", status)
		}
	}
}

// recordingSink passes health reports to the Registry and to the test.
type recordingSink struct {
	reg     *balancer.Registry
	changes chan string
}

func (s recordingSink) SetUp(site, addr string, up bool) {
	s.reg.SetUp(site, addr, up)
	s.changes <- fmt.Sprintf("%s %v", site, up)
}

var _ health.Sink = recordingSink{}

func TestActiveHealthRedistributesShareAndSurvivesRebuild(t *testing.T) {
	var idc2Healthy atomic.Bool
	idc2Healthy.Store(true)
	backend := func(site string, healthy *atomic.Bool) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" && healthy != nil && !healthy.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, site)
		}))
		t.Cleanup(s.Close)
		return s.URL
	}
	yaml := fmt.Sprintf(`sites:
- {name: idc1, weight: 5, backends: [%q]}
- {name: idc2, weight: 3, backends: [%q], health: {path: /healthz, interval: 50ms, timeout: 45ms, rise: 2, fall: 3}}
- {name: aws, weight: 2, backends: [%q]}
`, backend("idc1", nil), backend("idc2", &idc2Healthy), backend("aws", nil))
	cfg := mustParse(t, "t.yaml", []byte(yaml))
	reg := balancer.NewRegistry()
	table := mustBuild(t, cfg, Deps{Registry: reg})
	h := NewHandler(table, nil)
	url := serveInternal(t, cfg, h)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	split := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			res, err := client.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			got[string(b)]++
		}
		return got
	}
	// The Monitor is built by Build; run it with a sink that tells the test of each change.
	changes := make(chan string, 10)
	run := func(t *Table) func() {
		m := health.NewMonitor(health.MonitorOptions{Sink: recordingSink{reg, changes}, Targets: t.monitorTargets()})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); m.Run(ctx) }()
		return func() { cancel(); <-done }
	}
	stop := run(table)
	defer func() { stop() }()

	if got := split(100); got["idc1"] != 50 || got["idc2"] != 30 || got["aws"] != 20 {
		t.Fatalf("healthy split %v, want 50/30/20", got)
	}
	idc2Healthy.Store(false)
	if c := <-changes; c != "idc2 false" {
		t.Fatalf("change %q, want idc2 false", c)
	}
	if got := split(70); got["idc1"] != 50 || got["idc2"] != 0 || got["aws"] != 20 {
		t.Fatalf("with idc2 down the split is %v, want idc1:aws = 50:20", got)
	}

	// A new Table over the same Registry (a reload) starts from idc2 down, not from up.
	stop()
	table2 := mustBuild(t, cfg, Deps{Registry: reg})
	if targets := table2.monitorTargets(); len(targets) != 1 || targets[0].Up {
		t.Fatalf("new generation's targets %+v, want idc2 starting down", targets)
	}
	table.Close()
	h.Swap(table2)
	stop = run(table2)
	if got := split(70); got["idc2"] != 0 {
		t.Fatalf("after the rebuild idc2 got %d requests while down", got["idc2"])
	}
	idc2Healthy.Store(true)
	if c := <-changes; c != "idc2 true" {
		t.Fatalf("change %q, want idc2 true", c)
	}
	if got := split(100); got["idc1"] != 50 || got["idc2"] != 30 || got["aws"] != 20 {
		t.Fatalf("after idc2 returns the split is %v, want 50/30/20", got)
	}
	// (Probes are timed generously: on a loaded machine a 5 ms probe timeout failed twice
	// in a row now and then, took idc2 out again mid-count, and made this test flaky.)
	select {
	case c := <-changes:
		t.Fatalf("unexpected health change %q while counting", c)
	default:
	}
}

// keepAliveDropper answers the first request on each connection and then, after reading the
// second in full, closes the connection without a word: a backend that crashed, or closed
// its idle connection, just as the request arrived. It counts the POSTs it read.
func keepAliveDropper(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var posts atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for n := 1; ; n++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					if req.Method == http.MethodPost {
						posts.Add(1)
					}
					if n == 2 {
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + ln.Addr().String(), &posts
}

// Regression: net/http's Transport resends a request without a body on its own, after a
// kept-alive connection fails, when it carries Idempotency-Key or X-Idempotency-Key —
// whatever the retry policy says, uncounted. A POST the policy must not replay is sent once.
func TestTransportDoesNotReplayBodylessPOST(t *testing.T) {
	for _, tc := range []struct{ name, extra, header string }{
		{"X-Idempotency-Key is not the configured header", "", "X-Idempotency-Key"},
		{"idempotency header turned off", "retries: {idempotency_header: \"\"}\n", "Idempotency-Key"},
		{"retries off", "retries: {attempts: 1}\n", "X-Idempotency-Key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, posts := keepAliveDropper(t)
			cfg := mustParse(t, "t.yaml", fmt.Appendf(nil, "sites:\n- {name: only, weight: 1, backends: [%q]}\n%s", u, tc.extra))
			table := mustBuild(t, cfg, Deps{Registry: balancer.NewRegistry()})
			e := &retryEnv{url: serveInternal(t, cfg, NewHandler(table, nil)), client: &http.Client{Transport: &http.Transport{}}}
			defer e.client.CloseIdleConnections()
			if status, _ := e.do(t, "GET", nil, nil); status != http.StatusOK { // leaves an idle backend connection
				t.Fatalf("warm-up status %d", status)
			}
			status, _ := e.do(t, "POST", nil, http.Header{tc.header: {"k1"}})
			if status != http.StatusBadGateway {
				t.Errorf("status %d, want 502", status)
			}
			if n := posts.Load(); n != 1 {
				t.Fatalf("the backend executed the POST %d times, want once", n)
			}
		})
	}
}

// Regression: a backend that active health had marked down stayed down for good once a new
// config dropped its site's health section: nothing would ever mark it up.
func TestBackendComesBackWhenHealthChecksAreRemoved(t *testing.T) {
	ok := newScripted(t, "a", "ok")
	reg := balancer.NewRegistry()
	withHealth, err := configs.Parse("1.yaml", fmt.Appendf(nil, "sites:\n- {name: a, weight: 1, backends: [%q], health: {initial: down}}\n", ok.srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	t1, err := Build(withHealth, Deps{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	t1.Close()
	if reg.Backend(balancer.BackendID{Site: "a", Addr: ok.srv.URL}).Up() {
		t.Fatal("initial: down did not take the backend out")
	}
	without, err := configs.Parse("2.yaml", fmt.Appendf(nil, "sites:\n- {name: a, weight: 1, backends: [%q]}\n", ok.srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	t2, err := Build(without, Deps{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer t2.Close()
	if t2.monitor != nil {
		t.Fatal("a Monitor without health sections")
	}
	if reg.Backend(balancer.BackendID{Site: "a", Addr: ok.srv.URL}).Up() {
		t.Fatal("Build changed the running state: a config not yet served brought the backend up")
	}
	t2.Activate() // t2 is served now
	if !reg.Backend(balancer.BackendID{Site: "a", Addr: ok.srv.URL}).Up() {
		t.Fatal("the backend is still down under a config without health checks")
	}
}

// hijackRW is a ResponseWriter whose client is gone as soon as the connection is hijacked.
type hijackRW struct {
	h        http.Header
	hijacked int
}

func (w *hijackRW) Header() http.Header { return w.h }
func (w *hijackRW) WriteHeader(int)     {}
func (w *hijackRW) Write(p []byte) (int, error) {
	if w.hijacked > 0 {
		return 0, http.ErrHijacked
	}
	return len(p), nil
}
func (w *hijackRW) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.hijacked++
	if w.hijacked > 1 {
		return nil, nil, http.ErrHijacked
	}
	a, b := net.Pipe()
	b.Close() // the client is gone: the 101 cannot be passed on
	return a, bufio.NewReadWriter(bufio.NewReader(a), bufio.NewWriter(a)), nil
}

// Regression: once the client connection was hijacked for a WebSocket, a failure writing the
// 101 to it was retried (another upgrade sent to another backend) and counted against the
// backend.
func TestNoRetryAfterHijack(t *testing.T) {
	var upgrades atomic.Int64
	ws := func() string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			upgrades.Add(1)
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			io.WriteString(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			brw.Flush()
		}))
		t.Cleanup(s.Close)
		return s.URL
	}
	e := startRetryProxy(t, ws(), ws(), "retries: {attempts: 3}\n")
	req := httptest.NewRequest("GET", "/ws", nil)
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	rw := &hijackRW{h: http.Header{}}
	e.handler.ServeHTTP(rw, req)
	if upgrades.Load() != 1 || rw.hijacked != 1 || len(e.handler.Retries()) != 0 {
		t.Fatalf("upgrades sent %d, hijacks %d, retries %v; want 1, 1, none", upgrades.Load(), rw.hijacked, e.handler.Retries())
	}
}
