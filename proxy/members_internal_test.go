package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/health"
)

// A request that leased a discovered member before the member left finishes on it, through
// the site's one forwarder (which goes to each try's leased backend), and the Table keeps
// nothing for the departed member. (R6: with a forwarder per member, kept in a map that
// SetMembers pruned, such a request made its member's forwarder again and the map kept it
// for the life of the Table.)
func TestRequestOnADepartedMemberFinishesOnIt(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		io.WriteString(w, "a")
	}))
	defer a.Close()
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") }))
	defer b.Close()
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
	if _, err := tbl.SetMembers("aws", []string{a.URL}, false); err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(NewHandler(tbl, nil))
	defer front.Close()
	get := func() (string, error) {
		res, err := front.Client().Get(front.URL + "/")
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		return fmt.Sprintf("%d %s", res.StatusCode, body), err
	}
	held := make(chan string, 1)
	go func() { got, _ := get(); held <- got }()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach member a")
	}
	if _, err := tbl.SetMembers("aws", []string{b.URL}, false); err != nil { // a leaves
		t.Fatal(err)
	}
	close(release)
	select {
	case got := <-held:
		if got != "200 a" {
			t.Errorf("the request leased on a before it left got %q, want 200 a", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request on the departed member was not answered")
	}
	if got, err := get(); err != nil || got != "200 b" {
		t.Errorf("a new request got %q %v, want 200 b", got, err)
	}
	front.Client().CloseIdleConnections()
}

// Review 13, bug: passive health's membership is whatever Table called
// Outliers.SetMembers last, and the OLD generation's discovery still calls it
// (Table.SetMembers, proxy/members.go) between the Reloader's
// r.outliers.SetMembers(t.Members()) and old.cancel() (proxy/runtime/reload.go). A discovery update
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
