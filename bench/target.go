package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spillway/spillway/configs"
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

// httpClient is the client of the target and the admin API: HTTP/1.1 or HTTP/2 (h2c over
// http://), TLS checked against caFile, no redirects followed, no proxy from the
// environment (the load must reach the target, not a corporate proxy).
func httpClient(caFile string, h2 bool, maxConns int) (*http.Client, *http.Transport, error) {
	tr := &http.Transport{Proxy: nil, MaxIdleConns: maxConns, MaxIdleConnsPerHost: maxConns,
		DisableCompression: true, IdleConnTimeout: 30 * time.Second, TLSHandshakeTimeout: 10 * time.Second,
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
	if caFile != "" {
		pool, err := configs.LoadCertPool(caFile)
		if err != nil {
			return nil, nil, fmt.Errorf("ca file: %w", err)
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
