package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/spillway/spillway/bench/sim"
)

// Profile is an offered rate over time: requests per second at t after the start.
type Profile func(t time.Duration) float64

// Constant offers r requests per second throughout.
func Constant(r float64) Profile { return func(time.Duration) float64 { return r } }

// Step offers before until at, then after.
func Step(before, after float64, at time.Duration) Profile {
	return func(t time.Duration) float64 {
		if t < at {
			return before
		}
		return after
	}
}

// Spike offers base, except peak from from until to.
func Spike(base, peak float64, from, to time.Duration) Profile {
	return func(t time.Duration) float64 {
		if t >= from && t < to {
			return peak
		}
		return base
	}
}

// Ramp offers from r0 to r1 linearly between from and to, r0 before and r1 after.
func Ramp(r0, r1 float64, from, to time.Duration) Profile {
	return func(t time.Duration) float64 {
		switch {
		case t <= from:
			return r0
		case t >= to:
			return r1
		}
		return r0 + (r1-r0)*float64(t-from)/float64(to-from)
	}
}

// Arrivals is how requests are spaced at a given rate.
type Arrivals uint8

const (
	// Poisson spaces requests by exponential gaps: independent clients.
	Poisson Arrivals = iota
	// Uniform spaces them evenly: 1/rate apart.
	Uniform
)

func (a Arrivals) String() string { return [...]string{"poisson", "constant"}[a] }

// scheduleStep is the step in which Schedule integrates the rate.
const scheduleStep = time.Millisecond

// Schedule returns the send times (offsets from the start) of an open-loop load: rate p,
// spaced by a, for duration, at most maxRequests (0: no bound besides duration). The next
// request is due when the integral of the rate since the last one reaches 1 (Uniform; the
// first is due as soon as the rate is above 0) or an exponential draw of mean 1 (Poisson):
// exact for piecewise-constant rates, and right for ramps too, where drawing each gap at
// the rate of its own instant would lag. rng is used only for Poisson.
func Schedule(p Profile, a Arrivals, duration time.Duration, maxRequests int, rng *rand.Rand) []time.Duration {
	var out []time.Duration
	end := duration.Seconds()
	dt := scheduleStep.Seconds()
	t := 0.0
	for maxRequests <= 0 || len(out) < maxRequests {
		need := 1.0
		if a == Poisson {
			need = rng.ExpFloat64()
		} else if len(out) == 0 {
			need = 0
		}
		for {
			if t >= end {
				return out
			}
			r := p(time.Duration(t * float64(time.Second)))
			if r > 0 && !math.IsNaN(r) {
				if r*dt >= need {
					t += need / r
					break
				}
				need -= r * dt
			}
			t += dt
		}
		due := time.Duration(math.Round(t * float64(time.Second))) // whole nanoseconds: 3s is not 2.9999999s
		if due >= duration {
			return out
		}
		out = append(out, due)
	}
	return out
}

// Outcome classifies how a request ended.
type Outcome uint8

const (
	OK        Outcome = iota // 2xx
	Shed                     // 503 from the proxy itself (no site answered)
	Status5xx                // another 5xx (a backend's, or the proxy's 502/504)
	Status4xx                // any other non-2xx
	Failed                   // no answer: connection or timeout error
	Overflow                 // not sent: the generator had MaxInflight requests out
	numOutcomes
)

var outcomeNames = [...]string{"ok", "shed", "5xx", "4xx", "failed", "not_sent"}

func (o Outcome) String() string { return outcomeNames[o] }

// Record is one request of a load run.
type Record struct {
	Sched   time.Duration // when it was due, from the start of the run
	Sent    time.Duration // when it was handed to the client
	Latency time.Duration // from Sched (not Sent) to the end of the answer's body
	Status  int           // 0 without an answer
	Site    int8          // index of the answering site in LoadOptions.Sites (or Learn); -1: none
	Outcome Outcome
	Seq     int32 // the request's index in the schedule
}

// LoadOptions describe an open-loop load run.
type LoadOptions struct {
	// Target is the URL every request GETs (unless NewRequest); it must be on a loopback
	// address unless Remote.
	Target string
	// Remote allows a Target off loopback: the user named it (spillway bench -target).
	Remote bool
	// NewRequest makes request i of the schedule; nil: GET Target.
	NewRequest func(ctx context.Context, i int) (*http.Request, error)
	// Client sends the requests; nil: a client over a Transport of its own, closed at the
	// end. A Client's Timeout, if 0, is set from Timeout on a copy.
	Client *http.Client
	// SiteHeader names the response header that says which site answered; "": X-Sim-Site.
	SiteHeader string
	// Learn, if set, is used instead of Sites: site names are learnt as answers name them.
	Learn *SiteNames
	// Stop, when closed, stops sending: the requests not yet due are not sent (Overflow)
	// and those out finish. nil: none.
	Stop <-chan struct{}
	// Schedule is when each request is due (see Schedule).
	Schedule []time.Duration
	// MaxInflight bounds the requests out at once; a request due while that many are out is
	// not sent and counts as Overflow. Default 1000.
	MaxInflight int
	// Timeout bounds each request. Default 10s.
	Timeout time.Duration
	// Sites names the sites that may answer (their X-Sim-Site header), for Record.Site.
	Sites []string
	// OnRecord, if set, sees every record as it completes; it must not block.
	OnRecord func(Record)
}

// checkLoopback refuses a target that is not on a loopback address: the generator is for
// simulated sites, never for a real service.
func checkLoopback(target string) error {
	u, err := url.Parse(target)
	if err != nil {
		return err
	}
	ip := net.ParseIP(u.Hostname())
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("load target %q is not on a loopback address", target)
	}
	return nil
}

// Generate runs an open-loop load: each request is sent when it is due, whatever became of
// the earlier ones, and its latency counts from when it was due, so that a slow answer
// delays no measurement (no coordinated omission). It returns every request's record, in
// schedule order, once all have ended or ctx is done (those still out then count Failed).
func Generate(ctx context.Context, o LoadOptions) ([]Record, error) {
	if !o.Remote {
		if err := checkLoopback(o.Target); err != nil {
			return nil, err
		}
	}
	if len(o.Schedule) > math.MaxInt32 {
		return nil, fmt.Errorf("schedule of %d requests: too long", len(o.Schedule))
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = 1000
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	g := newGenerator(o)
	defer g.closeIdle()
	err := g.dispatch(ctx)
	close(g.jobs)
	g.workers.Wait()
	return g.records, err
}

// generator is one Generate: the records, and the workers that send.
type generator struct {
	o          LoadOptions
	client     *http.Client
	closeIdle  func() // closes the idle connections of a client of its own
	newRequest func(ctx context.Context, i int) (*http.Request, error)
	names      *SiteNames
	siteHeader string
	records    []Record // each written by the one goroutine that sends it, or by dispatch
	start      time.Time

	jobs    chan int // indexes of requests due
	workers sync.WaitGroup
	started int        // workers started; dispatch's own
	idleMu  sync.Mutex // guards idle
	idle    int        // workers waiting for a job
}

func newGenerator(o LoadOptions) *generator {
	g := &generator{o: o, names: o.Learn, siteHeader: o.SiteHeader, newRequest: o.NewRequest,
		records: make([]Record, len(o.Schedule)), jobs: make(chan int, o.MaxInflight)}
	if g.names == nil {
		g.names = NewSiteNames(o.Sites...)
		g.names.fixed = true
	}
	if g.siteHeader == "" {
		g.siteHeader = sim.HeaderSite
	}
	g.client, g.closeIdle = loadClient(o.Client, o.MaxInflight, o.Timeout)
	if g.newRequest == nil {
		g.newRequest = func(ctx context.Context, _ int) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodGet, o.Target, nil)
		}
	}
	return g
}

// loadClient is client with timeout when it has none (on a copy), or, with no client, one
// over a Transport of its own that closeIdle closes.
func loadClient(client *http.Client, maxInflight int, timeout time.Duration) (_ *http.Client, closeIdle func()) {
	if client == nil {
		tr := &http.Transport{Proxy: nil, MaxIdleConns: maxInflight, MaxIdleConnsPerHost: maxInflight,
			DisableCompression: true, IdleConnTimeout: 30 * time.Second}
		return &http.Client{Transport: tr, Timeout: timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, tr.CloseIdleConnections
	}
	if client.Timeout == 0 {
		c := *client
		c.Timeout = timeout
		client = &c
	}
	return client, func() {}
}

// dispatch hands each request to a worker when it is due, starting workers as needed,
// never more than MaxInflight; a request due when all are busy is not sent (Overflow).
// On Stop or ctx's end, the requests not yet due are not sent.
func (g *generator) dispatch(ctx context.Context) error {
	g.start = time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for i, due := range g.o.Schedule {
		g.records[i].Sched = due
		if wait := due - time.Since(g.start); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-g.o.Stop:
				g.notSentFrom(i)
				return nil
			case <-ctx.Done():
				g.notSentFrom(i)
				return ctx.Err()
			}
		}
		if !g.takeIdle() {
			if g.started >= g.o.MaxInflight {
				g.overflow(i)
				continue
			}
			g.started++
			g.workers.Add(1)
			go g.work(ctx)
		}
		g.jobs <- i
	}
	return nil
}

// notSentFrom records the requests from i on as not sent.
func (g *generator) notSentFrom(i int) {
	for j := i; j < len(g.o.Schedule); j++ {
		g.records[j] = Record{Sched: g.o.Schedule[j], Site: -1, Outcome: Overflow, Seq: int32(j)}
	}
}

// overflow records request i, due while MaxInflight were out, as not sent.
func (g *generator) overflow(i int) {
	g.records[i].Site, g.records[i].Outcome, g.records[i].Seq = -1, Overflow, int32(i)
	if g.o.OnRecord != nil {
		g.o.OnRecord(g.records[i])
	}
}

// takeIdle claims a waiting worker, if there is one.
func (g *generator) takeIdle() bool {
	g.idleMu.Lock()
	defer g.idleMu.Unlock()
	if g.idle == 0 {
		return false
	}
	g.idle--
	return true
}

// work sends the jobs it gets until jobs closes, counting itself idle after each.
func (g *generator) work(ctx context.Context) {
	defer g.workers.Done()
	for i := range g.jobs {
		g.send(ctx, i)
		g.idleMu.Lock()
		g.idle++
		g.idleMu.Unlock()
	}
}

// send sends request i and records how it ended.
func (g *generator) send(ctx context.Context, i int) {
	rec := &g.records[i]
	rec.Sent = time.Since(g.start)
	rec.Site = -1
	rec.Seq = int32(i)
	req, err := g.newRequest(ctx, i)
	if err == nil {
		var res *http.Response
		if res, err = g.client.Do(req); err == nil {
			_, err = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			rec.Status = res.StatusCode
			rec.Site = g.names.index(res.Header.Get(g.siteHeader))
		}
	}
	rec.Latency = time.Since(g.start) - rec.Sched
	rec.Outcome = classifyAnswer(rec.Status, rec.Site >= 0, err)
	if g.o.OnRecord != nil {
		g.o.OnRecord(*rec)
	}
}

// maxSiteNames bounds the site names SiteNames learns: a target's header is not trusted.
const maxSiteNames = 32

// SiteNames numbers the sites that answers name (Record.Site). Safe for concurrent use.
type SiteNames struct {
	mu     sync.Mutex
	names  []string
	byName map[string]int8
	fixed  bool // learns no new name
}

// NewSiteNames starts with names, numbered in order; others are learnt as they are seen,
// up to 32.
func NewSiteNames(names ...string) *SiteNames {
	s := &SiteNames{byName: map[string]int8{}}
	for _, n := range names {
		s.index(n)
	}
	return s
}

func (s *SiteNames) index(name string) int8 {
	if name == "" {
		return -1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.byName[name]; ok {
		return i
	}
	if s.fixed || len(s.names) >= maxSiteNames {
		return -1
	}
	s.byName[name] = int8(len(s.names))
	s.names = append(s.names, name)
	return int8(len(s.names) - 1)
}

// Names are the sites known, by index.
func (s *SiteNames) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.names...)
}

func classifyAnswer(status int, fromSite bool, err error) Outcome {
	switch {
	case err != nil && status == 0:
		return Failed
	case err != nil: // the body broke off
		return Failed
	case status >= 200 && status < 300:
		return OK
	case status == http.StatusServiceUnavailable && !fromSite:
		return Shed
	case status >= 500:
		return Status5xx
	default:
		return Status4xx
	}
}
