package proxy_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/proxy/proxytest"
)

// spillConfig is a 5:3:2 config with per-backend limits; aws is elastic.
func spillConfig(idc1, idc2, aws []*proxytest.CapBackend, idcLimit, awsLimit int, extra string) string {
	urls := func(bs []*proxytest.CapBackend) string {
		var s []string
		for _, b := range bs {
			s = append(s, fmt.Sprintf("%q", b.URL))
		}
		return "[" + strings.Join(s, ", ") + "]"
	}
	return fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 5, backends: %s, max_inflight: %d}
  - {name: idc2, weight: 3, backends: %s, max_inflight: %d}
  - {name: aws, weight: 2, backends: %s, max_inflight: %d, elastic: true}
retries: {attempts: 1}
%s`, urls(idc1), idcLimit, urls(idc2), idcLimit, urls(aws), awsLimit, extra)
}

// Under overload no IDC backend exceeds its max_inflight, the excess lands on the elastic
// AWS pool, and nothing is refused while capacity remains.
func TestOverloadSpillsExcessToAWS(t *testing.T) {
	idc1 := []*proxytest.CapBackend{proxytest.NewCapBackend(t, "idc1", true), proxytest.NewCapBackend(t, "idc1", true)}
	idc2 := []*proxytest.CapBackend{proxytest.NewCapBackend(t, "idc2", true)}
	aws := []*proxytest.CapBackend{proxytest.NewCapBackend(t, "aws", true), proxytest.NewCapBackend(t, "aws", true)}
	e := startProxy(t, spillConfig(idc1, idc2, aws, 2, 20, ""))

	// 30 requests at once: by the split 15 prefer idc1, 9 idc2, 6 aws. idc1 holds 4, idc2
	// 2; the other 24 fit in aws (40 slots).
	const n = 30
	statuses := make(chan int, n)
	for i := range n {
		go func() {
			resp, err := e.client.Get(fmt.Sprintf("%s/r%d", e.url, i))
			if err != nil {
				statuses <- -1
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	all := append(append(append([]*proxytest.CapBackend{}, idc1...), idc2...), aws...)
	arrivals := make(chan string, n)
	for _, b := range all {
		go func() {
			for range b.Arrived {
				arrivals <- b.Site
			}
		}()
	}
	perSite := map[string]int{}
	for range n {
		perSite[proxytest.Receive(t, arrivals, "a request to arrive at a backend")]++
	}
	if perSite["idc1"] != 4 || perSite["idc2"] != 2 || perSite["aws"] != 24 {
		t.Errorf("held per site %v, want idc1 4 (2 backends × 2), idc2 2, aws 24", perSite)
	}
	st := e.table.Status()
	if st[0].Limit != 4 || st[1].Limit != 2 || st[2].Limit != 40 {
		t.Errorf("site limits %d/%d/%d, want 4/2/40", st[0].Limit, st[1].Limit, st[2].Limit)
	}
	spilled := map[string]uint64{}
	for _, c := range e.reg.Spills() {
		if c.N > 0 {
			spilled[c.From+">"+c.To] += c.N
		}
	}
	if spilled["idc1>aws"] != 11 || spilled["idc2>aws"] != 7 || len(spilled) != 2 {
		t.Errorf("spills %v, want idc1>aws 11 and idc2>aws 7 only", spilled)
	}
	for _, b := range all {
		for range n {
			b.Release <- struct{}{}
		}
	}
	for range n {
		if s := proxytest.Receive(t, statuses, "an answer"); s != http.StatusOK {
			t.Errorf("status %d, want 200: nothing is refused while a site has room", s)
		}
	}
	for _, b := range append(idc1, idc2...) {
		if m := b.Max.Load(); m > 2 {
			t.Errorf("%s backend reached %d concurrent requests, above max_inflight 2", b.Site, m)
		}
	}
	for _, b := range all {
		close(b.Arrived)
	}
	e.checkIdle(t)
}

// Beyond total capacity requests queue, a freed slot goes to the oldest waiter, and when the
// queue is full or the wait too long the client gets 503 with Retry-After.
func TestBeyondCapacityQueuesThenSheds(t *testing.T) {
	idc1 := []*proxytest.CapBackend{proxytest.NewCapBackend(t, "idc1", true)}
	idc2 := []*proxytest.CapBackend{proxytest.NewCapBackend(t, "idc2", true)}
	aws := []*proxytest.CapBackend{proxytest.NewCapBackend(t, "aws", true)}
	// 2s: the queue counts as congested (newest first) only after standing 200 ms, far
	// longer than the steps below take, so the oldest waiter gets the freed slot.
	e := startProxy(t, spillConfig(idc1, idc2, aws, 1, 1, "spillover: {queue: {size: 2, timeout: 2s}}\n"))

	type answer struct {
		path        string
		status      int
		retryAfter  string
		body        string
		requestDone time.Time
	}
	answers := make(chan answer, 10)
	send := func(path string) {
		go func() {
			resp, err := e.client.Get(e.url + path)
			if err != nil {
				answers <- answer{path: path, status: -1, body: err.Error()}
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers <- answer{path, resp.StatusCode, resp.Header.Get("Retry-After"), string(body), time.Now()}
		}()
	}
	arrived := make(chan string, 10)
	for _, b := range []*proxytest.CapBackend{idc1[0], idc2[0], aws[0]} {
		go func() {
			for p := range b.Arrived {
				arrived <- p
			}
		}()
	}
	// Fill the three slots.
	for i := range 3 {
		send(fmt.Sprintf("/held%d", i))
	}
	for range 3 {
		proxytest.Receive(t, arrived, "a held request")
	}
	// Two wait, in order.
	waitQueue := func(n int) {
		deadline := time.Now().Add(proxytest.Liveness)
		for e.reg.QueueLen() != n {
			if time.Now().After(deadline) {
				t.Fatalf("queue length %d, want %d", e.reg.QueueLen(), n)
			}
			time.Sleep(time.Millisecond) // polling a counter the proxy exposes; bounded
		}
	}
	send("/q1")
	waitQueue(1)
	send("/q2")
	waitQueue(2)
	// A third finds the queue full: 503 at once.
	send("/full")
	a := proxytest.Receive(t, answers, "the answer to /full")
	if a.path != "/full" || a.status != http.StatusServiceUnavailable || a.retryAfter == "" {
		t.Fatalf("answer %+v, want /full: 503 with Retry-After", a)
	}
	// One slot frees: the oldest waiter, q1, takes it.
	idc1[0].Release <- struct{}{}
	if a := proxytest.Receive(t, answers, "the held request's answer"); a.status != http.StatusOK {
		t.Fatalf("held request: %+v", a)
	}
	if p := proxytest.Receive(t, arrived, "the first waiter to reach a backend"); p != "/q1" {
		t.Fatalf("%s got the freed slot, want the oldest waiter /q1", p)
	}
	// q2 waits out its timeout: 503 with Retry-After.
	a = proxytest.Receive(t, answers, "q2's answer")
	if a.path != "/q2" || a.status != http.StatusServiceUnavailable || a.retryAfter == "" {
		t.Fatalf("answer %+v, want /q2: 503 with Retry-After after the queue timeout", a)
	}
	sheds := e.reg.Sheds()
	if sheds[balancer.ShedQueueFull] != 1 || sheds[balancer.ShedQueueTimeout] != 1 {
		t.Errorf("sheds %v, want one queue_full and one queue_timeout", sheds)
	}
	for _, b := range []*proxytest.CapBackend{idc1[0], idc2[0], aws[0]} {
		for range 5 {
			b.Release <- struct{}{}
		}
	}
	for range 3 {
		if a := proxytest.Receive(t, answers, "the rest"); a.status != http.StatusOK {
			t.Errorf("answer %+v, want 200", a)
		}
	}
	for _, b := range []*proxytest.CapBackend{idc1[0], idc2[0], aws[0]} {
		close(b.Arrived)
	}
	e.checkIdle(t)
	if n := e.reg.QueueLen(); n != 0 {
		t.Errorf("queue length %d at the end, want 0", n)
	}
}

// A client that goes away while queued leaves the queue at once.
func TestQueuedClientThatLeavesFreesItsPlace(t *testing.T) {
	b := proxytest.NewCapBackend(t, "idc1", true)
	e := startProxy(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites: [{name: idc1, weight: 1, backends: [%q], max_inflight: 1}]
spillover: {queue: {size: 5, timeout: 30s}}
`, b.URL))
	done := make(chan int, 2)
	go func() {
		resp, err := e.client.Get(e.url + "/held")
		if err == nil {
			resp.Body.Close()
			done <- resp.StatusCode
		}
	}()
	proxytest.Receive(t, b.Arrived, "the held request")
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/queued", nil)
	go func() {
		_, err := e.client.Do(req)
		if err == nil {
			t.Error("a cancelled request was answered")
		}
		done <- 0
	}()
	deadline := time.Now().Add(proxytest.Liveness)
	for e.reg.QueueLen() != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	proxytest.Receive(t, done, "the cancelled client")
	for e.reg.QueueLen() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := e.reg.QueueLen(); n != 0 {
		t.Fatalf("queue length %d after the client left, want 0", n)
	}
	if n := e.reg.Sheds()[balancer.ShedClientGone]; n != 1 {
		t.Errorf("client_gone sheds %d, want 1", n)
	}
	b.Release <- struct{}{}
	if s := proxytest.Receive(t, done, "the held request"); s != http.StatusOK {
		t.Errorf("held request %d", s)
	}
	close(b.Arrived)
	e.checkIdle(t)
}

// Sessions keep their site: every request with the same affinity header goes to one site;
// when that site is down the session moves, and comes back when it is up again.
func TestAffinityKeepsSessionsOnTheirSite(t *testing.T) {
	names := []string{"idc1", "idc2", "aws"}
	var urls []string
	for _, n := range names {
		urls = append(urls, proxytest.NameBackend(t, n).URL)
	}
	e := startProxy(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 5, backends: [%q]}
  - {name: idc2, weight: 3, backends: [%q]}
  - {name: aws, weight: 2, backends: [%q], elastic: true}
affinity: {header: X-Session-Id}
`, urls[0], urls[1], urls[2]))
	site := func(session string) string {
		req, _ := http.NewRequest(http.MethodGet, e.url+"/", nil)
		req.Header.Set("X-Session-Id", session)
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	pinned := map[string]string{}
	count := map[string]int{}
	for i := range 300 {
		s := fmt.Sprintf("session-%d", i)
		pinned[s] = site(s)
		count[pinned[s]]++
		for range 3 {
			if got := site(s); got != pinned[s] {
				t.Fatalf("%s went to %s, then %s", s, pinned[s], got)
			}
		}
	}
	// By weight, roughly: 150/90/60 of 300.
	if count["idc1"] < 110 || count["idc2"] < 60 || count["aws"] < 35 {
		t.Errorf("sessions per site %v, want near 5:3:2", count)
	}
	e.reg.SetUp("idc2", urls[1], false)
	for s, p := range pinned {
		got := site(s)
		switch {
		case p == "idc2" && got == "idc2":
			t.Fatalf("%s still on idc2, which is down", s)
		case p != "idc2" && got != p:
			t.Fatalf("%s moved from %s to %s when only idc2 went down", s, p, got)
		}
	}
	e.reg.SetUp("idc2", urls[1], true)
	for s, p := range pinned {
		if got := site(s); got != p {
			t.Fatalf("%s on %s after idc2 came back, want %s", s, got, p)
		}
	}
	e.checkIdle(t)
}

// No slot leaks: many requests with random backend failures, slow answers past the
// response-header timeout, client cancellations and queue timeouts; afterwards every
// in-flight counter is zero and nobody waits.
func TestNoSlotLeaksUnderChaos(t *testing.T) {
	chaos := func(w http.ResponseWriter, r *http.Request) {
		switch rand.IntN(10) {
		case 0:
			w.WriteHeader(http.StatusInternalServerError)
		case 1:
			w.WriteHeader(http.StatusServiceUnavailable)
		case 2: // reset
			if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
				c.Close()
			}
			return
		case 3: // slower than response_header
			select {
			case <-time.After(80 * time.Millisecond):
			case <-r.Context().Done():
			}
		default:
			time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		}
		io.WriteString(w, "ok")
	}
	var urls []string
	for range 5 {
		urls = append(urls, proxytest.NewBackend(t, chaos).URL)
	}
	e := startProxy(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 5, backends: [%q, %q], max_inflight: 1}
  - {name: idc2, weight: 3, backends: [%q], max_inflight: 1}
  - {name: aws, weight: 2, backends: [%q, %q], max_inflight: 1, elastic: true}
spillover: {resume: 0.5, queue: {size: 8, timeout: 20ms}}
timeouts: {response_header: 40ms}
outlier: {consecutive_failures: 0}
`, urls[0], urls[1], urls[2], urls[3], urls[4]))
	const workers, perWorker = 16, 150
	var wg sync.WaitGroup
	var answered, shed atomic.Int64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWorker {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+rand.IntN(60))*time.Millisecond)
				method := http.MethodGet
				if rand.IntN(4) == 0 {
					method = http.MethodPost
				}
				req, _ := http.NewRequestWithContext(ctx, method, e.url+"/", strings.NewReader("x"))
				resp, err := e.client.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					answered.Add(1)
					if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" {
						shed.Add(1)
					}
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	e.checkIdle(t)
	if n := e.reg.QueueLen(); n != 0 {
		t.Errorf("queue length %d at the end, want 0", n)
	}
	if answered.Load() == 0 {
		t.Fatal("no request was answered")
	}
	t.Logf("%d answered of %d, %d shed; sheds %v; spills %v", answered.Load(), workers*perWorker, shed.Load(), e.reg.Sheds(), e.reg.Spills())
}

// A backend without max_inflight gets a learned limit: one that serves 4 requests at a time
// (the rest queue inside it, so its latency rises with concurrency) ends with a limit near
// what it can serve, far below where the limit started; the excess goes to the other site.
func TestAdaptiveLimitLearnsABackendsCapacity(t *testing.T) {
	const capacity = 4
	var served, sent atomic.Int64
	slots := make(chan struct{}, capacity)
	slow := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case slots <- struct{}{}:
		case <-r.Context().Done():
			return
		}
		time.Sleep(5 * time.Millisecond) // service time; the wait for a slot is the queue
		<-slots
		served.Add(1)
		io.WriteString(w, "idc1")
	})
	other := proxytest.NameBackend(t, "aws")
	e := startProxy(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 1, backends: [%q], adaptive: {floor: 1, cap: 1000, initial: 64}}
  - {name: aws, weight: 0, backends: [%q], elastic: true, max_inflight: 1000}
`, slow.URL, other.URL))
	// Enough of the slow backend's answers for the limit to settle (at least wantServed,
	// more while the limit is still above the bound: on a loaded machine the latency the
	// gradient reads is noisier and it takes longer), bounded in count.
	const workers, wantServed, maxSent = 96, 3000, 100000
	settled := func() bool {
		return served.Load() >= wantServed && e.table.Status()[0].Backends[0].Limit <= 8*capacity
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !settled() && sent.Add(1) <= maxSent {
				resp, err := e.client.Get(e.url + "/")
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	lim := e.table.Status()[0].Backends[0].Limit
	t.Logf("learned limit %d for a backend that serves %d at a time (%d answers from it)", lim, capacity, served.Load())
	if lim > 8*capacity {
		t.Errorf("learned limit %d, want it near the backend's capacity %d (it started at 64)", lim, capacity)
	}
	e.checkIdle(t)
}
