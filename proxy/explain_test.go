package proxy_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/telemetry"
)

// TestExplainSaysWhatChoseAndWhyNotRetried: the explain record of a request says whether
// the split or the session's affinity chose its site, and why a failure was not retried.
func TestExplainSaysWhatChoseAndWhyNotRetried(t *testing.T) {
	reset := newBackend(t, func(w http.ResponseWriter, r *http.Request) { hijack(w).Close() })
	other := newBackend(t, func(w http.ResponseWriter, r *http.Request) {})
	cfg := mustConfig(t, configYAML([]site{{"idc1", 1, []string{reset.URL}}, {"idc2", 0, []string{other.URL}}},
		"affinity: {header: X-Session-Id}\n"))
	tbl, err := proxy.Build(cfg, proxy.Deps{Registry: balancer.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tbl.Close)
	recent := telemetry.NewRecent(16)
	_, addr := serveOn(t, cfg, proxy.NewHandler(tbl, nil, proxy.WithRecorders(recent)))
	client, _ := newClient(t)
	for _, tc := range []struct {
		id, session, chosen string
	}{
		{"pay-1", "", "split"},
		{"pay-2", "device-42", "affinity"},
	} {
		req, _ := http.NewRequest("POST", "http://"+addr+"/pay", strings.NewReader("amount=100"))
		req.Header.Set("X-Request-Id", tc.id)
		if tc.session != "" {
			req.Header.Set("X-Session-Id", tc.session)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("%s: status %d, want 502", tc.id, resp.StatusCode)
		}
		info, ok := recent.Find(tc.id)
		if !ok {
			t.Fatalf("%s not kept for explain", tc.id)
		}
		if info.Chosen != tc.chosen || info.NoRetry != "it may have reached the backend, and it is not idempotent" {
			t.Errorf("%s: chosen %q, no_retry %q", tc.id, info.Chosen, info.NoRetry)
		}
		why := telemetry.Explain(&info)
		if !strings.Contains(why, "not retried: it may have reached the backend") ||
			(tc.chosen == "affinity") != strings.Contains(why, "its session (affinity) preferred idc1") {
			t.Errorf("%s: explain %q", tc.id, why)
		}
	}
}
