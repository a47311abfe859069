package proxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spillway/spillway/balancer"
)

// R4: Result.Latency is headerAt − lease.Started, so it includes the client's upload time.
// A backend that answers at once looks 300ms slow after one slow mobile upload; that feeds
// the EWMA (p2c cost) and the adaptive limit, which then shrinks for the client's slowness.
func TestRegressionSlowUploadCountsAsBackendLatency(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(200)
	}))
	defer be.Close()
	e := startProxy(t, configYAML([]site{{"s", 1, []string{be.URL}}}, ""))
	pr, pw := io.Pipe()
	go func() {
		for range 6 {
			pw.Write([]byte("chunk"))
			time.Sleep(50 * time.Millisecond)
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", e.url+"/upload", pr)
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	b, _ := e.reg.Lookup(balancer.BackendID{Site: "s", Addr: be.URL})
	if b.Latency() > 100*time.Millisecond {
		t.Errorf("backend that answers at once has latency EWMA %v after a 300ms client upload", b.Latency())
	}
}

// R5: every discovery update stops all of the site's health checks and starts new ones
// (SetMembers), so rise/fall counters restart from zero. A pool whose member list changes
// more often than fall × interval (autoscaling churn, a DNS answer that returns a rotating
// subset) never marks a dead member down: it keeps getting traffic.
func TestRegressionDiscoveryChurnResetsHealthChecks(t *testing.T) {
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer live.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer other.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close() // connection refused from now on
	dir := t.TempDir()
	path := filepath.Join(dir, "targets.txt")
	write := func(members ...string) {
		tmp := filepath.Join(dir, "tmp")
		os.WriteFile(tmp, []byte(strings.Join(members, "\n")+"\n"), 0o644)
		os.Rename(tmp, path)
	}
	host := func(u string) string { return strings.TrimPrefix(u, "http://") }
	write(host(live.URL), dead)
	e := startProxy(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - name: aws
    weight: 1
    elastic: true
    max_inflight: 10
    discovery: {file: %q, interval: 10s}
    health: {path: /, interval: 200ms, timeout: 50ms, fall: 3, rise: 1}
`, path))
	e.runTable(t)
	deadID := balancer.BackendID{Site: "aws", Addr: "http://" + dead}
	isDown := func() bool { b, ok := e.reg.Lookup(deadID); return ok && !b.Healthy() }
	// Churn: a third member comes and goes every 150ms, faster than fall × interval. The
	// dead member must still go down while it goes on (bounded by liveness): restarting
	// every member's checks on each change would keep resetting its count of failures.
	deadline := time.Now().Add(liveness)
	for i := 0; !isDown(); i++ {
		if time.Now().After(deadline) {
			t.Fatalf("dead member still up after %v of membership churn (fall 3 × 200ms)", liveness)
		}
		if i%2 == 0 {
			write(host(live.URL), dead, host(other.URL))
		} else {
			write(host(live.URL), dead)
		}
		time.Sleep(150 * time.Millisecond) // the churn's pace, not a synchronisation
	}
}

func TestRegressionDiscoveredPoolRampsAtStartup(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer be.Close()
	path := filepath.Join(t.TempDir(), "targets.txt")
	os.WriteFile(path, []byte(strings.TrimPrefix(be.URL, "http://")+"\n"), 0o644)
	e := startProxy(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: aws, weight: 1, elastic: true, max_inflight: 100, slow_start: 1m, discovery: {file: %q, interval: 10s}}
`, path))
	e.runTable(t)
	waitFor(t, "first member", func() bool { return len(e.table.Status()[0].Backends) == 1 })
	if b := e.table.Status()[0].Backends[0]; b.Limit != 100 {
		t.Errorf("first config's discovered member at startup: limit %d ramp %.2f, want 100", b.Limit, b.Ramp)
	}
}
