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
	"strings"
	"sync"
	"time"
)

// The load of target mode: the requests (method, headers, body, paths, session keys, an
// X-Request-Id of the bench's), the open-loop run with the proxy sampled beside it, and
// the ramp's per-step judgement.

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
	sched := Schedule(p, Poisson, d, maxTargetRequests, rng)
	var sites []string
	if tg.view != nil {
		sites = tg.view.sites
	}
	names := NewSiteNames(sites...)
	runID := fmt.Sprintf("bench-%s-%x-%s", name, o.Seed, strconv.FormatInt(time.Now().UnixNano()%1e12, 36))
	mk := &requestMaker{o: o, runID: runID}
	if o.BodySize > 0 {
		mk.body = bodyOf(o.BodySize, o.Seed)
	}
	data := &targetData{names: names, explains: map[int32]explained{}}
	data.duration, data.bucket = d, time.Second
	data.weights = []weightsAt{{0, nil}} // no target share: the client's view knows no weights
	if tg.view != nil {
		data.weights = []weightsAt{{0, sharesAsWeights(tg.view.target)}}
	}
	lv := &live{bySite: make([]int, maxSiteNames)}
	st := &stepStats{steps: steps, maxLatency: o.Thresholds.MaxP99}
	st.init(sched)

	// With sessions, the admin API is asked where a sample of their requests went and what
	// placed them (the affinity key, or the split): a few requests of each session, at most
	// explainBudget in all.
	var explainQ chan int32
	explainBudget := 0
	perSession := 0
	if o.Sessions > 0 && tg.view != nil {
		explainBudget = min(2000, len(sched))
		perSession = max(2, explainBudget/o.Sessions)
		explainQ = make(chan int32, 256)
	}
	var sessMu sync.Mutex
	asked := map[int]int{}
	var dataMu sync.Mutex

	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	stopSend := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	if tg.view != nil {
		data.proxy = append(data.proxy, tg.view.sample(ctx, 0))
	}
	// The explain workers outlive the load by up to explainDrain, to ask about its last
	// requests.
	exCtx, stopExplain := context.WithCancel(ctx)
	defer stopExplain()
	var explainers sync.WaitGroup
	if explainQ != nil {
		for range 2 {
			explainers.Go(func() {
				for q := range explainQ {
					ex, err := tg.view.explain(exCtx, mk.requestID(int(q)))
					if err != nil && exCtx.Err() == nil {
						// The client can have the answer before the proxy has recorded
						// the request: ask once more, a moment later.
						t := time.NewTimer(100 * time.Millisecond)
						select {
						case <-exCtx.Done():
						case <-t.C:
							ex, err = tg.view.explain(exCtx, mk.requestID(int(q)))
						}
						t.Stop()
					}
					if err != nil && exCtx.Err() != nil {
						continue // cut short at the end of the run: neither found nor failed
					}
					dataMu.Lock()
					if err != nil {
						data.explainN.failed++
					} else {
						data.explains[q] = ex
					}
					dataMu.Unlock()
				}
			})
		}
	}
	onRecord := func(r Record) {
		lv.add(r)
		st.add(r)
		if explainQ == nil || r.Outcome != OK {
			return
		}
		s := mk.session(int(r.Seq))
		sessMu.Lock()
		ok := asked[s] < perSession && explainBudget > 0
		if ok {
			asked[s]++
			explainBudget--
		}
		sessMu.Unlock()
		if !ok {
			return
		}
		select {
		case explainQ <- r.Seq:
			dataMu.Lock()
			data.explainN.asked++
			dataMu.Unlock()
		default:
			dataMu.Lock()
			data.explainN.dropped++
			dataMu.Unlock()
		}
	}
	var stopOnce sync.Once
	wg.Go(func() {
		tick := time.NewTicker(o.SampleEvery)
		defer tick.Stop()
		sec := time.NewTicker(time.Second)
		defer sec.Stop()
		next := 0
		last := time.Duration(0)
		var prev proxySample
		if len(data.proxy) > 0 {
			prev = data.proxy[0]
		}
		for {
			select {
			case <-bg.Done():
				return
			case <-tick.C:
				now := time.Since(start)
				if tg.view != nil {
					s := tg.view.sample(bg, now)
					if bg.Err() != nil {
						return // cut short by the end of the run: not a failure of the admin API
					}
					dataMu.Lock()
					data.proxy = append(data.proxy, s)
					dataMu.Unlock()
				}
				if stop != nil && stop(now, st) {
					stopOnce.Do(func() {
						data.stopAt = now
						close(stopSend)
					})
				}
			case <-sec.C:
				now := time.Since(start)
				span := now - last
				last = now
				offered := 0
				for next < len(sched) && sched[next] <= now {
					offered++
					next++
				}
				ok, errs, bySite, p99 := lv.take()
				if o.Progress == nil {
					continue
				}
				var sb strings.Builder
				fmt.Fprintf(&sb, "%-8s %5.0fs  offered %6.0f/s  achieved %6.0f/s ", name, now.Seconds(),
					float64(offered)/span.Seconds(), float64(ok)/span.Seconds())
				for i, n := range names.Names() {
					if i < len(bySite) && bySite[i] > 0 {
						fmt.Fprintf(&sb, " %s %5.1f%%", n, pct(bySite[i], ok))
					}
				}
				fmt.Fprintf(&sb, "  p99 %6s  errors %d", fmtMS(p99), errs)
				dataMu.Lock()
				if n := len(data.proxy); n > 0 && data.proxy[n-1].err == nil {
					cur := data.proxy[n-1]
					fmt.Fprintf(&sb, "  spills %.0f  sheds %.0f", cur.spillTotal()-prev.spillTotal(), cur.shedTotal()-prev.shedTotal())
					if name == "soak" && len(cur.rss) == 1 && !math.IsNaN(cur.rss[0]) && !math.IsNaN(cur.goroutine[0]) {
						fmt.Fprintf(&sb, "  proxy rss %.0f MiB  goroutines %.0f", cur.rss[0]/(1<<20), cur.goroutine[0])
					}
					prev = cur
				}
				dataMu.Unlock()
				sb.WriteByte('\n')
				io.WriteString(o.Progress, sb.String())
			}
		}
	})
	records, err := Generate(ctx, LoadOptions{Target: o.Target, Remote: true, Schedule: sched,
		MaxInflight: o.Concurrency, Timeout: o.Timeout, NewRequest: mk.make, Client: tg.client,
		SiteHeader: o.SiteHeader, Learn: names, OnRecord: onRecord, Stop: stopSend})
	stopOnce.Do(func() { close(stopSend) })
	if explainQ != nil {
		close(explainQ)
		t := time.AfterFunc(explainDrain, stopExplain)
		explainers.Wait()
		t.Stop()
	}
	stopBG()
	wg.Wait()
	if tg.view != nil {
		// The last sample once the proxy has finished what it was sent (its counters are
		// written as each request completes), or after a second.
		settle, cancel := context.WithTimeout(ctx, time.Second)
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
		cancel()
		if s.err != nil {
			s = tg.view.sample(ctx, time.Since(start))
		}
		data.proxy = append(data.proxy, s)
	}
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
	data.sites = names.Names()
	for _, s := range data.proxy {
		data.samples = append(data.samples, sample{t: s.t, inflight: s.inflight, limit: s.limit,
			spills: uint64(s.spillTotal()), sheds: uint64(s.shedTotal())})
	}
	return data, err
}

// explainDrain bounds how long after the load the explain API is still asked about its
// last requests.
const explainDrain = 2 * time.Second

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
