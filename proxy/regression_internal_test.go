package proxy

import (
	"testing"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
)

// R6: SetMembers prunes the forwarders of members that left, but a request that leased such
// a member before the change calls t.forwarder afterwards, which makes and stores a new one:
// the map keeps a forwarder for a departed member for the life of the Table.
func TestRegressionPrunedForwarderIsRecreatedAndKept(t *testing.T) {
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
