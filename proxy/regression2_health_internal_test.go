package proxy

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
)

// Regression (found by review): Build snapshots each backend's health into its health.Target (healthTarget: Up =
// b.Healthy()). The old generation's monitor keeps running until after the swap; if it
// flips the backend down in that window, the new generation's prober still believes "up",
// so probes that pass never report SetUp(true): the backend stays down for good.
func TestRegressionHealthFlipBetweenBuildAndSwapIsLost(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer backend.Close()
	cfg, err := configs.Parse("t.yaml", []byte(fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - name: a
    weight: 1
    backends: [%q]
    health: {path: /, interval: 20ms, timeout: 20ms, rise: 1, fall: 1}
`, backend.URL)))
	if err != nil {
		t.Fatal(err)
	}
	reg := balancer.NewRegistry()
	old, err := Build(cfg, Deps{Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	next, err := Build(cfg, Deps{Registry: reg, Previous: old}) // reloadLocked: Build...
	if err != nil {
		t.Fatal(err)
	}
	// ...the old generation's prober, still running, saw a failure (fall 1) and reports it...
	reg.SetUp("a", backend.URL, false)
	// ...then the new generation starts, swaps in, and the old one stops.
	next.Activate()
	old.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { next.Monitor().Run(ctx) }) // what runtime.RunTable runs for a Table without discovery
	defer func() { cancel(); wg.Wait(); next.Close() }()
	b, _ := reg.Lookup(balancer.BackendID{Site: "a", Addr: backend.URL})
	deadline := time.Now().Add(2 * time.Second)
	for !b.Healthy() {
		if time.Now().After(deadline) {
			t.Fatal("backend answers its probes (interval 20ms, rise 1) but is still down after 2s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
