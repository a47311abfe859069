package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// Target mode: the bench drives load at a running Spillway (one replica, or a fleet's
// address) and its real backends, and judges what it saw from two sides: the client's
// (status mix, latency, errors) and, with the admin API, the proxy's own (split against
// weights, in flight against limits, spills and sheds by reason, memory and goroutines).

// targetScenarioNames are the scenarios target mode runs, in order. The others kill, slow
// or reload simulated sites and run only on loopback.
var targetScenarioNames = []string{"steady", "spike", "ramp", "soak"}

// TargetScenarioNames lists the scenarios of target mode.
func TargetScenarioNames() []string { return slices.Clone(targetScenarioNames) }

// Target mode's defaults and bounds.
const (
	DefaultTargetRate        = 100 // req/s
	DefaultTargetDuration    = time.Minute
	DefaultSoakDuration      = 30 * time.Minute
	MaxTargetDuration        = 24 * time.Hour
	DefaultTargetConcurrency = 1000
	MaxTargetConcurrency     = 100_000
	DefaultSpikeFactor       = 3
	DefaultRampSteps         = 10
	// maxTargetRequests bounds one scenario's requests: the schedule and the records of
	// 5M requests take about 300 MB.
	maxTargetRequests = 5_000_000
	maxTargetRate     = 1_000_000
	maxBodySize       = 64 << 20
)

// Thresholds are what target mode's verdicts are judged by.
type Thresholds struct {
	// MaxP99 bounds the client's p99 latency (ramp: the rate at which it is crossed is the
	// capacity). Default 1s.
	MaxP99 time.Duration
	// MaxErrorPct bounds the requests not answered 2xx, in % of those sent (ramp: as
	// MaxP99). Default 0.1.
	MaxErrorPct float64
	// SplitTolerancePP bounds each site's share of the proxy's 2xx answers, distance from
	// its target share, in percentage points (steady, soak). Default 2.
	SplitTolerancePP float64
	// MaxGrowthPct bounds the proxy's resident memory and goroutines at the end of a soak
	// against early in it, in %. Default 20.
	MaxGrowthPct float64
	// MinCapacity is the capacity (2xx req/s) a ramp must find at least; 0: its starting
	// rate.
	MinCapacity float64
}

// TargetOptions configure a run against a running deployment (spillway bench -target).
type TargetOptions struct {
	// Scenarios to run, of TargetScenarioNames; empty: steady.
	Scenarios []string
	// Target is the URL of the proxy (http:// or https://); any host the user names.
	Target string
	// Admin is the proxy's admin API (http://127.0.0.1:9901), or a comma-separated list
	// of every replica's behind a fleet's address (their counts are added up); "": the
	// verdicts use the client's view only.
	Admin string
	// Token is the admin API's bearer token ("": none; reads on loopback need none).
	Token string
	// CAFile holds the PEM certificates that the target's and the admin API's TLS
	// certificates are checked against; "": the system's.
	CAFile string
	// HTTP2 speaks HTTP/2 to the target: over TLS by ALPN, over http:// as h2c (prior
	// knowledge). Default HTTP/1.1.
	HTTP2 bool
	// Rate is the offered rate in req/s (spike: the base; ramp: the start); 0: 100.
	Rate float64
	// Duration is each scenario's length; 0: 1 minute (soak: 30 minutes).
	Duration time.Duration
	// Concurrency caps the requests open at once; a request due while that many are open
	// is not sent (not_sent). 0: 1000.
	Concurrency int
	// Timeout bounds each request; 0: 10s.
	Timeout time.Duration
	// Method, Header and BodySize shape every request (unless Paths). Method "": GET.
	Method   string
	Header   http.Header
	BodySize int
	// Paths are sent in turn instead of GET Target (see ReadPaths); Header applies to them.
	Paths []PathEntry
	// Sessions spreads the requests over this many sessions, each with its affinity key
	// (SessionCookie, or SessionHeader), to check that each stays on one site. 0: none.
	Sessions      int
	SessionCookie string // default SESSION
	SessionHeader string
	// SiteHeader is the response header in which backends name their site (the simulated
	// ones send X-Sim-Site); "": X-Sim-Site. Without it the site of a session's requests is
	// asked of the admin API (GET /api/v1/explain), for a sample of them.
	SiteHeader string
	// SpikeFactor is the spike's peak over Rate; 0: 3.
	SpikeFactor float64
	// RampTo is the ramp's last rate; 0: 10 × Rate. RampSteps: 0: 10.
	RampTo    float64
	RampSteps int
	// Thresholds of the verdicts.
	Thresholds Thresholds
	// SampleEvery is how often the admin API is read; 0: 1s.
	SampleEvery time.Duration
	// Seed makes arrivals and sessions repeatable.
	Seed uint64
	// Progress receives a line a second; nil: none.
	Progress io.Writer
	// Build is this build of Spillway, for the report.
	Build *BuildInfo
}

// OptionsError is RunTarget's error for options it refuses (a usage mistake): every
// problem, joined.
type OptionsError struct{ Err error }

func (e *OptionsError) Error() string { return e.Err.Error() }
func (e *OptionsError) Unwrap() error { return e.Err }

// withDefaults fills in the defaults and checks o; every problem is reported.
func (o TargetOptions) withDefaults() (TargetOptions, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(o.Scenarios) == 0 {
		o.Scenarios = []string{"steady"}
	}
	for _, n := range o.Scenarios {
		if !slices.Contains(targetScenarioNames, n) {
			if slices.Contains(ScenarioNames(), n) {
				bad("scenario %s runs only against simulated sites (it kills, slows or reconfigures them); with -target: %s", n, strings.Join(targetScenarioNames, ", "))
			} else {
				bad("unknown scenario %q (with -target: %s)", n, strings.Join(targetScenarioNames, ", "))
			}
		}
	}
	if u, err := url.Parse(o.Target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("target %q: want http://host:port or https://host:port", o.Target)
	}
	if o.Rate == 0 {
		o.Rate = DefaultTargetRate
	}
	if o.Rate < 0 || o.Rate > maxTargetRate || math.IsNaN(o.Rate) {
		bad("rate %g: want more than 0 and at most %d req/s", o.Rate, maxTargetRate)
	}
	if o.Duration < 0 || o.Duration > MaxTargetDuration {
		bad("duration %s: want at most %s", o.Duration, MaxTargetDuration)
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultTargetConcurrency
	}
	if o.Concurrency < 0 || o.Concurrency > MaxTargetConcurrency {
		bad("concurrency %d: want 1 to %d", o.Concurrency, MaxTargetConcurrency)
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Timeout < 0 {
		bad("timeout %s: want more than 0", o.Timeout)
	}
	if o.Method == "" {
		o.Method = http.MethodGet
	}
	if !validMethod(o.Method) {
		bad("method %q: want an upper-case token such as GET or POST", o.Method)
	}
	if o.BodySize < 0 || o.BodySize > maxBodySize {
		bad("body size %d: want 0 to %d bytes", o.BodySize, maxBodySize)
	}
	if o.BodySize > 0 && len(o.Paths) > 0 {
		bad("body size and paths: the paths file says each request's body")
	}
	if o.Sessions < 0 || o.Sessions > 1_000_000 {
		bad("sessions %d: want 0 to 1000000", o.Sessions)
	}
	if o.SessionCookie != "" && o.SessionHeader != "" {
		bad("session cookie and session header: the proxy's affinity uses one of them")
	}
	if o.SessionCookie == "" && o.SessionHeader == "" {
		o.SessionCookie = "SESSION"
	}
	if o.SpikeFactor == 0 {
		o.SpikeFactor = DefaultSpikeFactor
	}
	if o.SpikeFactor < 1 || o.SpikeFactor > 100 {
		bad("spike factor %g: want 1 to 100", o.SpikeFactor)
	}
	if o.RampTo == 0 {
		o.RampTo = 10 * o.Rate
	}
	ramp := slices.Contains(o.Scenarios, "ramp")
	if ramp && (o.RampTo <= o.Rate || o.RampTo > maxTargetRate) {
		bad("ramp to %g req/s: want more than the rate (%g) and at most %d", o.RampTo, o.Rate, maxTargetRate)
	}
	if o.RampSteps == 0 {
		o.RampSteps = DefaultRampSteps
	}
	if ramp && (o.RampSteps < 2 || o.RampSteps > 100) {
		bad("ramp steps %d: want 2 to 100", o.RampSteps)
	}
	t := &o.Thresholds
	if t.MaxP99 == 0 {
		t.MaxP99 = time.Second
	}
	if t.MaxErrorPct == 0 {
		t.MaxErrorPct = 0.1
	}
	if t.SplitTolerancePP == 0 {
		t.SplitTolerancePP = 2
	}
	if t.MaxGrowthPct == 0 {
		t.MaxGrowthPct = 20
	}
	if t.MaxP99 < 0 || t.MaxErrorPct < 0 || t.SplitTolerancePP < 0 || t.MaxGrowthPct < 0 || t.MinCapacity < 0 {
		bad("thresholds must not be negative")
	}
	if o.SampleEvery == 0 {
		o.SampleEvery = time.Second
	}
	if o.SampleEvery < 50*time.Millisecond || o.SampleEvery > time.Minute {
		bad("sample interval %s: want 50ms to 1m", o.SampleEvery)
	}
	if o.SiteHeader == "" {
		o.SiteHeader = "X-Sim-Site"
	}
	for _, n := range o.Scenarios {
		d := o.durationOf(n)
		peak := o.Rate
		switch n {
		case "spike":
			peak = o.Rate * o.SpikeFactor
		case "ramp":
			peak = o.RampTo
		}
		if peak*d.Seconds() > maxTargetRequests {
			bad("scenario %s: %g req/s for %s is more than %d requests: lower -rate or -duration", n, peak, d, maxTargetRequests)
		}
	}
	return o, errors.Join(errs...)
}

func (o *TargetOptions) durationOf(scenario string) time.Duration {
	if o.Duration > 0 {
		return o.Duration
	}
	if scenario == "soak" {
		return DefaultSoakDuration
	}
	return DefaultTargetDuration
}

// httpClient is the client of the target and the admin API: HTTP/1.1 or HTTP/2 (h2c over
// http://), TLS checked against caFile, no redirects followed, no proxy from the
// environment (the load must reach the target, not a corporate proxy).
func httpClient(caFile string, h2 bool, maxConns int) (*http.Client, *http.Transport, error) {
	tr := &http.Transport{Proxy: nil, MaxIdleConns: maxConns, MaxIdleConnsPerHost: maxConns,
		DisableCompression: true, IdleConnTimeout: 30 * time.Second, TLSHandshakeTimeout: 10 * time.Second,
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, nil, fmt.Errorf("ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("ca file %s: no PEM certificate in it", caFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	var p http.Protocols
	if h2 {
		p.SetHTTP2(true)
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	tr.Protocols = &p
	client := &http.Client{Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return client, tr, nil
}

// RunTarget runs the chosen scenarios against a running deployment and returns the report.
// A scenario that cannot run gets verdict Error and the next one runs; RunTarget's error
// is for bad options, an admin API that does not answer at the start, or a cancelled ctx.
func RunTarget(ctx context.Context, o TargetOptions) (*Report, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, &OptionsError{err}
	}
	client, tr, err := httpClient(o.CAFile, o.HTTP2, o.Concurrency)
	if err != nil {
		return nil, err
	}
	defer tr.CloseIdleConnections()
	proto := "HTTP/1.1"
	if o.HTTP2 {
		proto = "HTTP/2"
	}
	rep := &Report{Started: time.Now().UTC().Format(time.RFC3339), Machine: machine(), Mode: ModeTarget,
		Seed: o.Seed, Spillway: o.Build, Target: &TargetInfo{URL: o.Target, Admin: o.Admin, Protocol: proto}}
	tg := &targetRun{o: o, client: client, rep: rep}
	if o.Admin != "" {
		// The admin API gets a client of its own: its requests must not wait behind the
		// load's connections, nor be counted as load.
		ac, atr, err := httpClient(o.CAFile, false, 4)
		if err != nil {
			return nil, err
		}
		defer atr.CloseIdleConnections()
		ac.Timeout = 10 * time.Second
		if tg.view, err = openProxyView(ctx, adminURLs(o.Admin), o.Token, ac, rep.Target); err != nil {
			return nil, err
		}
	}
	begin := time.Now()
	for _, name := range o.Scenarios {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "=== %s: %s\n", name, targetTitle(name, &o))
		}
		t0 := time.Now()
		r, err := tg.scenario(ctx, name)
		if r == nil {
			r = &Result{}
		}
		r.Name, r.Title, r.Description = name, targetTitle(name, &o), targetDescription(name, &o, tg.view != nil)
		if err != nil {
			r.Verdict, r.Note = Error, err.Error()
		}
		r.Judge()
		r.Seconds = round3(time.Since(t0).Seconds())
		rep.Scenarios = append(rep.Scenarios, r)
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "--- %s: %s\n", name, strings.ToUpper(string(r.Verdict)))
			for _, ch := range r.Checks {
				fmt.Fprintf(o.Progress, "    %s\n", ch)
			}
			if r.Note != "" {
				fmt.Fprintf(o.Progress, "    note: %s\n", r.Note)
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	rep.Seconds = round3(time.Since(begin).Seconds())
	rep.judge()
	return rep, ctx.Err()
}

func targetTitle(name string, o *TargetOptions) string {
	switch name {
	case "steady":
		return fmt.Sprintf("steady load of %g req/s", o.Rate)
	case "spike":
		return fmt.Sprintf("%g req/s with a spike to %g req/s", o.Rate, o.Rate*o.SpikeFactor)
	case "ramp":
		return fmt.Sprintf("a ramp from %g to %g req/s, to find the capacity", o.Rate, o.RampTo)
	case "soak":
		return fmt.Sprintf("%g req/s for %s, watching the proxy's memory and goroutines", o.Rate, o.durationOf("soak"))
	}
	return name
}

func targetDescription(name string, o *TargetOptions, admin bool) string {
	t := o.Thresholds
	client := fmt.Sprintf("Client's view: p99 at most %s, at most %g%% of requests answered other than 2xx, every request sent (the -concurrency cap of %d never reached).",
		t.MaxP99, t.MaxErrorPct, o.Concurrency)
	proxyView := " The proxy's view is not judged: no -admin."
	var d string
	switch name {
	case "steady":
		d = fmt.Sprintf("Poisson arrivals at %g req/s for %s.", o.Rate, o.durationOf(name))
		if admin {
			proxyView = fmt.Sprintf(" Proxy's view (state API and /metrics, sampled every %s): each site's share of the proxy's 2xx answers within %g points of its target share, no backend above its limit, no request shed.", o.SampleEvery, t.SplitTolerancePP)
		}
	case "spike":
		d = fmt.Sprintf("%g req/s, then %g× that (%g req/s) from 35%% to 65%% of %s, then %g req/s again.", o.Rate, o.SpikeFactor, o.Rate*o.SpikeFactor, o.durationOf(name), o.Rate)
		if admin {
			proxyView = " Proxy's view: no backend above its limit; of the requests spilled, at least 95% went to an elastic site (when there is one). Spills and sheds by reason are reported."
		}
	case "ramp":
		d = fmt.Sprintf("The rate rises in %d equal steps from %g to %g req/s over %s; a step holds when its p99 is at most %s and at most %g%% of its requests are not answered 2xx. The ramp stops at the first step that does not hold; the capacity found is the highest 2xx rate of a step that held, and must be at least %s.",
			o.RampSteps, o.Rate, o.RampTo, o.durationOf(name), t.MaxP99, t.MaxErrorPct, minCapacityText(o))
		client = ""
		if admin {
			proxyView = " Proxy's view: no backend above its limit while the steps held."
		}
	case "soak":
		d = fmt.Sprintf("Poisson arrivals at %g req/s for %s.", o.Rate, o.durationOf(name))
		if admin {
			proxyView = fmt.Sprintf(" Proxy's view: as steady, and its resident memory (process_resident_memory_bytes) and goroutines (go_goroutines) at the end at most %g%% above what they were early in the run (10%% to 20%% of it).", t.MaxGrowthPct)
		}
	}
	s := d
	if client != "" {
		s += " " + client
	}
	s += proxyView
	if o.Sessions > 0 {
		s += fmt.Sprintf(" Requests are spread over %d sessions (affinity %s); each session's sites are reported, and in steady and soak each must stay on one site.", o.Sessions, sessionKeyText(o))
	}
	return s
}

func minCapacityText(o *TargetOptions) string {
	if o.Thresholds.MinCapacity > 0 {
		return fmt.Sprintf("%g req/s", o.Thresholds.MinCapacity)
	}
	return fmt.Sprintf("the starting rate (%g req/s)", o.Rate)
}

func sessionKeyText(o *TargetOptions) string {
	if o.SessionHeader != "" {
		return "header " + o.SessionHeader
	}
	return "cookie " + o.SessionCookie
}

// targetRun is one RunTarget.
type targetRun struct {
	o      TargetOptions
	client *http.Client
	view   *proxyView // nil without -admin
	rep    *Report
}
