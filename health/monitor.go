package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Check is how to probe one backend. Interval, Timeout, Rise and Fall are required; the rest
// have usable zero values. The caller validates (package configs does, with file:line);
// NewMonitor panics on a Check it cannot honour, as that is a programming error.
type Check struct {
	Kind string // "http" (default) or "tcp" (connect only)
	// Path is the HTTP path, with an optional query, e.g. "/healthz"; "" means "/". Addr's
	// own path, if any, is replaced, not prefixed.
	Path string
	// Host is an optional Host header for HTTP probes. It does not change TLS server name
	// (set TLS.ServerName for that).
	Host string
	// Expect is the accepted status range, inclusive; the zero value means {200, 399}.
	// Redirects are not followed: a 3xx is judged by its own status.
	Expect [2]int
	// Interval is the pause between probes of one backend: each probe starts Interval ± 10%
	// (uniform jitter) after the previous one ended, so a hung backend is probed at most
	// once per Interval + Timeout. The first probe comes after a random fraction of
	// Interval, so that probes across backends do not align.
	Interval time.Duration
	Timeout  time.Duration // per probe, dial to the end of the body (see maxBody); must be <= Interval
	Rise     int           // consecutive passes to turn up (>= 1)
	Fall     int           // consecutive failures to turn down (>= 1)
	// TLS is the client configuration for https backends (CA, client certificate, server
	// name); nil means default verification against the system roots. It is cloned.
	TLS *tls.Config
}

// Target is one backend to watch.
type Target struct {
	Site, Addr string // Addr is the backend URL, "http://10.0.1.10:8080" or "https://..."
	// Up is the state to start from: the state the caller already knows (so health survives a
	// config reload), or the configured initial state. It is not reported; only changes are.
	Up    bool
	Check Check
}

// MonitorOptions configures a Monitor.
type MonitorOptions struct {
	// Sink receives every change of state, from the target's prober goroutine. Required.
	Sink Sink
	// Targets are the backends to probe; each site+address at most once.
	Targets []Target
	// Log gets an Info line per change of state and a Debug line per probe. Nil: no logs.
	Log *zap.Logger
	// Rand returns a uniform number in [0, 1] for the jitter of probe times; values outside
	// are clamped. It is called from every prober's goroutine, so it must be safe for
	// concurrent use. Nil: math/rand/v2.Float64.
	Rand func() float64
	// Current, if set, tells what the Sink holds for a target now. A probe that confirms
	// the prober's state when the Sink holds the other one reports it again, so that a
	// change made by someone else (an older Monitor, during a reload) does not stick. It is
	// called from every prober's goroutine and must not block.
	Current func(site, addr string) (up bool)
	// Passed, if set, is called after every passing probe of a target that is up, from its
	// prober goroutine; passive health uses it to return an ejected backend that probes see
	// healthy (Outliers.Recovered). It must not block.
	Passed func(site, addr string)
}

// Monitor probes a set of targets, one goroutine each, and reports each change of state to
// a Sink. It keeps no state beyond its Run: make one per config generation, starting each
// target from the state the previous generation left.
type Monitor struct {
	sink    Sink
	passed  func(site, addr string)
	current func(site, addr string) bool
	log     *zap.Logger
	rand    func() float64
	probers []*prober
	ran     atomic.Bool
}

// Probes never keep a connection, so these bound only what one probe may cost.
const (
	// maxBody is how much of a probe's response body is read. An HTTP probe passes only
	// once its whole body has arrived within the timeout (a 200 whose body is then reset,
	// or stalls, is a backend that cannot answer); a body longer than this passes once this
	// much has arrived, and the connection is closed on the rest: a health endpoint that
	// sends more is judged by its status and its first 64 KiB.
	maxBody        = 64 << 10
	maxHeaderBytes = 64 << 10 // response header bytes accepted
	userAgent      = "spillway-health"
)

// NewMonitor returns a Monitor for opts; nothing runs until Run. It panics if Sink is nil or
// a target is invalid (an address that is not an http or https URL with a host, an unknown
// Kind, Interval or Timeout <= 0, Timeout > Interval, Rise or Fall < 1, an Expect range
// outside 100-599, a duplicate site+address).
func NewMonitor(opts MonitorOptions) *Monitor {
	if opts.Sink == nil {
		panic("health: NewMonitor: nil Sink")
	}
	m := &Monitor{sink: opts.Sink, log: opts.Log, rand: opts.Rand, passed: opts.Passed, current: opts.Current}
	if m.log == nil {
		m.log = zap.NewNop()
	}
	if m.rand == nil {
		m.rand = rand.Float64
	}
	seen := make(map[[2]string]bool, len(opts.Targets))
	for _, t := range opts.Targets {
		p, err := newProber(t)
		if err != nil {
			panic(fmt.Sprintf("health: NewMonitor: target %s %s: %v", t.Site, t.Addr, err))
		}
		id := [2]string{t.Site, t.Addr}
		if seen[id] {
			panic(fmt.Sprintf("health: NewMonitor: target %s %s listed twice", t.Site, t.Addr))
		}
		seen[id] = true
		m.probers = append(m.probers, p)
	}
	return m
}

// Run probes every target until ctx is done, then waits for every prober goroutine to exit,
// closes the probe transports and returns. A probe cut short by ctx counts for nothing and
// is not reported. The caller owns the goroutine that calls Run; Run may be called once.
func (m *Monitor) Run(ctx context.Context) {
	if m.ran.Swap(true) {
		panic("health: Monitor.Run called twice")
	}
	var wg sync.WaitGroup
	for _, p := range m.probers {
		wg.Go(func() { m.watch(ctx, p) })
	}
	<-ctx.Done()
	wg.Wait()
	for _, p := range m.probers {
		if p.transport != nil {
			p.transport.CloseIdleConnections()
		}
	}
}

// watch is one target's prober. It probes synchronously, so at most one probe per target
// is ever in flight, however long the backend takes to answer.
func (m *Monitor) watch(ctx context.Context, p *prober) {
	timer := time.NewTimer(firstDelay(p.check.Interval, m.random()))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		ok, reason := p.probe(ctx)
		if ctx.Err() != nil {
			return
		}
		if ce := m.log.Check(zap.DebugLevel, "health probe"); ce != nil {
			ce.Write(zap.String("site", p.site), zap.String("backend", p.addr),
				zap.Bool("pass", ok), zap.String("reason", reason))
		}
		if p.observe(ok) {
			m.log.Info("backend "+upDown(p.up),
				zap.String("site", p.site), zap.String("backend", p.addr),
				zap.Bool("up", p.up), zap.String("reason", reason))
			m.sink.SetUp(p.site, p.addr, p.up)
		} else if m.current != nil && ok == p.up && m.current(p.site, p.addr) != p.up {
			// This probe confirms a state the Sink no longer has (another generation's
			// last word during a reload): put it right.
			m.sink.SetUp(p.site, p.addr, p.up)
		}
		if ok && p.up && m.passed != nil {
			m.passed(p.site, p.addr)
		}
		timer.Reset(jitter(p.check.Interval, m.random()))
	}
}

// random is m.rand clamped to [0, 1]; NaN counts as 0.
func (m *Monitor) random() float64 {
	switch r := m.rand(); {
	case r > 1:
		return 1
	case r >= 0:
		return r
	default:
		return 0
	}
}

// firstDelay is how long a prober waits before its first probe: r (in [0, 1]) of interval.
func firstDelay(interval time.Duration, r float64) time.Duration {
	return time.Duration(float64(interval) * r)
}

// jitter is the pause before the next probe: interval ± 10%, linear in r (in [0, 1]), so
// r = 0 gives 0.9 × interval, 0.5 gives interval and 1 gives 1.1 × interval.
func jitter(interval time.Duration, r float64) time.Duration {
	return interval - interval/10 + time.Duration(float64(interval/5)*r)
}

func upDown(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

// prober is one target's state, owned by its watch goroutine.
type prober struct {
	site, addr string
	check      Check // with defaults applied

	up     bool
	streak int // consecutive results that disagree with up

	// HTTP probes: url and transport; TCP probes: hostport (and transport nil).
	url       string
	transport *http.Transport
	hostport  string
}

func newProber(t Target) (*prober, error) {
	c := t.Check
	if c.Kind == "" {
		c.Kind = "http"
	}
	if c.Path == "" {
		c.Path = "/"
	}
	if c.Expect == [2]int{} {
		c.Expect = [2]int{200, 399}
	}
	switch {
	case c.Kind != "http" && c.Kind != "tcp":
		return nil, fmt.Errorf(`kind: want "http" or "tcp", got %q`, c.Kind)
	case c.Interval <= 0:
		return nil, fmt.Errorf("interval: must be > 0, got %s", c.Interval)
	case c.Timeout <= 0:
		return nil, fmt.Errorf("timeout: must be > 0, got %s", c.Timeout)
	case c.Timeout > c.Interval:
		return nil, fmt.Errorf("timeout: %s is longer than the interval %s", c.Timeout, c.Interval)
	case c.Rise < 1:
		return nil, fmt.Errorf("rise: must be >= 1, got %d", c.Rise)
	case c.Fall < 1:
		return nil, fmt.Errorf("fall: must be >= 1, got %d", c.Fall)
	case c.Expect[0] < 100 || c.Expect[0] > c.Expect[1] || c.Expect[1] > 599:
		return nil, fmt.Errorf("expect: want a status range within 100-599, got %d-%d", c.Expect[0], c.Expect[1])
	}
	u, err := url.Parse(t.Addr)
	if err != nil {
		return nil, fmt.Errorf("addr: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return nil, errors.New("addr: want an http:// or https:// URL with a host")
	}
	p := &prober{site: t.Site, addr: t.Addr, check: c, up: t.Up}
	if c.Kind == "tcp" {
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		p.hostport = net.JoinHostPort(u.Hostname(), port)
		return p, nil
	}
	ref, err := url.Parse(c.Path)
	if err != nil || ref.Scheme != "" || ref.Host != "" || !strings.HasPrefix(ref.Path, "/") {
		return nil, fmt.Errorf("path: want an absolute path like /healthz, got %q", c.Path)
	}
	p.url = u.ResolveReference(ref).String()
	dialer := &net.Dialer{Timeout: c.Timeout}
	p.transport = &http.Transport{
		Proxy:                  nil, // probes go straight to the backend
		DialContext:            dialer.DialContext,
		TLSClientConfig:        c.TLS.Clone(),
		TLSHandshakeTimeout:    c.Timeout,
		DisableKeepAlives:      true, // never pooled, never behind user traffic
		DisableCompression:     true,
		MaxResponseHeaderBytes: maxHeaderBytes,
	}
	return p, nil
}

// probe runs one probe within the check's Timeout. It reports whether the backend passed
// and why, e.g. "status 503" or the error.
func (p *prober) probe(ctx context.Context) (ok bool, reason string) {
	ctx, cancel := context.WithTimeout(ctx, p.check.Timeout)
	defer cancel()
	var err error
	if p.transport == nil {
		ok, reason, err = p.dial(ctx)
	} else {
		ok, reason, err = p.get(ctx)
	}
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return false, fmt.Sprintf("no answer within %s", p.check.Timeout)
		}
		return false, err.Error()
	}
	return ok, reason
}

func (p *prober) get(ctx context.Context) (ok bool, reason string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return false, "", err
	}
	if p.check.Host != "" {
		req.Host = p.check.Host
	}
	req.Header.Set("User-Agent", userAgent)
	// RoundTrip, not a Client: a redirect is an answer to judge, not a hop to follow.
	resp, err := p.transport.RoundTrip(req)
	if err != nil {
		return false, "", err
	}
	code := resp.StatusCode
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	_ = resp.Body.Close()
	switch {
	case err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return false, fmt.Sprintf("status %d, body not complete within %s", code, p.check.Timeout), nil
	case err != nil:
		return false, fmt.Sprintf("status %d, body broken off: %v", code, err), nil
	}
	return code >= p.check.Expect[0] && code <= p.check.Expect[1], fmt.Sprintf("status %d", code), nil
}

func (p *prober) dial(ctx context.Context) (ok bool, reason string, err error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", p.hostport)
	if err != nil {
		return false, "", err
	}
	_ = conn.Close()
	return true, "connected", nil
}

// observe applies one probe result with rise/fall hysteresis and reports whether p.up
// flipped: only Rise passes in a row turn a down backend up, only Fall failures in a row
// turn an up one down, and any result that agrees with the current state resets the count.
func (p *prober) observe(pass bool) (flipped bool) {
	if pass == p.up {
		p.streak = 0
		return false
	}
	p.streak++
	need := p.check.Fall
	if pass {
		need = p.check.Rise
	}
	if p.streak < need {
		return false
	}
	p.up, p.streak = pass, 0
	return true
}
