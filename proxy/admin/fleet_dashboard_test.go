package admin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/proxy/runtime"
)

// thirdShare is a fleet's share as three equal members hold it (the part proxy/cluster's
// Share gives each): a third of every limit.
type thirdShare struct{}

func (thirdShare) Of(_ balancer.BackendID, limit int64) int64 { return limit / 3 }

// A replica of a fleet: the header names the fleet, the node and its members and says when
// the store is unavailable; each backend shows this replica's share of its limit.
func TestDashboardFleet(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(be.Close)
	path := filepath.Join(t.TempDir(), "spillway.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf("listen: {http: \"127.0.0.1:0\"}\nsites:\n  - {name: idc1, weight: 1, backends: [%q], max_inflight: 30}\n", be.URL)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := runtime.NewReloader(runtime.ReloaderOptions{Path: path})
	if err := r.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); r.Close() })
	r.Registry().SetShare(thirdShare{})
	var store atomic.Value
	store.Store("up")
	r.SetCluster(func() runtime.ClusterState {
		return runtime.ClusterState{Name: "prod", Node: "r1", Members: []string{"r0", "r1", "r2"}, Store: store.Load().(string), Joined: true}
	})
	srv := httptest.NewServer(New(Options{Control: r, Tokens: Tokens{"ops": "fleet-dashboard-token-0123456789"}, OpenReads: true}))
	t.Cleanup(srv.Close)

	st := fetchDashboardState(t, srv.Client(), srv.URL)
	backend := st["sites"].([]any)[0].(map[string]any)["backends"].([]any)[0].(map[string]any)
	if backend["limit"] != 10.0 || backend["fleet_limit"] != 30.0 {
		t.Fatalf("state: backend limit %v of %v, want 10 of 30", backend["limit"], backend["fleet_limit"])
	}

	b := startBrowser(t)
	b.do(t, chromedp.Navigate(srv.URL+"/"))
	b.waitText(t, "#fleet", "prod: r1 of 3 members, store up")
	b.waitText(t, `#sites article[data-site="idc1"] [data-field="backend-limit"]`, "0 / 10 (share of 30)")
	store.Store("unavailable")
	b.waitText(t, "#fleet", "store UNAVAILABLE")
	if cls := b.eval(t, `document.getElementById("fleet").className`); cls != `"bad"` && cls != "bad" {
		t.Errorf("the fleet's header with the store unavailable has class %s, want bad", cls)
	}
}
