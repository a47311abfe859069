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

// Review 13 (passes; kept as a guard): the typed failure table must say, for every reason,
// what the string-based code before it (1c2cfc3: proxy/errors.go classify, backendFailed,
// logFailure; proxy/handler.go retry's client check, Table.observe's skip; proxy/live.go's
// shed) said. queue_delay's shed is the deliberate change of 5589522.
func TestFailureTableMatchesTheCodeItReplaced(t *testing.T) {
	type row struct {
		name                         string
		status                       int
		backend, client, quiet, shed bool
	}
	want := map[failure]row{
		reasonNone:           {"", 0, false, false, false, false},
		reasonNoBackend:      {"no_backend", 503, false, false, false, false},
		reasonQueueFull:      {"queue_full", 503, false, false, false, true},
		reasonQueueTimeout:   {"queue_timeout", 503, false, false, false, true},
		reasonQueueDelay:     {"queue_delay", 503, false, false, false, true},
		reasonConnect:        {"connect", 502, true, false, false, false},
		reasonBackendTLS:     {"backend_tls", 502, true, false, false, false},
		reasonConnectTimeout: {"connect_timeout", 504, true, false, false, false},
		reasonTimeout:        {"timeout", 504, true, false, false, false},
		reasonBadGateway:     {"bad_gateway", 502, true, false, false, false},
		reasonUpstream502:    {"upstream_502", 502, true, false, false, false},
		reasonClientGone:     {"client_closed", 499, false, true, true, false},
		reasonClientBody:     {"client_body", 400, false, true, true, false},
		reasonClientTimeout:  {"client_timeout", 408, false, true, false, false},
		reasonBodyIdle:       {"body_idle", 0, false, false, false, false},
		reasonBackendAborted: {"backend_aborted", 0, false, false, false, false},
	}
	if len(want) != int(numFailures) {
		t.Fatalf("the table has %d reasons, this test knows %d", numFailures, len(want))
	}
	for f, w := range want {
		r := failures[f]
		got := row{r.name, r.status, r.backend, r.client, r.quiet, r.shed}
		if got != w {
			t.Errorf("%s: got %+v, want %+v", w.name, got, w)
		}
		// Before the table, exactly the failures that count against a backend were retried.
		if r.retryable != r.backend {
			t.Errorf("%s: retryable %v, backend %v (the old retryReasons were backendFailed's)", w.name, r.retryable, r.backend)
		}
	}
}
