package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/proxy/proxytest"
)

// TestShedRetryAfterFollowsTheQueue: a 503 for lack of capacity says when the queue should
// have drained, not a fixed 1 s (issue 12). With nobody admitted from the queue yet there
// is nothing to go on but the queue timeout a waiter would wait: 7 s here.
func TestShedRetryAfterFollowsTheQueue(t *testing.T) {
	g := newGate(t)
	arrived := make(chan string, 10)
	b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- r.URL.Path
		g.wait(r.Context())
		io.WriteString(w, "ok")
	})
	t.Cleanup(g.open)
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{b.URL}}},
		"    max_inflight: 1\nspillover: {queue: {size: 2, timeout: 7s}}\nretries: {attempts: 1}\n"))
	type answer struct {
		status     int
		retryAfter string
	}
	answers := make(chan answer, 10)
	send := func(path string) {
		go func() {
			resp, err := e.client.Get(e.url + path)
			if err != nil {
				answers <- answer{status: -1, retryAfter: err.Error()}
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			answers <- answer{resp.StatusCode, resp.Header.Get("Retry-After")}
		}()
	}
	send("/held")
	proxytest.Receive(t, arrived, "the held request")
	for i := range 2 {
		send(fmt.Sprintf("/q%d", i))
		proxytest.WaitFor(t, "a waiter", func() bool { return e.reg.QueueLen() == i+1 })
	}
	send("/full")
	if a := proxytest.Receive(t, answers, "the refusal"); a.status != http.StatusServiceUnavailable || a.retryAfter != "7" {
		t.Fatalf("queue full: %+v, want 503 with Retry-After: 7", a)
	}
	if n := e.reg.Sheds()[balancer.ShedQueueFull]; n != 1 {
		t.Errorf("queue_full sheds %d, want 1", n)
	}
	g.open()
	for range 3 {
		if a := proxytest.Receive(t, answers, "the answers"); a.status != http.StatusOK {
			t.Errorf("answer %+v, want 200", a)
		}
	}
	e.checkIdle(t)
}
