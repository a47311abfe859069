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
	names := o.Learn
	if names == nil {
		names = NewSiteNames(o.Sites...)
		names.fixed = true
	}
	siteHeader := o.SiteHeader
	if siteHeader == "" {
		siteHeader = sim.HeaderSite
	}
	client := o.Client
	if client == nil {
		tr := &http.Transport{Proxy: nil, MaxIdleConns: o.MaxInflight, MaxIdleConnsPerHost: o.MaxInflight,
			DisableCompression: true, IdleConnTimeout: 30 * time.Second}
		defer tr.CloseIdleConnections()
		client = &http.Client{Transport: tr, Timeout: o.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	} else if client.Timeout == 0 {
		c := *client
		c.Timeout = o.Timeout
		client = &c
	}
	newRequest := o.NewRequest
	if newRequest == nil {
		newRequest = func(ctx context.Context, _ int) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, http.MethodGet, o.Target, nil)
		}
	}

	records := make([]Record, len(o.Schedule))
	jobs := make(chan int, o.MaxInflight)
	var workers sync.WaitGroup
	start := time.Now()
	send := func(i int) {
		rec := &records[i]
		rec.Sent = time.Since(start)
		rec.Site = -1
		rec.Seq = int32(i)
		req, err := newRequest(ctx, i)
		if err == nil {
			var res *http.Response
			if res, err = client.Do(req); err == nil {
				_, err = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				rec.Status = res.StatusCode
				rec.Site = names.index(res.Header.Get(siteHeader))
			}
		}
		rec.Latency = time.Since(start) - rec.Sched
		rec.Outcome = classifyAnswer(rec.Status, rec.Site >= 0, err)
		if o.OnRecord != nil {
			o.OnRecord(*rec)
		}
	}
	// Workers are started as needed, never more than MaxInflight, and all end when jobs
	// closes.
	idle := 0
	var idleMu sync.Mutex
	worker := func() {
		defer workers.Done()
		for i := range jobs {
			send(i)
			idleMu.Lock()
			idle++
			idleMu.Unlock()
		}
	}
	started := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	var err error
dispatch:
	for i, due := range o.Schedule {
		records[i].Sched = due
		if wait := due - time.Since(start); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-o.Stop:
				for j := i; j < len(o.Schedule); j++ {
					records[j] = Record{Sched: o.Schedule[j], Site: -1, Outcome: Overflow, Seq: int32(j)}
				}
				break dispatch
			case <-ctx.Done():
				err = ctx.Err()
				for j := i; j < len(o.Schedule); j++ {
					records[j] = Record{Sched: o.Schedule[j], Site: -1, Outcome: Overflow, Seq: int32(j)}
				}
				break dispatch
			}
		}
		idleMu.Lock()
		free := idle > 0
		if free {
			idle--
		}
		idleMu.Unlock()
		if !free {
			if started >= o.MaxInflight {
				records[i].Site, records[i].Outcome, records[i].Seq = -1, Overflow, int32(i)
				if o.OnRecord != nil {
					o.OnRecord(records[i])
				}
				continue
			}
			started++
			workers.Add(1)
			go worker()
		}
		jobs <- i
	}
	close(jobs)
	workers.Wait()
	return records, err
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
