package proxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/proxytest"
)

// TestSplitExactThroughProxy sends sequential requests through the proxy to sites whose
// backends answer with their site's name, and checks the split over the whole run and over
// every window of sum(weights) consecutive requests.
func TestSplitExactThroughProxy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		weights  []int
		requests int
	}{
		{"5:3:2 over 1000", []int{5, 3, 2}, 1000},
		{"weight 0 takes none", []int{3, 0, 1}, 200},
		{"reduced 50:30:20", []int{50, 30, 20}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			names := []string{"idc1", "idc2", "aws"}
			var sites []proxytest.Site
			for i, w := range tc.weights {
				// Two backends per site: the in-site choice must not disturb the split.
				a, b := proxytest.NameBackend(t, names[i]), proxytest.NameBackend(t, names[i])
				sites = append(sites, proxytest.Site{Name: names[i], Weight: w, Backends: []string{a.URL, b.URL}})
			}
			e := startProxy(t, proxytest.ConfigYAML(sites, ""))

			picks := make([]int, 0, tc.requests)
			for n := range tc.requests {
				status, body := e.get(t, fmt.Sprintf("/r/%d", n))
				if status != http.StatusOK {
					t.Fatalf("request %d: status %d, body %q", n, status, body)
				}
				i := slices.Index(names, body)
				if i < 0 {
					t.Fatalf("request %d: body %q is no site's name", n, body)
				}
				picks = append(picks, i)
			}

			total := 0
			for _, w := range tc.weights {
				total += w
			}
			got := make([]int, len(tc.weights))
			for _, p := range picks {
				got[p]++
			}
			want := make([]int, len(tc.weights))
			for i, w := range tc.weights {
				want[i] = tc.requests * w / total
			}
			if !slices.Equal(got, want) {
				t.Errorf("split over %d requests = %v, want %v", tc.requests, got, want)
			}
			// The period is sum(weights)/gcd; windows of the reduced period are exact too,
			// which implies windows of the full sum.
			g := 0
			for _, w := range tc.weights {
				g = gcdInt(g, w)
			}
			period := total / g
			for start := 0; start+period <= len(picks); start++ {
				win := make([]int, len(tc.weights))
				for _, p := range picks[start : start+period] {
					win[p]++
				}
				for i, w := range tc.weights {
					if win[i] != w/g {
						t.Fatalf("window [%d,%d) = %v, want weights/%d %v", start, start+period, win, g, tc.weights)
					}
				}
			}
			e.checkIdle(t)
		})
	}
}

func gcdInt(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// TestP2CSpreadsWithinSite holds requests open on a site of four backends (each backend
// blocks until released) and checks power-of-two-choices on in-flight:
//   - a burst of concurrent requests gives every backend a fair share (none starved, none
//     above twice its share), and the Registry's in-flight counts match what backends hold;
//   - with requests arriving one at a time, so that every pick sees exact in-flight counts,
//     no pick goes to a backend that holds strictly more than every other (P2C compares two
//     distinct backends; a uniform random pick would do so about once in four).
func TestP2CSpreadsWithinSite(t *testing.T) {
	const backends, held = 4, 64
	const share = held / backends

	for _, tc := range []struct {
		name       string
		sequential bool
	}{
		{"concurrent burst", false},
		{"one at a time", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var counts [backends]atomic.Int64
			arrived := make(chan int, held)
			release := newGate(t)
			var urls []string
			for i := range backends {
				b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
					counts[i].Add(1)
					arrived <- i
					if !release.wait(r.Context()) {
						return
					}
					io.WriteString(w, "done")
				})
				urls = append(urls, b.URL)
			}
			t.Cleanup(release.open) // before the backends close, which waits for their handlers
			e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: urls}}, ""))

			results := make(chan error, held)
			send := func(n int) {
				go func() {
					status, body, err := getOnce(e, fmt.Sprintf("/held/%d", n))
					if err == nil && (status != http.StatusOK || body != "done") {
						err = fmt.Errorf("status %d body %q", status, body)
					}
					results <- err
				}()
			}
			if tc.sequential {
				var before [backends]int64
				for n := range held {
					send(n)
					i := proxytest.Receive(t, arrived, fmt.Sprintf("request %d to reach a backend", n))
					others := int64(-1)
					for j, c := range before {
						if j != i {
							others = max(others, c)
						}
					}
					if before[i] > others {
						t.Errorf("request %d went to backend %d holding %d, more than every other (loads %v)", n, i, before[i], before)
					}
					before[i]++
				}
			} else {
				for n := range held {
					send(n)
				}
				for range held {
					proxytest.Receive(t, arrived, "every held request to reach a backend")
				}
			}

			for i, u := range urls {
				got := counts[i].Load()
				if got < share/2 || got > 2*share {
					t.Errorf("backend %d got %d of %d held requests, want within [%d, %d] (fair share %d); all: %v",
						i, got, held, share/2, 2*share, share, loads(&counts))
				}
				if in := e.reg.Backend(balancer.BackendID{Site: "idc1", Addr: u}).Inflight(); in != got {
					t.Errorf("backend %d: Registry in-flight %d, backend holds %d", i, in, got)
				}
			}
			if in := e.table.Sites()[0].Inflight(); in != held {
				t.Errorf("site in-flight %d, want %d", in, held)
			}
			t.Logf("held requests per backend: %v", loads(&counts))

			release.open()
			for range held {
				if err := proxytest.Receive(t, results, "held requests to finish"); err != nil {
					t.Errorf("held request: %v", err)
				}
			}
			e.checkIdle(t)
		})
	}
}

func loads(counts *[4]atomic.Int64) []int64 {
	out := make([]int64, len(counts))
	for i := range counts {
		out[i] = counts[i].Load()
	}
	return out
}

// getOnce is a GET that reports errors instead of failing the test, for use off the test's
// goroutine.
func getOnce(e *env, path string) (int, string, error) {
	resp, err := e.client.Get(e.url + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// TestSwapKeepsInFlightOnOldTable starts a request on one Table, swaps in another, and checks
// that new requests use the new Table while the first finishes on the old one, even after
// the old Table was closed.
func TestSwapKeepsInFlightOnOldTable(t *testing.T) {
	release := newGate(t)
	oldArrived := make(chan struct{}, 1)
	oldB := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		oldArrived <- struct{}{}
		if !release.wait(r.Context()) {
			return
		}
		io.WriteString(w, "old")
	}))
	oldClosed := make(chan struct{}, 16)
	oldB.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			oldClosed <- struct{}{}
		}
	}
	oldB.Start()
	t.Cleanup(oldB.Close)
	t.Cleanup(release.open)
	newB := proxytest.NameBackend(t, "new")

	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{oldB.URL}}}, ""))

	type result struct {
		status int
		body   string
		err    error
	}
	first := make(chan result, 1)
	go func() {
		s, b, err := getOnce(e, "/slow")
		first <- result{s, b, err}
	}()
	proxytest.Receive(t, oldArrived, "the first request to reach the old backend")

	cfg2 := proxytest.MustConfig(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{newB.URL}}}, ""))
	t2, err := proxy.Build(cfg2, proxy.Deps{Registry: e.reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(t2.Close)
	if prev := e.handler.Swap(t2); prev != e.table {
		t.Fatalf("Swap returned %p, want the first Table %p", prev, e.table)
	}
	if e.handler.Table() != t2 {
		t.Fatal("Handler.Table is not the swapped-in Table")
	}
	e.table.Close() // the contract: requests still using it finish normally

	for n := range 5 {
		if status, body := e.get(t, fmt.Sprintf("/new/%d", n)); status != http.StatusOK || body != "new" {
			t.Fatalf("request %d after Swap: status %d body %q, want 200 \"new\"", n, status, body)
		}
	}
	oldID := balancer.BackendID{Site: "idc1", Addr: oldB.URL}
	if in := e.reg.Backend(oldID).Inflight(); in != 1 {
		t.Errorf("old backend in-flight %d while its request is held, want 1", in)
	}

	release.open()
	r := proxytest.Receive(t, first, "the request on the old Table to finish")
	if r.err != nil || r.status != http.StatusOK || r.body != "old" {
		t.Fatalf("request on the old Table: status %d body %q err %v, want 200 \"old\"", r.status, r.body, r.err)
	}

	// Table.Close's contract: the connection the request used closes once it is done,
	// instead of waiting in the old Table's idle pool for a request that will never come.
	proxytest.Receive(t, oldClosed, "the old Table's backend connection to close after its last request")

	e.drain(t)
	if in := e.reg.Backend(oldID).Inflight(); in != 0 {
		t.Errorf("old backend in-flight %d after its request finished", in)
	}
	for _, s := range append(e.table.Sites(), t2.Sites()...) {
		if in := s.Inflight(); in != 0 {
			t.Errorf("site %s in-flight %d after drain", s.Name, in)
		}
	}
}
