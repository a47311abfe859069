package proxy

import (
	"testing"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/health"
)

// R6: SetMembers prunes the forwarders of members that left, but a request that leased such
// a member before the change calls t.forwarder afterwards, which makes and stores a new one:
// the map keeps a forwarder for a departed member for the life of the Table.
func TestPrunedForwarderIsNotRecreated(t *testing.T) {
	cfg, err := configs.Parse("t.yaml", []byte(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: aws, weight: 1, elastic: true, max_inflight: 4, discovery: {file: /nonexistent, interval: 10s}}
`))
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := Build(cfg, Deps{Registry: balancer.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Close()
	if _, err := tbl.SetMembers("aws", []string{"http://10.0.0.1:80"}, true); err != nil {
		t.Fatal(err)
	}
	var l balancer.Lease
	if err := tbl.bal.Picker().Pick(&l, 0); err != nil {
		t.Fatal(err)
	}
	route := &tbl.sites[0]
	tbl.forwarder(route, l.Backend)                             // first try
	tbl.SetMembers("aws", []string{"http://10.0.0.2:80"}, true) // member leaves: its forwarder is pruned
	tbl.forwarder(route, l.Backend)                             // a retry, or a request that picked before the change
	l.Done(balancer.Result{})
	n := 0
	route.forwarders.Range(func(k, _ any) bool {
		if k.(*balancer.Backend) == l.Backend {
			n++
		}
		return true
	})
	if n != 0 {
		t.Errorf("forwarder of departed member %s still in the map after its last request", l.Backend.ID)
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
func TestOldGenerationDiscoveryKeepsPassiveHealthMembership(t *testing.T) {
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
