package bench

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// The options of target mode, their defaults and their checks.

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

// withDefaults fills in the defaults and checks o; every problem is reported, in the order
// of the options.
func (o TargetOptions) withDefaults() (TargetOptions, error) {
	var p problems
	o.checkScenarios(&p)
	o.loadDefaults(&p)
	o.requestDefaults(&p)
	o.sessionDefaults(&p)
	o.shapeDefaults(&p)
	o.Thresholds.withDefaults(&p)
	if o.SampleEvery == 0 {
		o.SampleEvery = time.Second
	}
	if o.SampleEvery < 50*time.Millisecond || o.SampleEvery > time.Minute {
		p.add("sample interval %s: want 50ms to 1m", o.SampleEvery)
	}
	if o.SiteHeader == "" {
		o.SiteHeader = "X-Sim-Site"
	}
	o.checkRequestCount(&p)
	return o, errors.Join(p...)
}

// problems collects every problem of the options, so that all are reported at once.
type problems []error

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Errorf(format, args...)) }

// checkScenarios defaults the scenarios to steady and refuses those of simulated sites.
func (o *TargetOptions) checkScenarios(p *problems) {
	if len(o.Scenarios) == 0 {
		o.Scenarios = []string{"steady"}
	}
	for _, n := range o.Scenarios {
		if !slices.Contains(targetScenarioNames, n) {
			if slices.Contains(ScenarioNames(), n) {
				p.add("scenario %s runs only against simulated sites (it kills, slows or reconfigures them); with -target: %s", n, strings.Join(targetScenarioNames, ", "))
			} else {
				p.add("unknown scenario %q (with -target: %s)", n, strings.Join(targetScenarioNames, ", "))
			}
		}
	}
}

// loadDefaults checks the target and defaults the load: rate, duration, concurrency and
// timeout.
func (o *TargetOptions) loadDefaults(p *problems) {
	if u, err := url.Parse(o.Target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.add("target %q: want http://host:port or https://host:port", o.Target)
	}
	if o.Rate == 0 {
		o.Rate = DefaultTargetRate
	}
	if o.Rate < 0 || o.Rate > maxTargetRate || math.IsNaN(o.Rate) {
		p.add("rate %g: want more than 0 and at most %d req/s", o.Rate, maxTargetRate)
	}
	if o.Duration < 0 || o.Duration > MaxTargetDuration {
		p.add("duration %s: want at most %s", o.Duration, MaxTargetDuration)
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultTargetConcurrency
	}
	if o.Concurrency < 0 || o.Concurrency > MaxTargetConcurrency {
		p.add("concurrency %d: want 1 to %d", o.Concurrency, MaxTargetConcurrency)
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Timeout < 0 {
		p.add("timeout %s: want more than 0", o.Timeout)
	}
}

// requestDefaults defaults and checks the shape of every request: method and body.
func (o *TargetOptions) requestDefaults(p *problems) {
	if o.Method == "" {
		o.Method = http.MethodGet
	}
	if !validMethod(o.Method) {
		p.add("method %q: want an upper-case token such as GET or POST", o.Method)
	}
	if o.BodySize < 0 || o.BodySize > maxBodySize {
		p.add("body size %d: want 0 to %d bytes", o.BodySize, maxBodySize)
	}
	if o.BodySize > 0 && len(o.Paths) > 0 {
		p.add("body size and paths: the paths file says each request's body")
	}
}

// sessionDefaults checks the sessions and defaults their key to the cookie SESSION.
func (o *TargetOptions) sessionDefaults(p *problems) {
	if o.Sessions < 0 || o.Sessions > 1_000_000 {
		p.add("sessions %d: want 0 to 1000000", o.Sessions)
	}
	if o.SessionCookie != "" && o.SessionHeader != "" {
		p.add("session cookie and session header: the proxy's affinity uses one of them")
	}
	if o.SessionCookie == "" && o.SessionHeader == "" {
		o.SessionCookie = "SESSION"
	}
}

// shapeDefaults defaults and checks the spike's and the ramp's shape; the ramp's only
// when it is to run.
func (o *TargetOptions) shapeDefaults(p *problems) {
	if o.SpikeFactor == 0 {
		o.SpikeFactor = DefaultSpikeFactor
	}
	if o.SpikeFactor < 1 || o.SpikeFactor > 100 {
		p.add("spike factor %g: want 1 to 100", o.SpikeFactor)
	}
	if o.RampTo == 0 {
		o.RampTo = 10 * o.Rate
	}
	ramp := slices.Contains(o.Scenarios, "ramp")
	if ramp && (o.RampTo <= o.Rate || o.RampTo > maxTargetRate) {
		p.add("ramp to %g req/s: want more than the rate (%g) and at most %d", o.RampTo, o.Rate, maxTargetRate)
	}
	if o.RampSteps == 0 {
		o.RampSteps = DefaultRampSteps
	}
	if ramp && (o.RampSteps < 2 || o.RampSteps > 100) {
		p.add("ramp steps %d: want 2 to 100", o.RampSteps)
	}
}

// withDefaults fills in the thresholds' defaults and refuses negative ones.
func (t *Thresholds) withDefaults(p *problems) {
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
		p.add("thresholds must not be negative")
	}
}

// checkRequestCount refuses a scenario that would send more than maxTargetRequests at its
// peak rate for its whole length: its schedule and records would not fit.
func (o *TargetOptions) checkRequestCount(p *problems) {
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
			p.add("scenario %s: %g req/s for %s is more than %d requests: lower -rate or -duration", n, peak, d, maxTargetRequests)
		}
	}
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
