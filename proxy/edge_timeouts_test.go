package proxy_test

// Whole-request timeouts and hidden resends (issue 11): response_header bounds the client's
// whole wait, retries included; body_idle cuts a body that stops flowing, and blames the
// side that went silent; a request reaches backends at most retries.attempts times, the
// Transport's own resends included.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/proxytest"
)

// startOutlierProxy is startProxy with passive health on (as `spillway run` has it).
func startOutlierProxy(t *testing.T, yaml string) *env {
	t.Helper()
	cfg := proxytest.MustConfig(t, yaml)
	reg := balancer.NewRegistry()
	outliers := proxy.NewOutliers(cfg, reg, nil)
	t.Cleanup(outliers.Close)
	tbl, err := proxy.Build(cfg, proxy.Deps{Registry: reg, Outliers: outliers})
	if err != nil {
		t.Fatalf("proxy.Build: %v", err)
	}
	t.Cleanup(tbl.Close)
	outliers.SetMembers(tbl.Members())
	h := proxy.NewHandler(tbl, nil)
	srv, addr := proxytest.ServeOn(t, cfg, h)
	client, tr := proxytest.NewClient(t)
	return &env{cfg: cfg, reg: reg, table: tbl, handler: h, srv: srv, addr: addr, url: "http://" + addr, client: client, tr: tr}
}

func (e *env) backend(site, addr string) *balancer.Backend {
	return e.reg.Backend(balancer.BackendID{Site: site, Addr: addr})
}

// TestResponseHeaderBoundsRetries: the first try's backend holds the request for most of
// response_header and then resets; the retry's backend never answers. The client's whole
// wait is response_header, not response_header plus the first try.
func TestResponseHeaderBoundsRetries(t *testing.T) {
	const limit = 2 * time.Second
	resetAfter := 1500 * time.Millisecond
	var arrivals atomic.Int32
	released := make(chan struct{})
	script := func(w http.ResponseWriter, r *http.Request) {
		if arrivals.Add(1) == 1 {
			select {
			case <-time.After(resetAfter):
			case <-released:
			}
			proxytest.Hijack(w).Close()
			return
		}
		select {
		case <-r.Context().Done(): // the proxy gave up on it
		case <-released:
		}
	}
	a, b := proxytest.NewBackend(t, script), proxytest.NewBackend(t, script)
	defer close(released)
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{a.URL, b.URL}}},
		fmt.Sprintf("timeouts: {response_header: %s}\nretries: {attempts: 3}\n", limit)))

	start := time.Now()
	status, _ := e.get(t, "/pay-status")
	took := time.Since(start)
	if status != http.StatusGatewayTimeout {
		t.Errorf("status %d, want 504", status)
	}
	if n := arrivals.Load(); n != 2 {
		t.Errorf("the request reached the backends %d times, want 2 (the reset, then the silent retry)", n)
	}
	// Generous bounds: before, this took resetAfter + limit (3.5 s).
	if took < limit-100*time.Millisecond || took > limit+time.Second {
		t.Errorf("the client waited %v for its answer, want about response_header (%v)", took, limit)
	}
}

// TestResponseHeaderTimeoutNotRetriedPastTheLimit: a try that used the whole of
// response_header leaves nothing for a retry: the second backend never sees the request.
func TestResponseHeaderTimeoutNotRetriedPastTheLimit(t *testing.T) {
	var other atomic.Int32
	released := make(chan struct{})
	silent := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-released:
		}
	})
	second := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) { other.Add(1) })
	defer close(released)
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{silent.URL}}, {Name: "idc2", Weight: 0, Backends: []string{second.URL}}},
		"timeouts: {response_header: 300ms}\nretries: {attempts: 2}\n"))
	if status, _ := e.get(t, "/"); status != http.StatusGatewayTimeout {
		t.Errorf("status %d, want 504", status)
	}
	if n := other.Load(); n != 0 {
		t.Errorf("the second backend got %d requests after the first used the whole response_header, want 0", n)
	}
	e.checkIdle(t)
}

// TestNoHiddenResends: backends that read a GET and then reset the connection, on kept-alive
// connections (the case in which net/http's Transport resends on its own). One client
// request reaches the backends at most retries.attempts times in all.
func TestNoHiddenResends(t *testing.T) {
	for _, attempts := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("attempts %d", attempts), func(t *testing.T) {
			var mu sync.Mutex
			boom := map[string]int{} // arrivals of /boom per backend
			warm := map[string]int{}
			var urls []string
			for i := range 3 {
				name := fmt.Sprintf("b%d", i)
				b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
					mu.Lock()
					defer mu.Unlock()
					if r.URL.Path == "/boom" {
						boom[name]++
						proxytest.Hijack(w).Close()
						return
					}
					warm[name]++
					io.WriteString(w, "warm")
				})
				urls = append(urls, b.URL)
			}
			e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: urls}},
				fmt.Sprintf("retries: {attempts: %d, min_per_second: 100}\n", attempts)))
			// Keep-alive connections to every backend first.
			for i := 0; ; i++ {
				if status, _ := e.get(t, "/warm"); status != http.StatusOK {
					t.Fatalf("warm-up: %d", status)
				}
				mu.Lock()
				n := len(warm)
				mu.Unlock()
				if n == 3 {
					break
				}
				if i > 200 {
					t.Fatal("warm-up never reached every backend")
				}
			}
			status, _ := e.get(t, "/boom")
			if status != http.StatusBadGateway {
				t.Errorf("status %d, want 502", status)
			}
			mu.Lock()
			total := 0
			for _, n := range boom {
				total += n
			}
			mu.Unlock()
			if total != attempts {
				t.Errorf("GET /boom reached the backends %d times (%v), want retries.attempts = %d", total, boom, attempts)
			}
		})
	}
}

// TestBodyIdleBackendSilentMidResponse: a backend sends its headers and part of its body,
// then goes silent. After body_idle the client's response is cut (never a clean short one),
// the slot is freed, and passive health counts a failure.
func TestBodyIdleBackendSilentMidResponse(t *testing.T) {
	released := make(chan struct{})
	stalled := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "first part")
		w.(http.Flusher).Flush()
		<-released
	})
	defer close(released)
	e := startOutlierProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{stalled.URL}}},
		"timeouts: {body_idle: 300ms}\noutlier: {consecutive_failures: 1, max_ejection_percent: 100}\nretries: {attempts: 1}\n"))
	resp, err := e.client.Get(e.url + "/statement.pdf")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Errorf("the client read a clean %d-byte body %q; want the response cut", len(body), body)
	}
	if resp.StatusCode != http.StatusOK || string(body) != "first part" {
		t.Errorf("got %d %q before the cut, want 200 \"first part\"", resp.StatusCode, body)
	}
	if !e.backend("idc1", stalled.URL).Ejected() {
		t.Error("the silent backend was not counted as failing (consecutive_failures: 1 should eject it)")
	}
	e.checkIdle(t)
}

// TestBodyIdleClientSilentMidUpload: a client sends part of its body and goes silent. After
// body_idle it gets 408 and the connection closes; the backend's request is cut (it never
// gets a complete body), and the backend is not blamed.
func TestBodyIdleClientSilentMidUpload(t *testing.T) {
	got := make(chan error, 1)
	b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		got <- err
	})
	e := startOutlierProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{b.URL}}},
		"timeouts: {body_idle: 300ms}\noutlier: {consecutive_failures: 1, max_ejection_percent: 100}\n"))
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(proxytest.Liveness))
	io.WriteString(conn, "POST /transfer HTTP/1.1\r\nHost: bank.example\r\nContent-Length: 100\r\n\r\n{\"amount\":")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to the stalled upload: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
		t.Errorf("got %d (close %v), want 408 and the connection closed", resp.StatusCode, resp.Close)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("the connection stayed open after the 408")
	}
	if err := proxytest.Receive(t, got, "the backend's read of the body"); err == nil {
		t.Error("the backend read a complete body; want its request cut")
	}
	if e.backend("idc1", b.URL).Ejected() {
		t.Error("the backend was blamed for the client's silence")
	}
	e.checkIdle(t)
}

// TestBodyIdleClientNotReading: a client asks for a large download and reads none of it.
// Once the proxy's writes to it have blocked for body_idle, the exchange is cut, the slot
// is freed, and the backend is not blamed.
func TestBodyIdleClientNotReading(t *testing.T) {
	chunk := strings.Repeat("x", 64<<10)
	finished := make(chan struct{})
	b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		defer close(finished)
		for range 1024 { // 64 MiB at most: far more than socket buffers hold
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	})
	e := startOutlierProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{b.URL}}},
		"timeouts: {body_idle: 300ms}\noutlier: {consecutive_failures: 1, max_ejection_percent: 100}\n"))
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	io.WriteString(conn, "GET /export HTTP/1.1\r\nHost: bank.example\r\n\r\n")
	// The backend's handler ends once the proxy stops reading from it: the exchange was cut.
	proxytest.Receive(t, finished, "the backend to be cut off")
	if e.backend("idc1", b.URL).Ejected() {
		t.Error("the backend was blamed for a client that does not read")
	}
	conn.Close()
	e.checkIdle(t)
}
