package proxy_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/spillway/spillway/proxy"
)

// Review 13, bug: a RETRY that waits in the queue (Handler.retryQueued →
// Picker.AdmitRetry) across a reload is placed by the new config's Balancer
// (balancer/wait.go: successor), so its lease's SiteIndex indexes the new config's sites,
// but retryQueued keeps forwarding through the old Table: forward's
// t.sites[ex.lease.SiteIndex] (proxy/handler.go) reads another Table's site (or, when the
// new config has more sites, panics with index out of range). proxy/admit.go maps a first
// try's lease back to its Table; nothing does that for AdmitRetry.
func TestReview13QueuedRetryAcrossReloadUsesTheOldTablesSiteIndexes(t *testing.T) {
	g := newGate(t)
	held := make(chan struct{}, 1)
	busy := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case held <- struct{}{}:
		default:
		}
		g.wait(r.Context())
		fmt.Fprint(w, "a")
	})
	c := nameBackend(t, "c")
	refused := refusedURL(t)
	before := fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: a, weight: 1, backends: [%q], max_inflight: 1}
  - {name: r, weight: 1, backends: [%q], max_inflight: 5}
spillover: {queue: {size: 10, timeout: 5s}}
retries: {attempts: 2, budget: 1}
`, busy.URL, refused)
	// The same sites, and a third after them: its index (2) does not exist in the old Table.
	after := fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: a, weight: 1, backends: [%q], max_inflight: 1}
  - {name: r, weight: 1, backends: [%q], max_inflight: 5}
  - {name: c, weight: 1, backends: [%q], max_inflight: 5}
spillover: {queue: {size: 10, timeout: 5s}}
retries: {attempts: 2, budget: 1}
`, busy.URL, refused, c.URL)
	e := startReloader(t, before, proxy.ReloaderOptions{})
	first := make(chan error, 1)
	go func() { _, _, err := e.send("GET", "/1", nil); first <- err }()
	await(t, held, "first request holding a's only slot")
	type res struct {
		status int
		body   string
		err    error
	}
	second := make(chan res, 1)
	// Its try on r is refused (never reached), a is full: the retry queues (AdmitRetry).
	go func() { s, b, err := e.send("GET", "/2", nil); second <- res{s, b, err} }()
	waitFor(t, "the retry queued", func() bool { return e.r.Registry().QueueLen() == 1 })
	e.write(t, after)
	if err := e.r.Reload("test", false); err != nil {
		t.Fatal(err)
	}
	got := await(t, second, "queued retry")
	g.open()
	<-first
	for _, l := range e.logs.FilterMessage("response aborted").All() {
		t.Logf("log: %s %v", l.Message, l.ContextMap()["panic"])
	}
	if got.err != nil || got.status != http.StatusOK || got.body != "c" {
		t.Fatalf("queued retry after reload: status %d body %q err %v; want 200 from c", got.status, got.body, got.err)
	}
}
