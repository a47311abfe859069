package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/proxytest"
)

// TestRetryWaitsForASlot pins issue 12's fifth trap: a retry of a request that never
// reached a backend (its backend refused the connection), while every other backend is
// full at that instant, waits in the queue for a slot instead of getting 502; and a retry
// with nowhere else to go at all gets the 502 at once rather than a queue timeout.
func TestRetryWaitsForASlot(t *testing.T) {
	release := make(chan struct{})
	held := make(chan struct{}, 1)
	var served atomic.Int32
	spare := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			held <- struct{}{}
			<-release
		}
		served.Add(1)
		io.WriteString(w, "spare")
	})
	dead := proxytest.RefusedURL(t)
	e := startProxy(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 1, backends: [%q]}
  - {name: aws, weight: 0, elastic: true, backends: [%q], max_inflight: 1}
retries: {attempts: 2, min_per_second: 100}
spillover: {queue: {size: 10, timeout: 10s}}
`, dead, spare.URL))

	// The only slot of the spare backend is taken (this request too was refused by idc1
	// and retried there).
	holdDone := make(chan int, 1)
	go func() {
		resp, err := e.client.Get(e.url + "/hold")
		if err != nil {
			holdDone <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		holdDone <- resp.StatusCode
	}()
	proxytest.Receive(t, held, "the spare backend's only slot to be taken")

	got := make(chan int, 1)
	go func() {
		resp, err := e.client.Get(e.url + "/pay-status")
		if err != nil {
			got <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	// Its retry waits in the queue (bounded poll of the proxy's own count).
	for deadline := time.Now().Add(proxytest.Liveness); e.reg.QueueLen() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the retry never queued")
		}
		select {
		case status := <-got:
			t.Fatalf("the request was answered %d while every other backend was full; want it to wait", status)
		default:
		}
	}
	close(release)
	if status := proxytest.Receive(t, got, "the queued retry's answer"); status != http.StatusOK {
		t.Errorf("queued retry answered %d, want 200 from the spare backend", status)
	}
	if status := proxytest.Receive(t, holdDone, "the held request"); status != http.StatusOK {
		t.Errorf("held request answered %d, want 200", status)
	}
	if n := served.Load(); n != 2 {
		t.Errorf("spare backend served %d requests, want 2", n)
	}
	e.checkIdle(t)
}

// TestRetryWithNowhereElseDoesNotWait: the only backend refuses; there is no other one that
// could ever free a slot, so the client gets 502 at once, not a queue timeout.
func TestRetryWithNowhereElseDoesNotWait(t *testing.T) {
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{proxytest.RefusedURL(t)}}},
		"spillover: {queue: {size: 10, timeout: 30s}}\n"))
	if status, _ := e.get(t, "/"); status != http.StatusBadGateway {
		t.Errorf("status %d, want 502", status)
	}
	if n := e.reg.QueueLen(); n != 0 {
		t.Errorf("%d waiting in the queue, want 0", n)
	}
}
