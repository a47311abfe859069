package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// The load of target mode: the requests (method, headers, body, paths, session keys, an
// X-Request-Id of the bench's), the open-loop run with the proxy sampled beside it
// (target_watch.go) and a sample of the sessions' requests explained (target_explain.go),
// and the ramp's per-step judgement.

// targetData is what one load run against the target measured.
type targetData struct {
	runData
	names    *SiteNames
	proxy    []proxySample // the first before the load, the last after it
	explains map[int32]explained
	explainN struct{ asked, failed, dropped int }
	stopAt   time.Duration // ramp: when sending stopped; 0: it ran its length
}

// requestMaker builds the target's requests.
type requestMaker struct {
	o     *TargetOptions
	body  []byte
	runID string
}

func (m *requestMaker) session(i int) int {
	if m.o.Sessions == 0 {
		return -1
	}
	return i % m.o.Sessions
}

func (m *requestMaker) requestID(i int) string { return m.runID + "-" + strconv.Itoa(i) }

func (m *requestMaker) make(ctx context.Context, i int) (*http.Request, error) {
	method, target, body := m.o.Method, m.o.Target, m.body
	if n := len(m.o.Paths); n > 0 {
		e := &m.o.Paths[i%n]
		method, target, body = e.Method, e.URL, e.Body
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, err
	}
	for k, vs := range m.o.Header {
		req.Header[k] = vs
	}
	if h := m.o.Header.Get("Host"); h != "" {
		req.Host = h
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	// The proxy keeps this ID (and logs it): GET /api/v1/explain?request_id= tells which
	// site served the request, and an operator can find the bench's requests in the logs.
	req.Header.Set("X-Request-Id", m.requestID(i))
	if s := m.session(i); s >= 0 {
		key := fmt.Sprintf("bench-%d-%d", m.o.Seed, s)
		if m.o.SessionHeader != "" {
			req.Header.Set(m.o.SessionHeader, key)
		} else {
			req.AddCookie(&http.Cookie{Name: m.o.SessionCookie, Value: key})
		}
	}
	return req, nil
}

// drive runs one open-loop load at the target: profile for d, sampling the proxy meanwhile
// and printing a line a second. stop, if set, is asked after every sample and ends the
// sending when it says so (the ramp). Every goroutine it starts has ended when it returns.
func (tg *targetRun) drive(ctx context.Context, name string, p Profile, d time.Duration,
	stop func(now time.Duration, lv *stepStats) bool, steps []time.Duration) (*targetData, error) {
	o := &tg.o
	rng := rand.New(rand.NewPCG(o.Seed, 0x7a29e7))
	tl := tg.newTargetLoad(name, Schedule(p, Poisson, d, maxTargetRequests, rng), d, steps)

	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	tl.start = time.Now()
	if tg.view != nil {
		tl.data.proxy = append(tl.data.proxy, tg.view.sample(ctx, 0))
	}
	// The explain workers outlive the load by up to explainDrain, to ask about its last
	// requests.
	exCtx, stopExplain := context.WithCancel(ctx)
	defer stopExplain()
	if tl.ex != nil {
		tl.ex.start(exCtx)
	}
	var wg sync.WaitGroup
	wg.Go(func() { tl.watch(bg, stop) })
	records, err := Generate(ctx, LoadOptions{Target: o.Target, Remote: true, Schedule: tl.sched,
		MaxInflight: o.Concurrency, Timeout: o.Timeout, NewRequest: tl.mk.make, Client: tg.client,
		SiteHeader: o.SiteHeader, Learn: tl.names, OnRecord: tl.record, Stop: tl.stopSend})
	tl.stopOnce.Do(func() { close(tl.stopSend) })
	if tl.ex != nil {
		tl.ex.drain(stopExplain)
	}
	stopBG()
	wg.Wait()
	if tg.view != nil {
		tl.data.proxy = append(tl.data.proxy, tg.settledSample(ctx, tl.start))
	}
	tl.finish(records)
	return tl.data, err
}

// targetLoad is one drive: its schedule, what it has measured so far, and the means to
// stop its sending.
type targetLoad struct {
	tg    *targetRun
	name  string // the scenario's, for the progress lines
	sched []time.Duration
	names *SiteNames
	mk    *requestMaker
	data  *targetData // data.proxy is the watch goroutine's while it runs
	lv    *live       // for the progress lines
	st    *stepStats  // for stop
	ex    *explainer  // nil: no sessions, or no admin API
	start time.Time

	stopSend chan struct{} // closed once, when the sending is to end
	stopOnce sync.Once
}

func (tg *targetRun) newTargetLoad(name string, sched []time.Duration, d time.Duration, steps []time.Duration) *targetLoad {
	o := &tg.o
	var sites []string
	if tg.view != nil {
		sites = tg.view.sites
	}
	runID := fmt.Sprintf("bench-%s-%x-%s", name, o.Seed, strconv.FormatInt(time.Now().UnixNano()%1e12, 36))
	mk := &requestMaker{o: o, runID: runID}
	if o.BodySize > 0 {
		mk.body = bodyOf(o.BodySize, o.Seed)
	}
	data := &targetData{explains: map[int32]explained{}}
	data.names = NewSiteNames(sites...)
	data.duration, data.bucket = d, time.Second
	data.weights = []weightsAt{{0, nil}} // no target share: the client's view knows no weights
	if tg.view != nil {
		data.weights = []weightsAt{{0, sharesAsWeights(tg.view.target)}}
	}
	tl := &targetLoad{tg: tg, name: name, sched: sched, names: data.names, mk: mk, data: data,
		lv: &live{bySite: make([]int, maxSiteNames)}, st: &stepStats{steps: steps, maxLatency: o.Thresholds.MaxP99},
		stopSend: make(chan struct{})}
	tl.st.init(sched)
	tl.ex = newExplainer(tg, mk, data, len(sched))
	return tl
}

// record sees each request as it ends: the progress lines and the ramp's steps count it,
// and a 2xx answer may be asked about.
func (tl *targetLoad) record(r Record) {
	tl.lv.add(r)
	tl.st.add(r)
	if tl.ex != nil && r.Outcome == OK {
		tl.ex.offer(r.Seq)
	}
}

// settledSample is the last sample of the proxy, once it has finished what it was sent (its
// counters are written as each request completes), or after a second.
func (tg *targetRun) settledSample(ctx context.Context, start time.Time) proxySample {
	settle, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	s := tg.view.sample(settle, time.Since(start))
	for s.err == nil && slices.ContainsFunc(s.inflight, func(n int64) bool { return n > 0 }) && settle.Err() == nil {
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-settle.Done():
		case <-t.C:
			s = tg.view.sample(settle, time.Since(start))
		}
		t.Stop()
	}
	if s.err != nil {
		s = tg.view.sample(ctx, time.Since(start))
	}
	return s
}

// finish keeps the records due before the sending stopped (the ramp), and the proxy's
// samples as the run's.
func (tl *targetLoad) finish(records []Record) {
	data := tl.data
	if data.stopAt > 0 {
		kept := records[:0]
		for _, r := range records {
			if r.Sched < data.stopAt {
				kept = append(kept, r)
			}
		}
		records = kept
		data.duration = data.stopAt
	}
	data.records = records
	data.sites = tl.names.Names()
	for _, s := range data.proxy {
		data.samples = append(data.samples, sample{t: s.t, inflight: s.inflight, limit: s.limit,
			spills: uint64(s.spillTotal()), sheds: uint64(s.shedTotal())})
	}
}

// bodyOf is a request body of n bytes: printable, and the same for the same seed.
func bodyOf(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 0xb0d7))
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return b
}

// sharesAsWeights turns target shares (%) into weights for runData.
func sharesAsWeights(shares []float64) []int {
	w := make([]int, len(shares))
	for i, s := range shares {
		w[i] = int(math.Round(s * 100))
	}
	return w
}

// stepStats counts, per step of a ramp, the requests due, answered, answered late and
// answered other than 2xx, as they finish. Safe for concurrent use.
type stepStats struct {
	mu         sync.Mutex
	steps      []time.Duration // step ends; nil: one step
	maxLatency time.Duration
	due        []int
	done       []int
	late       []int // answered after maxLatency
	errs       []int // not answered 2xx
}

func (s *stepStats) init(sched []time.Duration) {
	n := max(len(s.steps), 1)
	s.due, s.done, s.late, s.errs = make([]int, n), make([]int, n), make([]int, n), make([]int, n)
	for _, t := range sched {
		s.due[s.stepOf(t)]++
	}
}

func (s *stepStats) stepOf(t time.Duration) int {
	for i, end := range s.steps {
		if t < end {
			return i
		}
	}
	return max(len(s.steps)-1, 0)
}

func (s *stepStats) add(r Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.stepOf(r.Sched)
	s.done[k]++
	if r.Outcome != OK {
		s.errs[k]++
	} else if r.Latency > s.maxLatency {
		s.late[k]++
	}
}

// judge says what is known of step k once maxLatency has passed since its end: the % of
// its requests over maxLatency (answered late, or not answered yet), and the % answered
// other than 2xx.
func (s *stepStats) judge(k int) (latePct, errPct float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.due[k] == 0 {
		return 0, 0
	}
	n := float64(s.due[k])
	return 100 * float64(s.late[k]+s.due[k]-s.done[k]) / n, 100 * float64(s.errs[k]) / n
}
