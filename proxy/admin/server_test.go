package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/runtime"
)

// startDashboardServer serves the real admin API over a running runtime.Reloader with three
// sites, idc1:idc2:aws = 5:3:2, and a minute of traffic already counted, so that the
// dashboard's chart has lines. It returns the admin API's URL, a valid token, and a reader
// of GET /api/v1/state.
func startDashboardServer(t *testing.T) (baseURL, token, path string, getState func(t *testing.T) map[string]any) {
	t.Helper()
	var urls []string
	for range 3 {
		be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
		t.Cleanup(be.Close)
		urls = append(urls, be.URL)
	}
	path = filepath.Join(t.TempDir(), "spillway.yaml")
	cfg := fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 5, backends: [%q], max_inflight: 100}
  - {name: idc2, weight: 3, backends: [%q], max_inflight: 100}
  - {name: aws, weight: 2, backends: [%q], max_inflight: 50, elastic: true}
`, urls[0], urls[1], urls[2])
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := runtime.NewReloader(runtime.ReloaderOptions{Path: path})
	if err := r.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); r.Close() })
	// Two minutes of 5:3:2 traffic, counted as if they had passed, with a spike a minute
	// ago when idc1 was full and its excess spilled to aws.
	now := time.Now()
	for s := 120; s >= 1; s-- {
		at := now.Add(-time.Duration(s) * time.Second)
		for site, n := range map[string]int{"idc1": 5, "idc2": 3, "aws": 2} {
			for range 4 * n {
				r.Live().Record(&proxy.RequestInfo{Start: at, Site: site, Preferred: site, Status: 200})
			}
		}
		if s > 50 && s <= 70 {
			for range 12 {
				r.Live().Record(&proxy.RequestInfo{Start: at, Site: "aws", Preferred: "idc1", Spill: "saturated", Status: 200})
			}
		}
	}
	token = "dashboard-test-token-" + fmt.Sprint(now.UnixNano())
	srv := httptest.NewServer(New(Options{Control: r, Tokens: Tokens{"ops": token}, OpenReads: true}))
	t.Cleanup(srv.Close)
	return srv.URL, token, path, func(t *testing.T) map[string]any {
		t.Helper()
		return fetchDashboardState(t, srv.Client(), srv.URL)
	}
}

// fetchDashboardState reads and decodes GET /api/v1/state.
func fetchDashboardState(t *testing.T, c *http.Client, baseURL string) map[string]any {
	t.Helper()
	resp, err := c.Get(baseURL + "/api/v1/state")
	if err != nil {
		t.Fatalf("GET /api/v1/state: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /api/v1/state: read body: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v1/state: %s: %s", resp.Status, body)
	}
	var state map[string]any
	if err := json.Unmarshal(body, &state); err != nil {
		t.Fatalf("GET /api/v1/state: decode: %v", err)
	}
	return state
}
