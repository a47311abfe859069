package proxy_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/spillway/spillway/proxy/runtime"
)

// Regression (found by review): a request queued under generation N is re-admitted on generation N+1's Picker
// (balancer/queue.go: p = reg.latest), but the Handler forwards through generation N's
// Table: t.sites[lease.SiteIndex] indexes the old Table with the new Picker's site index.
func TestRegressionQueuedRequestAcrossReloadThatAddsASite(t *testing.T) {
	g := newGate(t)
	held := make(chan struct{}, 1)
	a := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		held <- struct{}{}
		g.wait(r.Context())
		fmt.Fprint(w, "a")
	})
	b := nameBackend(t, "b")
	oneSite := fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: a, weight: 1, backends: [%q], max_inflight: 1}
spillover: {queue: {size: 10, timeout: 5s}}
retries: {attempts: 1}
`, a.URL)
	twoSites := fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: a, weight: 1, backends: [%q], max_inflight: 1}
  - {name: b, weight: 1, backends: [%q], max_inflight: 5}
spillover: {queue: {size: 10, timeout: 5s}}
retries: {attempts: 1}
`, a.URL, b.URL)
	e := startReloader(t, oneSite, runtime.ReloaderOptions{})
	first := make(chan error, 1)
	go func() { _, _, err := e.send("GET", "/1", nil); first <- err }()
	await(t, held, "first request at a")
	type res struct {
		status int
		body   string
		err    error
	}
	second := make(chan res, 1)
	go func() { s, bd, err := e.send("GET", "/2", nil); second <- res{s, bd, err} }()
	waitFor(t, "second request queued", func() bool { return e.r.Registry().QueueLen() == 1 })
	e.write(t, twoSites)
	if err := e.r.Reload("test", false); err != nil {
		t.Fatal(err)
	}
	got := await(t, second, "second request")
	g.open()
	<-first
	for _, l := range e.logs.FilterMessage("response aborted").All() {
		t.Logf("log: %s %v", l.Message, l.ContextMap()["panic"])
	}
	if got.err != nil || got.status != 200 || got.body != "b" {
		t.Fatalf("queued request after reload: status %d body %q err %v; want 200 from b", got.status, got.body, got.err)
	}
}
