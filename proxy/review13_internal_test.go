package proxy

import (
	"testing"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/health"
)

// Review 13 (passes; kept as a guard): the typed failure table must say, for every reason,
// what the string-based code before it (1c2cfc3: proxy/errors.go classify, backendFailed,
// logFailure; proxy/handler.go retry's client check, Table.observe's skip; proxy/live.go's
// shed) said. queue_delay's shed is the deliberate change of 5589522.
func TestReview13FailureTableMatchesTheCodeItReplaced(t *testing.T) {
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

// Review 13, bug: passive health's membership is whatever Table called
// Outliers.SetMembers last, and the OLD generation's discovery still calls it
// (Table.SetMembers, proxy/members.go) between the Reloader's
// r.outliers.SetMembers(t.Members()) and old.cancel() (proxy/reload.go). A discovery update
// landing there makes the Outliers forget every backend the new config added: their
// failures are counted and never eject them (eject finds no member), until something else
// calls SetMembers — for a static site, the next reload. SetMembers should push the
// membership only while its Table is the one served (or the Outliers should be told by the
// Reloader, under its lock, from the served Table).
func TestReview13OldGenerationDiscoveryShrinksPassiveHealthMembership(t *testing.T) {
	cfg := func(extra string) *configs.Config {
		c, err := configs.Parse("t.yaml", []byte(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: d, weight: 1, discovery: {file: /nonexistent, interval: 10s}}
  - {name: a, weight: 1, backends: ["http://10.0.0.1:80"]}
`+extra+`outlier: {consecutive_failures: 3, max_ejection_percent: 100}
`))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	reg := balancer.NewRegistry()
	o := health.NewOutliers(health.OutlierOptions{Ejector: reg, ConsecutiveFailures: 3, MaxEjectionPercent: 100})
	defer o.Close()
	old, err := Build(cfg(""), Deps{Registry: reg, Outliers: o})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	o.SetMembers(old.Members())
	// The reload: a new config adds site c; the Reloader tells the Outliers, swaps and
	// activates.
	next, err := Build(cfg(`  - {name: c, weight: 1, backends: ["http://10.0.0.3:80"]}
`), Deps{Registry: reg, Outliers: o, Previous: old})
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	o.SetMembers(next.Members())
	next.Activate()
	// ... and before old.cancel(), the old generation's discovery finds a member.
	old.SetMembers(old.Discovered()[0].Name, []string{"http://10.0.0.9:80"}, true)

	c, ok := reg.Lookup(balancer.BackendID{Site: "c", Addr: "http://10.0.0.3:80"})
	if !ok {
		t.Fatal("c's backend unknown to the Registry")
	}
	for range 10 {
		o.Observe(c, true)
	}
	if !o.Ejected("c", "http://10.0.0.3:80") {
		t.Fatalf("c's backend failed 10 times in a row (threshold 3) and was not ejected: passive health " +
			"forgot the new config's backends when the old generation's discovery set its members")
	}
}
