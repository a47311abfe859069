package proxy_test

// Requests and retries that wait in the queue across reloads: which Table forwards them,
// the limits they count against, and the old Tables they must not keep. From reviews; each
// comment describes the bug its test caught, as it was (or says the test only pins
// behaviour).

import (
	"fmt"
	"io"
	"net/http"
	"os"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/proxytest"
	"github.com/spillway/spillway/proxy/runtime"
)

// Review 13, bug: a RETRY that waits in the queue (Handler.retryQueued →
// Picker.AdmitRetry) across a reload is placed by the new config's Balancer
// (balancer/wait.go: successor), so its lease's SiteIndex indexes the new config's sites,
// but retryQueued keeps forwarding through the old Table: forward's
// t.sites[ex.lease.SiteIndex] (proxy/handler.go) reads another Table's site (or, when the
// new config has more sites, panics with index out of range). proxy/admit.go maps a first
// try's lease back to its Table; nothing does that for AdmitRetry.
func TestQueuedRetryAcrossReloadForwardsThroughItsOwnTable(t *testing.T) {
	g := newGate(t)
	held := make(chan struct{}, 1)
	busy := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case held <- struct{}{}:
		default:
		}
		g.wait(r.Context())
		fmt.Fprint(w, "a")
	})
	c := proxytest.NameBackend(t, "c")
	refused := proxytest.RefusedURL(t)
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
	e := proxytest.StartReloader(t, before, runtime.ReloaderOptions{})
	first := make(chan error, 1)
	go func() { _, _, err := e.Send("GET", "/1", nil); first <- err }()
	proxytest.Receive(t, held, "first request holding a's only slot")
	type res struct {
		status int
		body   string
		err    error
	}
	second := make(chan res, 1)
	// Its try on r is refused (never reached), a is full: the retry queues (AdmitRetry).
	go func() { s, b, err := e.Send("GET", "/2", nil); second <- res{s, b, err} }()
	proxytest.WaitFor(t, "the retry queued", func() bool { return e.R.Registry().QueueLen() == 1 })
	e.Write(t, after)
	if err := e.R.Reload("test", false); err != nil {
		t.Fatal(err)
	}
	got := proxytest.Receive(t, second, "queued retry")
	g.open()
	<-first
	for _, l := range e.Logs.FilterMessage("response aborted").All() {
		t.Logf("log: %s %v", l.Message, l.ContextMap()["panic"])
	}
	if got.err != nil || got.status != http.StatusOK || got.body != "c" {
		t.Fatalf("queued retry after reload: status %d body %q err %v; want 200 from c", got.status, got.body, got.err)
	}
}

// concBackend answers "name" after a short pause and records the most requests it ever
// had at once.
type concBackend struct {
	now, peak atomic.Int64
}

func (c *concBackend) handler(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		n := c.now.Add(1)
		for {
			p := c.peak.Load()
			if n <= p || c.peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(2 * time.Millisecond)
		c.now.Add(-1)
		io.WriteString(w, name)
	}
}

// Review 13, storm (passes; kept as a guard): requests queue while reloads reorder the
// sites. Every request must be answered by a backend, no backend may ever hold more than its
// max_inflight, and every in-flight count returns to zero. Run with -race.
func TestReloadStormWithQueuedRequestsKeepsSlots(t *testing.T) {
	reloadStorm(t, [][]string{{"a", "b", "c"}, {"b", "a", "c"}, {"c", "a", "b"}, {"b", "c", "a"}})
}

// Review 13, bug (the Prune bug of balancer's TestPruneWhileLeasedKeepsTheBackendsLimit,
// through real sockets): a reload that drops a site and the next that brings it back, while
// a request still runs on its backend, make the backend take max_inflight more requests on
// top of it: Reloader.Reload calls reg.Prune (proxy/runtime/reload.go), which forgets the leased
// Backend (and Site), and the next Balancer gets fresh ones with in-flight 0. (A storm of
// reloads that drop and re-add sites showed peaks of 4-5 requests at once on backends with
// max_inflight 2.)
func TestReloadThatDropsAndReaddsASiteKeepsItsLimit(t *testing.T) {
	g := newGate(t)
	held := make(chan struct{})
	var first atomic.Bool
	var now, peak atomic.Int64
	a := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		n := now.Add(1)
		defer now.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		if first.CompareAndSwap(false, true) {
			close(held)
			g.wait(r.Context())
		}
		io.WriteString(w, "a")
	})
	b := proxytest.NameBackend(t, "b")
	both := fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: a, weight: 1, backends: [%q], max_inflight: 1}
  - {name: b, weight: 1, backends: [%q], max_inflight: 50}
retries: {attempts: 1}
`, a.URL, b.URL)
	onlyB := fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: b, weight: 1, backends: [%q], max_inflight: 50}
retries: {attempts: 1}
`, b.URL)
	e := proxytest.StartReloader(t, both, runtime.ReloaderOptions{})
	done := make(chan error, 1)
	go func() {
		for i := 0; ; i++ { // until one lands on a and is held there
			select {
			case <-held:
				done <- nil
				return
			default:
			}
			if _, _, err := e.Send("GET", fmt.Sprintf("/hold/%d", i), nil); err != nil {
				done <- err
				return
			}
		}
	}()
	proxytest.Receive(t, held, "a request held at a")
	for _, y := range []string{onlyB, both} {
		e.Write(t, y)
		if err := e.R.Reload("test", false); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		if _, body, err := e.Send("GET", fmt.Sprintf("/%d", i), nil); err != nil {
			t.Fatal(err)
		} else if body == "a" {
			t.Errorf("request %d answered by a, whose only slot (max_inflight 1) is held", i)
		}
	}
	g.open()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if p := peak.Load(); p > 1 {
		t.Errorf("backend a had %d requests at once, max_inflight 1", p)
	}
}

func reloadStorm(t *testing.T, orders [][]string) {
	var ca, cb, cc concBackend
	a := proxytest.NewBackend(t, ca.handler("a"))
	b := proxytest.NewBackend(t, cb.handler("b"))
	c := proxytest.NewBackend(t, cc.handler("c"))
	const limit = 2
	cfg := func(order ...string) string {
		urls := map[string]string{"a": a.URL, "b": b.URL, "c": c.URL}
		var s strings.Builder
		s.WriteString("listen: {http: \"127.0.0.1:0\"}\nsites:\n")
		for _, n := range order {
			fmt.Fprintf(&s, "  - {name: %s, weight: 1, backends: [%q], max_inflight: %d}\n", n, urls[n], limit)
		}
		s.WriteString("spillover: {queue: {size: 1000, timeout: 20s}}\nretries: {attempts: 1}\n")
		return s.String()
	}
	var configs []string
	for _, o := range orders {
		configs = append(configs, cfg(o...))
	}
	e := proxytest.StartReloader(t, configs[0], runtime.ReloaderOptions{})
	const clients, each = 24, 8
	var wg sync.WaitGroup
	errs := make(chan string, clients*each)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				s, body, err := e.Send("GET", fmt.Sprintf("/%d/%d", i, j), nil)
				if err != nil || s != http.StatusOK {
					errs <- fmt.Sprintf("%d %q %v", s, body, err)
				}
			}
		}()
	}
	stop := make(chan struct{})
	reloaded := make(chan struct{})
	go func() {
		defer close(reloaded)
		for k := 1; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := os.WriteFile(e.Path, []byte(configs[k%len(configs)]), 0o640); err != nil {
				t.Errorf("write config: %v", err)
				return
			}
			if err := e.R.Reload("storm", false); err != nil {
				t.Errorf("reload: %v", err)
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-reloaded
	close(errs)
	n := 0
	for msg := range errs {
		if n++; n <= 5 {
			t.Errorf("request failed: %s", msg)
		}
	}
	if n > 5 {
		t.Errorf("... %d requests failed in all", n)
	}
	for name, cb := range map[string]*concBackend{"a": &ca, "b": &cb, "c": &cc} {
		if p := cb.peak.Load(); p > limit {
			t.Errorf("backend %s had %d requests at once, max_inflight %d", name, p, limit)
		}
	}
	proxytest.WaitFor(t, "queue empty", func() bool { return e.R.Registry().QueueLen() == 0 })
	for _, s := range e.R.Handler().Table().Status() {
		if s.Inflight != 0 {
			t.Errorf("site %s: in-flight %d after the storm", s.Name, s.Inflight)
		}
		for _, be := range s.Backends {
			if be.Inflight != 0 {
				t.Errorf("backend %s/%s: in-flight %d after the storm", s.Name, be.Addr, be.Inflight)
			}
		}
	}
}

// Review 13 (passes; kept as a guard): requests that waited in the queue across many
// reloads (their slot granted by a later Balancer) must not keep the replaced Tables (and
// their Balancers and Pickers) reachable once they are answered.
func TestQueuedAcrossReloadsLeaveOldTablesCollectable(t *testing.T) {
	g := newGate(t)
	held := make(chan struct{}, 1)
	var first atomic.Bool
	a := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if first.CompareAndSwap(false, true) {
			held <- struct{}{}
			g.wait(r.Context())
		}
		io.WriteString(w, "a")
	})
	cfg := func(w int) string {
		return fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: a, weight: %d, backends: [%q], max_inflight: 1}
spillover: {queue: {size: 10, timeout: 20s}}
retries: {attempts: 1}
`, w, a.URL)
	}
	e := proxytest.StartReloader(t, cfg(1), runtime.ReloaderOptions{})
	const queued = 3
	errs := make(chan error, queued+1)
	go func() { _, _, err := e.Send("GET", "/held", nil); errs <- err }()
	proxytest.Receive(t, held, "first request held")
	for i := range queued {
		go func() {
			s, _, err := e.Send("GET", fmt.Sprintf("/q%d", i), nil)
			if err == nil && s != http.StatusOK {
				err = fmt.Errorf("status %d", s)
			}
			errs <- err
		}()
	}
	proxytest.WaitFor(t, "requests queued", func() bool { return e.R.Registry().QueueLen() == queued })
	var old []weak.Pointer[proxy.Table]
	const reloads = 10
	for i := range reloads {
		old = append(old, weak.Make(e.R.Handler().Table()))
		e.Write(t, cfg(2+i))
		if err := e.R.Reload("test", true); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
	}
	g.open()
	for range queued + 1 {
		if err := proxytest.Receive(t, errs, "request"); err != nil {
			t.Error(err)
		}
	}
	e.Client.CloseIdleConnections()
	for range 3 {
		goruntime.GC()
	}
	alive := 0
	for _, w := range old {
		if w.Value() != nil {
			alive++
		}
	}
	if alive > 1 {
		t.Errorf("%d of %d replaced Tables still reachable after queued requests crossed %d reloads", alive, reloads, reloads)
	}
}

// Regression (found by review): a request queued under generation N is re-admitted on generation N+1's Picker
// (balancer/queue.go: p = reg.latest), but the Handler forwards through generation N's
// Table: t.sites[lease.SiteIndex] indexes the old Table with the new Picker's site index.
func TestQueuedRequestAcrossReloadThatAddsASite(t *testing.T) {
	g := newGate(t)
	held := make(chan struct{}, 1)
	a := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		held <- struct{}{}
		g.wait(r.Context())
		fmt.Fprint(w, "a")
	})
	b := proxytest.NameBackend(t, "b")
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
	e := proxytest.StartReloader(t, oneSite, runtime.ReloaderOptions{})
	first := make(chan error, 1)
	go func() { _, _, err := e.Send("GET", "/1", nil); first <- err }()
	proxytest.Receive(t, held, "first request at a")
	type res struct {
		status int
		body   string
		err    error
	}
	second := make(chan res, 1)
	go func() { s, bd, err := e.Send("GET", "/2", nil); second <- res{s, bd, err} }()
	proxytest.WaitFor(t, "second request queued", func() bool { return e.R.Registry().QueueLen() == 1 })
	e.Write(t, twoSites)
	if err := e.R.Reload("test", false); err != nil {
		t.Fatal(err)
	}
	got := proxytest.Receive(t, second, "second request")
	g.open()
	<-first
	for _, l := range e.Logs.FilterMessage("response aborted").All() {
		t.Logf("log: %s %v", l.Message, l.ContextMap()["panic"])
	}
	if got.err != nil || got.status != 200 || got.body != "b" {
		t.Fatalf("queued request after reload: status %d body %q err %v; want 200 from b", got.status, got.body, got.err)
	}
}
