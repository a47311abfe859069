package proxy_test

// Regression test from the review of issue 12's work (see balancer/queue_waiters_test.go).

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/proxytest"
)

// TestQueuedRetryDoesNotBlockAFreeBackend: a retry queued by AdmitRetry (it may take a slot
// anywhere but on the backend that refused it) sits at the head of the queue. The backend
// that refused it comes back and is idle; a new request arrives, finds the queue non-empty
// and queues behind the retry instead of picking. Only the head is woken (and only the head
// rechecks every 50 ms); the retry cannot use that backend's slot and goes back to sleep,
// so the new request waits while a backend sits idle: until the queue counts as congested
// (queue.timeout/10, here 1 s) and LIFO makes it the next waiter.
func TestQueuedRetryDoesNotBlockAFreeBackend(t *testing.T) {
	release := make(chan struct{})
	held := make(chan struct{}, 1)
	h := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	}
	busy := proxytest.NewBackend(t, h)
	flaky := proxytest.RefusedURL(t) // refuses for now; it listens later
	e := startProxy(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 1, backends: [%q, %q], max_inflight: 1}
retries: {attempts: 2, min_per_second: 100}
spillover: {queue: {size: 10, timeout: 10s}}
`, flaky, busy.URL))

	get := func(path string, out chan<- int) {
		resp, err := e.client.Get(e.url + path)
		if err != nil {
			out <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		out <- resp.StatusCode
	}
	holdDone := make(chan int, 1)
	go get("/hold", holdDone) // busy's only slot (directly, or as the retry after flaky refused)
	proxytest.Receive(t, held, "busy's only slot to be taken")

	retried := make(chan int, 1)
	go get("/r", retried) // flaky refuses; busy is full: the retry queues
	for deadline := time.Now().Add(proxytest.Liveness); e.reg.QueueLen() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the retry never queued")
		}
	}
	// flaky comes back, idle.
	ln, err := net.Listen("tcp", strings.TrimPrefix(flaky, "http://"))
	if err != nil {
		t.Skipf("could not listen on flaky's address again: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(h)}
	served := make(chan struct{})
	go func() { srv.Serve(ln); close(served) }()
	defer func() { srv.Close(); <-served }()

	start := time.Now()
	fresh := make(chan int, 1)
	go get("/fresh", fresh)
	status := proxytest.Receive(t, fresh, "the new request's answer")
	if took := time.Since(start); status != http.StatusOK || took > 300*time.Millisecond {
		t.Errorf("a new request behind the queued retry got %d after %v while flaky was up and idle; want 200 from flaky at once",
			status, took.Round(time.Millisecond))
	}
	close(release)
	proxytest.Receive(t, holdDone, "the held request")
	proxytest.Receive(t, retried, "the queued retry's answer")
	e.checkIdle(t)
}
