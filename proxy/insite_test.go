package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/proxytest"
)

// Issue 12's traps of the in-site choice, through real sockets: scripted backends behind
// the proxy, what the client saw and what each backend received.

// TestLowLoadSharesEvenly pins the starvation at low load: picking by (in flight + 1) ×
// latency average sent sequential requests to the backend that had once answered fastest,
// and never measured the other again (1000 GETs went 999/1). Two backends, one a little
// slower; 600 GETs one at a time: each gets within ±40% of an even share.
func TestLowLoadSharesEvenly(t *testing.T) {
	var counts [2]proxytest.Counter
	slow := proxytest.CountingBackend(t, &counts[0], func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Millisecond) // the backend's service time, not a synchronisation
		io.WriteString(w, "slow")
	})
	fast := proxytest.CountingBackend(t, &counts[1], func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "fast") })
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{slow.URL, fast.URL}}}, ""))
	for i := range 600 {
		if status, _ := e.get(t, fmt.Sprintf("/%d", i)); status != http.StatusOK {
			t.Fatalf("GET %d: status %d", i, status)
		}
	}
	for i := range counts {
		if n := counts[i].Get(); n < 180 || n > 420 {
			t.Errorf("backend %d received %d of 600 sequential requests, want 300 ± 40%% (%d and %d)", i, n, counts[0].Get(), counts[1].Get())
		}
	}
	e.checkIdle(t)
}

// TestBlackHoleBackendIsAvoided pins the black hole: a backend that answers 500 in well
// under a millisecond while its health endpoint passes looked cheapest and took most of
// its site's traffic. With the defaults (outlier.on_5xx true) and health checks on, after
// the first 100 of 600 requests (8 at a time) at most 10% of the answers are its 500s.
func TestBlackHoleBackendIsAvoided(t *testing.T) {
	var good, bad proxytest.Counter
	g := proxytest.CountingBackend(t, &good, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			time.Sleep(2 * time.Millisecond) // service time
		}
		io.WriteString(w, "good")
	})
	b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			io.WriteString(w, "ok") // its health endpoint passes
			return
		}
		bad.Inc()
		http.Error(w, "broken", http.StatusInternalServerError)
	})
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{g.URL, b.URL}}},
		"    health: {interval: 50ms, timeout: 40ms, rise: 1, fall: 3}\n"))
	var mu sync.Mutex
	statuses := map[int]int{} // of requests after the first 100
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				resp, err := e.client.Get(fmt.Sprintf("%s/%d", e.url, i))
				if err != nil {
					t.Errorf("GET: %v", err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if i >= 100 {
					mu.Lock()
					statuses[resp.StatusCode]++
					mu.Unlock()
				}
			}
		})
	}
	for i := range 600 {
		next <- i
	}
	close(next)
	wg.Wait()
	if n := statuses[500]; n > 50 {
		t.Errorf("%d of the last 500 answers were the black hole's 500s, want at most 50 (10%%); statuses %v", n, statuses)
	}
	if statuses[200]+statuses[500] != 500 {
		t.Errorf("statuses %v, want only 200s and the black hole's 500s", statuses)
	}
	t.Logf("black hole received %d requests, good %d (health probes included); last 500 answers: %v", bad.Get(), good.Get(), statuses)
	e.checkIdle(t)
}
