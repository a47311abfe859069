package proxy_test

// The exchange clock on retries: a retry's response_header deadline and the blame for
// its cut. The tests came from the review of the edge work (issue 11); each comment
// describes the bug its test caught, as it was.

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/proxytest"
)

// TestRetryHeaderDeadlineWaitsForSlowUpload: a PUT (idempotent) whose first backend
// resets right after reading the head is retried while the client is still uploading its
// body (60 KiB, within retries.max_body_bytes, sent in 5 pieces over 1.6 s). response_header
// is the client's wait for response headers, which begins once the whole request was sent;
// but the retry's deadline (exchange.headerBy) is computed from exchange.sentAt, which is
// the lease's start while the body has not ended, so the clock cuts the retry with 504
// mid-upload and blames the healthy backend for a timeout. Without the failed first try the
// same upload succeeds (the Transport's own timer starts once the body is written).
func TestRetryHeaderDeadlineWaitsForSlowUpload(t *testing.T) {
	const piece = 12 << 10
	var arrivals atomic.Int32
	var got atomic.Int64
	script := func(w http.ResponseWriter, r *http.Request) {
		if arrivals.Add(1) == 1 {
			resetConn(proxytest.Hijack(w)) // a crash right after the head
			return
		}
		n, err := io.Copy(io.Discard, r.Body)
		got.Store(n)
		if err != nil {
			return
		}
		io.WriteString(w, "stored")
	}
	a, b := proxytest.NewBackend(t, script), proxytest.NewBackend(t, script)
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{a.URL, b.URL}}},
		"timeouts: {response_header: 1s}\nretries: {attempts: 2, min_per_second: 100}\n"))
	conn, br := edgeDial(t, e.addr)
	edgeWrite(t, conn, fmt.Sprintf("PUT /doc HTTP/1.1\r\nHost: bank.example\r\nContent-Length: %d\r\n\r\n", 5*piece))
	for i := range 5 { // a slow client, never silent for long (body_idle is 60 s)
		if i > 0 {
			time.Sleep(400 * time.Millisecond)
		}
		edgeWrite(t, conn, strings.Repeat("x", piece))
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "stored" {
		t.Errorf("the retried slow upload got %d %q (arrivals %d, the retry's backend read %d of %d bytes), want 200 \"stored\"",
			resp.StatusCode, body, arrivals.Load(), got.Load(), 5*piece)
	}
	e.checkIdle(t)
}

// TestRetryCutDoesNotBlameHealthyBackend: the first try's backend holds the request for
// most of response_header and resets; the retry goes to a healthy backend that answers in
// 300 ms, but only 100 ms of the client's response_header is left, so the clock cuts it.
// That 504 is the budget's, spent by the first backend; yet the retry's backend is
// charged a timeout for it (reasonTimeout counts for passive health, and the balancer is
// told it is overloaded). In an incident where one backend fails slowly, every retry
// moves the blame onto healthy backends and can eject them.
func TestRetryCutDoesNotBlameHealthyBackend(t *testing.T) {
	var arrivals atomic.Int32
	released := make(chan struct{})
	var mu sync.Mutex
	second := ""
	mk := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if arrivals.Add(1) == 1 {
				select {
				case <-time.After(900 * time.Millisecond):
				case <-released:
				}
				resetConn(proxytest.Hijack(w))
				return
			}
			mu.Lock()
			second = name
			mu.Unlock()
			select {
			case <-time.After(300 * time.Millisecond): // healthy: well within response_header
				io.WriteString(w, "ok")
			case <-r.Context().Done():
			case <-released:
			}
		}
	}
	a := proxytest.NewBackend(t, mk("a"))
	b := proxytest.NewBackend(t, mk("b"))
	defer close(released)
	e := startOutlierProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{a.URL, b.URL}}},
		"timeouts: {response_header: 1s}\nretries: {attempts: 2, min_per_second: 100}\n"+
			"outlier: {consecutive_failures: 1, max_ejection_percent: 100}\n"))
	status, _ := e.get(t, "/statement")
	if status != http.StatusGatewayTimeout {
		t.Logf("status %d (want the 504 this scenario is about)", status)
	}
	mu.Lock()
	name := second
	mu.Unlock()
	urls := map[string]string{"a": a.URL, "b": b.URL}
	if name == "" {
		t.Fatal("the request was not retried")
	}
	if e.backend("idc1", urls[name]).Ejected() {
		t.Errorf("backend %s, which would have answered in 300 ms, was ejected for the 504 of a retry that inherited 100 ms", name)
	}
	e.checkIdle(t)
}
