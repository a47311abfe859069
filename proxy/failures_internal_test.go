package proxy

import (
	"slices"
	"testing"
)

// The failure table is complete and consistent: every reason has a name of its own, the
// client's own failures neither count against a backend nor are retried, and the retry
// metric's reasons are the ones it always had, in the same order.
func TestFailureTableIsComplete(t *testing.T) {
	seen := map[string]failure{}
	for f := reasonNone + 1; f < numFailures; f++ {
		row := failures[f]
		if row.name == "" {
			t.Errorf("failure %d has no name", f)
		}
		if g, dup := seen[row.name]; dup {
			t.Errorf("failures %d and %d are both %q", g, f, row.name)
		}
		seen[row.name] = f
		if row.client && (row.backend || row.retryable) {
			t.Errorf("%s is the client's doing, yet counts against the backend or is retried", f)
		}
		if row.quiet && !row.client {
			t.Errorf("%s is quiet but not the client's doing", f)
		}
	}
	if reasonNone.String() != "" {
		t.Errorf("reasonNone is %q, want \"\" (a request that was answered)", reasonNone.String())
	}
	want := []string{"connect", "backend_tls", "connect_timeout", "timeout", "bad_gateway", "upstream_502"}
	if !slices.Equal(retryReasons, want) {
		t.Errorf("retryReasons = %v, want %v", retryReasons, want)
	}
}
