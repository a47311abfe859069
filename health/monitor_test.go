package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// liveness bounds how long a test waits for something that should happen within a few
// intervals; it only fails a hung test, it never orders events.
const liveness = 10 * time.Second

// flip is one change of state as a Sink saw it.
type flip struct {
	Site, Addr string
	Up         bool
	// Probe is how many probes the backend had received when the change was reported. The
	// prober reports before it starts its next probe, so this names the probe that decided.
	Probe int64
}

// probeSink is a Sink that records every change and also sends it on changes.
type probeSink struct {
	probes  func() int64 // nil: Probe is left 0
	changes chan flip    // buffered; a Sink must not block, so a full channel drops

	mu  sync.Mutex
	got []flip
}

func newProbeSink(probes func() int64) *probeSink {
	return &probeSink{probes: probes, changes: make(chan flip, 64)}
}

func (s *probeSink) SetUp(site, addr string, up bool) {
	f := flip{Site: site, Addr: addr, Up: up}
	if s.probes != nil {
		f.Probe = s.probes()
	}
	s.mu.Lock()
	s.got = append(s.got, f)
	s.mu.Unlock()
	select {
	case s.changes <- f:
	default:
	}
}

func (s *probeSink) all() []flip {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

func (s *probeSink) next(t *testing.T) flip {
	t.Helper()
	select {
	case f := <-s.changes:
		return f
	case <-time.After(liveness):
		t.Fatal("no change of state reported")
		return flip{}
	}
}

type probeRequest struct {
	at         time.Time
	host, path string
}

// scriptedBackend is an HTTP backend that answers its nth request with script[n-1] (the
// last status forever after the script ends), or with hang set holds every request until
// the prober gives up on it. It records every request and signals each on arrived.
type scriptedBackend struct {
	*httptest.Server
	script []int
	hang   bool

	n                     atomic.Int64
	arrived               chan int64 // each request's number as it arrives; drops when full
	inflight, maxInflight atomic.Int64

	mu   sync.Mutex
	reqs []probeRequest
}

func newScriptedBackend(t *testing.T, script []int, hang bool) *scriptedBackend {
	b := &scriptedBackend{script: script, hang: hang, arrived: make(chan int64, 256)}
	b.Server = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.Close) // registered before the monitor's stop, so it runs after it
	return b
}

func (b *scriptedBackend) serve(w http.ResponseWriter, r *http.Request) {
	n := b.n.Add(1)
	cur := b.inflight.Add(1)
	defer b.inflight.Add(-1)
	for m := b.maxInflight.Load(); cur > m && !b.maxInflight.CompareAndSwap(m, cur); m = b.maxInflight.Load() {
	}
	b.mu.Lock()
	b.reqs = append(b.reqs, probeRequest{at: time.Now(), host: r.Host, path: r.URL.RequestURI()})
	b.mu.Unlock()
	select {
	case b.arrived <- n:
	default:
	}
	if b.hang {
		<-r.Context().Done() // the prober hung up
		return
	}
	code := b.script[min(int(n), len(b.script))-1]
	if code >= 300 && code < 400 {
		w.Header().Set("Location", "/moved") // a prober that followed it would ask for /moved
	}
	w.WriteHeader(code)
	// More than the prober reads: it passes once maxBody has arrived and closes the rest.
	_, _ = io.WriteString(w, strings.Repeat("x", maxBody+16<<10))
}

func (b *scriptedBackend) requests() []probeRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.reqs)
}

// waitProbe returns once the backend has received its nth request.
func (b *scriptedBackend) waitProbe(t *testing.T, n int64) {
	t.Helper()
	deadline := time.After(liveness)
	for {
		select {
		case got := <-b.arrived:
			if got >= n {
				return
			}
		case <-deadline:
			t.Fatalf("backend got %d probes, want %d", b.n.Load(), n)
		}
	}
}

// startMonitor runs a Monitor for opts until the returned stop is called or the test ends.
// stop cancels Run's context and fails the test unless Run returns promptly.
func startMonitor(t *testing.T, opts MonitorOptions) (stop func()) {
	m := NewMonitor(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx)
	}()
	stop = func() {
		t.Helper()
		cancel()
		select {
		case <-done:
		case <-time.After(liveness):
			t.Fatal("Run did not return after its context was cancelled")
		}
	}
	t.Cleanup(stop)
	return stop
}

// flipLog is what a flip's Info line says.
type flipLog struct {
	msg, site, backend string
	up                 bool
	reason             string
}

func flipLogs(logs *observer.ObservedLogs) []flipLog {
	var out []flipLog
	for _, e := range logs.FilterLevelExact(zap.InfoLevel).AllUntimed() {
		c := e.ContextMap()
		up, _ := c["up"].(bool)
		out = append(out, flipLog{e.Message, fmt.Sprint(c["site"]), fmt.Sprint(c["backend"]), up, fmt.Sprint(c["reason"])})
	}
	return out
}

func TestMonitorHysteresis(t *testing.T) {
	type want struct {
		up     bool
		probe  int64
		reason string
	}
	tests := []struct {
		name       string
		up         bool // initial state
		rise, fall int
		expect     [2]int
		host       string
		script     []int // the last status repeats, and must agree with the final state
		until      int64 // probes to watch; later than the last change
		want       []want
	}{
		{
			name: "blips do not flip; fall failures in a row do", up: true, rise: 2, fall: 3,
			script: []int{200, 503, 200, 503, 503, 503}, until: 10,
			want: []want{{false, 6, "status 503"}},
		},
		{
			name: "down turns up only after rise passes in a row", up: false, rise: 2, fall: 3,
			script: []int{503, 200, 503, 200, 200}, until: 9,
			want: []want{{true, 5, "status 200"}},
		},
		{
			name: "down and up again", up: true, rise: 3, fall: 2,
			script: []int{503, 503, 200, 200, 503, 200, 200, 200}, until: 12,
			want: []want{{false, 2, "status 503"}, {true, 8, "status 200"}},
		},
		{
			name: "rise and fall of 1 flip on every change", up: true, rise: 1, fall: 1,
			script: []int{503, 200, 200, 503}, until: 8,
			want: []want{{false, 1, "status 503"}, {true, 2, "status 200"}, {false, 4, "status 503"}},
		},
		{
			name: "starting up stays silent while passing", up: true, rise: 2, fall: 2,
			script: []int{200}, until: 6,
		},
		{
			name: "starting down stays silent while failing", up: false, rise: 2, fall: 2,
			script: []int{503}, until: 6,
		},
		{
			name: "starting down turns up after rise passes", up: false, rise: 3, fall: 1,
			script: []int{200}, until: 7,
			want: []want{{true, 3, "status 200"}},
		},
		{
			name: "status outside the expected range fails; Host header sent", up: true, rise: 1, fall: 1,
			expect: [2]int{200, 204}, host: "health.bank.internal",
			script: []int{204, 200, 205}, until: 7,
			want: []want{{false, 3, "status 205"}},
		},
		{
			name: "expected range of 5xx (a maintenance page means alive)", up: false, rise: 1, fall: 1,
			expect: [2]int{500, 503}, script: []int{200, 503}, until: 6,
			want: []want{{true, 2, "status 503"}},
		},
		{
			name: "default range passes a 3xx without following it", up: false, rise: 2, fall: 1,
			script: []int{302, 399}, until: 6,
			want: []want{{true, 2, "status 399"}},
		},
		{
			name: "default range fails a 4xx", up: true, rise: 1, fall: 2,
			script: []int{399, 400, 404}, until: 7,
			want: []want{{false, 3, "status 404"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newScriptedBackend(t, tc.script, false)
			sink := newProbeSink(b.n.Load)
			core, logs := observer.New(zap.DebugLevel)
			stop := startMonitor(t, MonitorOptions{
				Sink: sink,
				Log:  zap.New(core),
				Targets: []Target{{Site: "idc1", Addr: b.URL, Up: tc.up, Check: Check{
					Path: "/healthz", Host: tc.host, Expect: tc.expect,
					Interval: 20 * time.Millisecond, Timeout: 20 * time.Millisecond,
					Rise: tc.rise, Fall: tc.fall,
				}}},
			})
			b.waitProbe(t, tc.until)
			stop()

			var wantFlips []flip
			var wantLogs []flipLog
			for _, w := range tc.want {
				wantFlips = append(wantFlips, flip{"idc1", b.URL, w.up, w.probe})
				wantLogs = append(wantLogs, flipLog{"backend " + upDown(w.up), "idc1", b.URL, w.up, w.reason})
			}
			if got := sink.all(); !slices.Equal(got, wantFlips) {
				t.Errorf("reported %+v\nwant     %+v", got, wantFlips)
			}
			if got := flipLogs(logs); !slices.Equal(got, wantLogs) {
				t.Errorf("logged %+v\nwant   %+v", got, wantLogs)
			}
			// Every finished probe is logged at Debug, before the next one starts.
			if got := logs.FilterMessage("health probe").Len(); int64(got) < tc.until-1 {
				t.Errorf("%d probes logged at Debug, want >= %d", got, tc.until-1)
			}
			wantHost := tc.host
			if wantHost == "" {
				wantHost = b.Listener.Addr().String()
			}
			for i, r := range b.requests() {
				if r.path != "/healthz" || r.host != wantHost {
					t.Errorf("probe %d: GET %s with Host %q, want /healthz with Host %q", i+1, r.path, r.host, wantHost)
				}
			}
		})
	}
}

func TestMonitorTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{}, 256)
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-acceptDone })

	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := "http://" + refused.Addr().String()
	_ = refused.Close()

	sink := newProbeSink(nil)
	core, logs := observer.New(zap.InfoLevel)
	check := Check{Kind: "tcp", Interval: 20 * time.Millisecond, Timeout: 20 * time.Millisecond, Rise: 2, Fall: 2}
	liveAddr := "http://" + ln.Addr().String()
	stop := startMonitor(t, MonitorOptions{Sink: sink, Log: zap.New(core), Targets: []Target{
		{Site: "idc1", Addr: liveAddr, Up: false, Check: check},
		{Site: "idc2", Addr: refusedAddr, Up: true, Check: check},
	}})
	got := []flip{sink.next(t), sink.next(t)}
	stop()
	// Rise 2: the listener must get two connections (the kernel completes a dial before
	// Accept returns, so count them here rather than at the report).
	for i := range 2 {
		select {
		case <-accepted:
		case <-time.After(liveness):
			t.Fatalf("listener accepted %d connections, want 2", i)
		}
	}
	slices.SortFunc(got, func(a, b flip) int { return strings.Compare(a.Site, b.Site) })
	want := []flip{{Site: "idc1", Addr: liveAddr, Up: true}, {Site: "idc2", Addr: refusedAddr, Up: false}}
	if !slices.Equal(got, want) {
		t.Errorf("reported %+v, want %+v", got, want)
	}
	for _, l := range flipLogs(logs) {
		switch l.site {
		case "idc1":
			if l.reason != "connected" {
				t.Errorf("up reason %q, want connected", l.reason)
			}
		case "idc2":
			if !strings.Contains(l.reason, "refused") {
				t.Errorf("down reason %q, want a refused connection", l.reason)
			}
		}
	}
}

func TestMonitorHTTPS(t *testing.T) {
	var probes atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probes.Add(1)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusting prober's handshake fails
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())

	sink := newProbeSink(nil)
	core, logs := observer.New(zap.InfoLevel)
	// A generous timeout: the first load of the system roots under -race is slow. Rand 0
	// makes the first probe immediate, and that probe decides (rise and fall 1).
	check := Check{Path: "/healthz", Interval: 2 * time.Second, Timeout: 2 * time.Second, Rise: 1, Fall: 1}
	trusting := check
	trusting.TLS = &tls.Config{RootCAs: roots}
	stop := startMonitor(t, MonitorOptions{Sink: sink, Log: zap.New(core), Rand: func() float64 { return 0 }, Targets: []Target{
		{Site: "trusting", Addr: srv.URL, Up: false, Check: trusting},
		{Site: "default", Addr: srv.URL, Up: true, Check: check}, // nil TLS: system roots only
	}})
	got := []flip{sink.next(t), sink.next(t)}
	stop()
	slices.SortFunc(got, func(a, b flip) int { return strings.Compare(a.Site, b.Site) })
	want := []flip{{Site: "default", Addr: srv.URL, Up: false}, {Site: "trusting", Addr: srv.URL, Up: true}}
	if !slices.Equal(got, want) {
		t.Errorf("reported %+v, want %+v", got, want)
	}
	if probes.Load() == 0 {
		t.Error("no probe reached the handler")
	}
	for _, l := range flipLogs(logs) {
		if l.site == "default" && !strings.Contains(l.reason, "certificate") {
			t.Errorf("down reason %q, want a certificate error", l.reason)
		}
	}
}

// A backend that never answers must see one probe at a time: the prober waits for each to
// time out before it schedules the next, so probes cannot pile up.
func TestMonitorOneProbeInFlight(t *testing.T) {
	b := newScriptedBackend(t, nil, true)
	sink := newProbeSink(nil)
	core, logs := observer.New(zap.InfoLevel)
	stop := startMonitor(t, MonitorOptions{Sink: sink, Log: zap.New(core), Targets: []Target{{
		Site: "idc1", Addr: b.URL, Up: true,
		Check: Check{Path: "/healthz", Interval: 20 * time.Millisecond, Timeout: 10 * time.Millisecond, Rise: 1, Fall: 2},
	}}})
	if f := sink.next(t); f.Up {
		t.Fatalf("reported %+v, want down", f)
	}
	b.waitProbe(t, 6)
	stop()
	if m := b.maxInflight.Load(); m != 1 {
		t.Errorf("backend saw up to %d probes at once, want 1", m)
	}
	want := []flipLog{{"backend down", "idc1", b.URL, false, "no answer within 10ms"}}
	if got := flipLogs(logs); !slices.Equal(got, want) {
		t.Errorf("logged %+v, want %+v", got, want)
	}
}

// Cancelling Run's context must cut a hung probe short rather than wait out its Timeout,
// and a probe cut short is not a failure. goleak (TestMain) checks nothing is left running.
func TestMonitorStopsPromptlyWithHungBackend(t *testing.T) {
	b := newScriptedBackend(t, nil, true)
	sink := newProbeSink(nil)
	stop := startMonitor(t, MonitorOptions{
		Sink: sink,
		Rand: func() float64 { return 0 }, // first probe at once
		Targets: []Target{{Site: "idc1", Addr: b.URL, Up: true,
			Check: Check{Path: "/healthz", Interval: time.Hour, Timeout: time.Hour, Rise: 1, Fall: 1}}},
	})
	b.waitProbe(t, 1)
	start := time.Now()
	stop()
	if d := time.Since(start); d > liveness/2 {
		t.Errorf("Run took %s to return", d)
	}
	if got := sink.all(); len(got) != 0 {
		t.Errorf("reported %+v after cancel, want nothing", got)
	}
}

func TestMonitorNoTargetsRunsUntilCancelled(t *testing.T) {
	m := NewMonitor(MonitorOptions{Sink: newProbeSink(nil)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	select {
	case <-done:
		t.Fatal("Run returned before its context was done")
	default:
	}
	cancel()
	select {
	case <-done:
	case <-time.After(liveness):
		t.Fatal("Run did not return after cancel")
	}
	defer func() {
		if recover() == nil {
			t.Error("a second Run did not panic")
		}
	}()
	m.Run(ctx)
}

func TestJitter(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		r        float64
		want     time.Duration
	}{
		{time.Second, 0, 900 * time.Millisecond},
		{time.Second, 0.25, 950 * time.Millisecond},
		{time.Second, 0.5, time.Second},
		{time.Second, 1, 1100 * time.Millisecond},
		{20 * time.Millisecond, 0, 18 * time.Millisecond},
		{20 * time.Millisecond, 1, 22 * time.Millisecond},
	} {
		if got := jitter(tc.interval, tc.r); got != tc.want {
			t.Errorf("jitter(%s, %g) = %s, want %s", tc.interval, tc.r, got, tc.want)
		}
	}
	for _, tc := range []struct {
		interval time.Duration
		r        float64
		want     time.Duration
	}{
		{time.Second, 0, 0},
		{time.Second, 0.25, 250 * time.Millisecond},
		{time.Second, 1, time.Second},
	} {
		if got := firstDelay(tc.interval, tc.r); got != tc.want {
			t.Errorf("firstDelay(%s, %g) = %s, want %s", tc.interval, tc.r, got, tc.want)
		}
	}
	// With the default Rand: within ±10%, and not all the same.
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := jitter(time.Second, rand.Float64())
		if d < 900*time.Millisecond || d > 1100*time.Millisecond {
			t.Fatalf("jitter(1s) = %s, outside 0.9s-1.1s", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Errorf("1000 jittered delays took only %d values", len(seen))
	}
	// A Rand outside [0, 1] is clamped.
	m := NewMonitor(MonitorOptions{Sink: newProbeSink(nil), Rand: func() float64 { return 7 }})
	if r := m.random(); r != 1 {
		t.Errorf("random() with Rand returning 7 = %g, want 1", r)
	}
}

// The prober really waits the jittered delay between probes: with Rand alternating 1 and 0,
// the gaps between probe arrivals are at least 22ms and 18ms in turn. Timers never fire
// early, so the lower bounds are exact; the upper bound is only a generous sanity check.
func TestMonitorJitterSpacing(t *testing.T) {
	const interval = 20 * time.Millisecond
	var calls atomic.Int64
	randAt := func(i int64) float64 { return float64(i % 2) } // call 0 (first delay): 0; then 1, 0, 1, ...
	b := newScriptedBackend(t, []int{200}, false)
	stop := startMonitor(t, MonitorOptions{
		Sink: newProbeSink(nil),
		Rand: func() float64 { return randAt(calls.Add(1) - 1) },
		Targets: []Target{{Site: "idc1", Addr: b.URL, Up: true,
			Check: Check{Path: "/healthz", Interval: interval, Timeout: 10 * time.Millisecond, Rise: 1, Fall: 1}}},
	})
	b.waitProbe(t, 7)
	stop()
	reqs := b.requests()
	for k := 1; k < 7; k++ { // the pause after probe k used Rand call k
		gap := reqs[k].at.Sub(reqs[k-1].at)
		min := jitter(interval, randAt(int64(k)))
		if gap < min || gap > min+time.Second {
			t.Errorf("gap after probe %d = %s, want >= %s (and not far more)", k, gap, min)
		}
	}
}

func TestProberAddresses(t *testing.T) {
	for _, tc := range []struct {
		kind, addr, path string
		want             string // url for http, host:port for tcp
	}{
		{"", "http://10.0.1.10:8080", "/healthz", "http://10.0.1.10:8080/healthz"},
		{"http", "https://app.idc2:8443/", "/healthz?deep=1", "https://app.idc2:8443/healthz?deep=1"},
		{"http", "http://10.0.1.10:8080/app", "/healthz", "http://10.0.1.10:8080/healthz"},
		{"http", "http://10.0.1.10", "", "http://10.0.1.10/"},
		{"tcp", "http://10.0.1.10:8080", "", "10.0.1.10:8080"},
		{"tcp", "http://10.0.1.10", "", "10.0.1.10:80"},
		{"tcp", "https://[::1]", "", "[::1]:443"},
	} {
		p, err := newProber(Target{Addr: tc.addr, Check: Check{Kind: tc.kind, Path: tc.path,
			Interval: time.Second, Timeout: time.Second, Rise: 1, Fall: 1}})
		if err != nil {
			t.Errorf("%s %s %s: %v", tc.kind, tc.addr, tc.path, err)
			continue
		}
		got := p.url
		if p.transport == nil {
			got = p.hostport
		}
		if got != tc.want {
			t.Errorf("%s %s %s: probes %q, want %q", tc.kind, tc.addr, tc.path, got, tc.want)
		}
	}
}

func TestNewMonitorPanicsOnInvalidTarget(t *testing.T) {
	valid := Target{Site: "idc1", Addr: "http://10.0.1.10:8080",
		Check: Check{Path: "/healthz", Interval: time.Second, Timeout: time.Second, Rise: 1, Fall: 1}}
	tests := []struct {
		name   string
		opts   func(*MonitorOptions)
		panics string
	}{
		{"nil sink", func(o *MonitorOptions) { o.Sink = nil }, "nil Sink"},
		{"unknown kind", func(o *MonitorOptions) { o.Targets[0].Check.Kind = "udp" }, `kind: want "http" or "tcp", got "udp"`},
		{"no interval", func(o *MonitorOptions) { o.Targets[0].Check.Interval = 0 }, "interval: must be > 0"},
		{"no timeout", func(o *MonitorOptions) { o.Targets[0].Check.Timeout = 0 }, "timeout: must be > 0"},
		{"timeout over interval", func(o *MonitorOptions) { o.Targets[0].Check.Timeout = 2 * time.Second }, "timeout: 2s is longer than the interval 1s"},
		{"rise 0", func(o *MonitorOptions) { o.Targets[0].Check.Rise = 0 }, "rise: must be >= 1"},
		{"fall 0", func(o *MonitorOptions) { o.Targets[0].Check.Fall = 0 }, "fall: must be >= 1"},
		{"reversed expect", func(o *MonitorOptions) { o.Targets[0].Check.Expect = [2]int{399, 200} }, "expect: want a status range"},
		{"expect not a status", func(o *MonitorOptions) { o.Targets[0].Check.Expect = [2]int{0, 200} }, "expect: want a status range"},
		{"addr without scheme", func(o *MonitorOptions) { o.Targets[0].Addr = "10.0.1.10:8080" }, "addr:"},
		{"addr not http", func(o *MonitorOptions) { o.Targets[0].Addr = "ftp://10.0.1.10" }, "addr: want an http:// or https:// URL"},
		{"relative path", func(o *MonitorOptions) { o.Targets[0].Check.Path = "healthz" }, "path: want an absolute path"},
		{"duplicate target", func(o *MonitorOptions) { o.Targets = append(o.Targets, o.Targets[0]) }, "listed twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := MonitorOptions{Sink: newProbeSink(nil), Targets: []Target{valid}}
			tc.opts(&opts)
			defer func() {
				r := recover()
				if msg, _ := r.(string); !strings.Contains(msg, tc.panics) {
					t.Errorf("panic %v, want one containing %q", r, tc.panics)
				}
			}()
			NewMonitor(opts)
		})
	}
}

// Passed is called after every passing probe of a target that is up, and not while it is
// down: passive health uses it to return an ejected backend early.
func TestMonitorPassedHook(t *testing.T) {
	var healthy atomic.Bool
	probes := make(chan bool, 1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok := healthy.Load()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		probes <- ok
	}))
	defer srv.Close()
	passed := make(chan string, 1000)
	// The sink runs on the prober goroutine, before Passed would be called for the same
	// probe: what it sees in passed is every call made while the target was down.
	passedWhileDown := make(chan int, 1)
	m := NewMonitor(MonitorOptions{
		Sink:    sinkFunc(func(site, addr string, up bool) { passedWhileDown <- len(passed) }),
		Targets: []Target{{Site: "s", Addr: srv.URL, Up: false, Check: Check{Path: "/healthz", Interval: 20 * time.Millisecond, Timeout: 20 * time.Millisecond, Rise: 2, Fall: 1}}},
		Passed:  func(site, addr string) { passed <- site + " " + addr },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	defer func() { cancel(); <-done }()

	<-probes // a failing probe while down
	healthy.Store(true)
	select {
	case n := <-passedWhileDown:
		if n != 0 {
			t.Fatalf("Passed called %d times while the target was down", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no up report")
	}
	select {
	case got := <-passed:
		if got != "s "+srv.URL {
			t.Fatalf("Passed(%q)", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Passed not called for a passing probe of an up target")
	}
}

type sinkFunc func(site, addr string, up bool)

func (f sinkFunc) SetUp(site, addr string, up bool) { f(site, addr, up) }

// TestMonitorProbeReadsTheWholeBody pins issue 12's probes that stopped at the status line:
// the copy error was dropped, so a 200 whose body was reset, or stalled past the timeout,
// passed. A probe passes only when its whole body arrives within the timeout; a body longer
// than maxBody passes once maxBody has arrived.
func TestMonitorProbeReadsTheWholeBody(t *testing.T) {
	tests := []struct {
		name   string
		body   func(w http.ResponseWriter, r *http.Request)
		pass   bool
		reason string
	}{
		{name: "reset after the status", reason: "status 200, body broken off", body: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				panic(err)
			}
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
		}},
		{name: "body stalls past the timeout", reason: "status 200, body not complete within 300ms", body: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			<-r.Context().Done() // the prober gives up
		}},
		{name: "whole small body", pass: true, reason: "status 200", body: func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "ok")
		}},
		{name: "endless body: maxBody is enough", pass: true, reason: "status 200", body: func(w http.ResponseWriter, r *http.Request) {
			chunk := strings.Repeat("x", 8<<10)
			for r.Context().Err() == nil {
				if _, err := io.WriteString(w, chunk); err != nil {
					return
				}
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(tc.body))
			srv.Config.ErrorLog = log.New(io.Discard, "", 0)
			srv.Start()
			t.Cleanup(srv.Close)
			sink := newProbeSink(nil)
			core, logs := observer.New(zap.InfoLevel)
			// Start from the state the probe must change: up for a failing body, down for a
			// passing one; rise and fall of 1, so the first probe decides.
			// The first probe at once (Rand 0); a timeout that headers on loopback always beat.
			startMonitor(t, MonitorOptions{Sink: sink, Log: zap.New(core), Rand: func() float64 { return 0 },
				Targets: []Target{{Site: "idc1", Addr: srv.URL, Up: !tc.pass,
					Check: Check{Interval: time.Second, Timeout: 300 * time.Millisecond, Rise: 1, Fall: 1}}}})
			got := sink.next(t)
			if got.Up != tc.pass {
				t.Fatalf("reported up=%v, want %v", got.Up, tc.pass)
			}
			fl := flipLogs(logs)
			if len(fl) == 0 || !strings.HasPrefix(fl[0].reason, tc.reason) {
				t.Fatalf("logged %v, want reason %q", fl, tc.reason)
			}
		})
	}
}
