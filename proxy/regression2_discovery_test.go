package proxy_test

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/runtime"
)

// Regression (found by review): a new generation is seeded with the members the old one discovered, but the
// active health checks of discovered members start only when discovery sets the members, on the new
// Discoverer's first *successful, changed* lookup. A reload while discovery is failing
// (DNS down, targets file empty) leaves those members with no health checks at all.
func TestRegressionSeededMembersKeepHealthChecksAfterReload(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	aws := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && !healthy.Load() {
			w.WriteHeader(500)
			return
		}
		fmt.Fprint(w, "aws")
	})
	idc := nameBackend(t, "idc1")
	dir := t.TempDir()
	targets := filepath.Join(dir, "targets.txt")
	u, _ := url.Parse(aws.URL)
	if err := os.WriteFile(targets, []byte(u.Host+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := func(w int) string {
		return fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: %d, backends: [%q]}
  - name: aws
    weight: 1
    elastic: true
    max_inflight: 4
    discovery: {file: %q, interval: 20ms}
    health: {path: /healthz, interval: 20ms, timeout: 20ms, rise: 1, fall: 1}
retries: {attempts: 1}
`, w, idc.URL, targets)
	}
	e := startReloader(t, cfg(1), runtime.ReloaderOptions{})
	up := func() bool {
		bs := e.site(t, "aws").Backends
		return len(bs) == 1 && bs[0].Healthy
	}
	waitFor(t, "the discovered member up", up)
	// Discovery starts failing (empty file: the last members are kept), then a reload.
	if err := os.WriteFile(targets, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	e.write(t, cfg(2))
	if err := e.r.Reload("test", false); err != nil {
		t.Fatal(err)
	}
	if !up() {
		t.Fatal("member not kept across the reload")
	}
	// The member's health check now fails: it must go down.
	healthy.Store(false)
	deadline := time.Now().Add(2 * time.Second)
	for up() {
		if time.Now().After(deadline) {
			t.Fatalf("member still healthy 2s after its /healthz started failing (interval 20ms, fall 1): no health checks run after the reload")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
