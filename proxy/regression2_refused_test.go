package proxy_test

import (
	"fmt"
	"testing"

	"github.com/spillway/spillway/proxy/runtime"
)

// Regression (found by review): Build (balancer.NewPicker → backends → AdaptiveLimit.SetBounds) changes the
// running backends' learned-limit bounds before the reload can still be refused (here by
// access.Configure, which runs after Build). "A config that fails any step never replaces
// the running one."
func TestRegressionRefusedReloadChangesAdaptiveBounds(t *testing.T) {
	b := nameBackend(t, "a")
	cfg := func(cap int, extra string) string {
		return fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: a, weight: 1, backends: [%q], adaptive: {floor: 1, cap: %d, initial: %d}}
retries: {attempts: 1}
%s`, b.URL, cap, min(cap, 50), extra)
	}
	e := startReloader(t, cfg(100, ""), runtime.ReloaderOptions{})
	before := e.site(t, "a").Limit
	e.write(t, cfg(5, "access_log: {output: "+fmt.Sprintf("%q", t.TempDir()+"/no/such/dir/access.log")+"}\n"))
	err := e.r.Reload("test", false)
	if err == nil {
		t.Fatal("reload accepted; want refused (access log cannot be opened)")
	}
	t.Logf("refused as expected: %v", err)
	if after := e.site(t, "a").Limit; after != before {
		t.Fatalf("refused reload changed the running limit: %d before, %d after", before, after)
	}
}

// Regression (found by review): the refused config's site "ghost" leaves spillover counters in the Registry
// (NewPicker → spillCounters), exported as spillway_spillover_total{from="ghost"} until the
// next successful reload prunes them.
func TestRegressionRefusedReloadLeavesPhantomSite(t *testing.T) {
	a, g := nameBackend(t, "a"), nameBackend(t, "g")
	e := startReloader(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: a, weight: 1, backends: [%q]}
retries: {attempts: 1}
`, a.URL), runtime.ReloaderOptions{})
	e.write(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: a, weight: 1, backends: [%q]}
  - {name: ghost, weight: 1, backends: [%q]}
retries: {attempts: 1}
access_log: {output: %q}
`, a.URL, g.URL, t.TempDir()+"/no/such/dir/x.log"))
	if err := e.r.Reload("test", false); err == nil {
		t.Fatal("want refused")
	}
	for _, c := range e.r.Registry().Spills() {
		if c.From == "ghost" || c.To == "ghost" {
			t.Fatalf("refused config's site left in the Registry: %+v", c)
		}
	}
}
