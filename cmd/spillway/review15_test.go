package main

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/cluster/etcdtest"
)

// BUG (fleet: "a change made through any replica applies on every replica"): a weight set
// with ?persist=true through one replica of a fleet applies on that replica only. persist
// writes the weight into that replica's own config file and, with no ramp, commits a
// ClearOverride to etcd ("the file says so now"): the other replicas, whose files still have
// the old weight, drop any override and go on with their file's weight — the fleet splits
// differently per replica, silently. (With a ramp, each replica drops the override at the
// ramp's end and falls back to its own file, and each one writes its own clear_weight entry.)
// Cause: proxy/controls.go, SetWeight (persist && ramp == 0 → ClearOverride; rampStep and
// restore drop a Persisted override); nothing refuses or adapts persist when the store is a
// fleet's (store.Watcher). Fix: in a fleet refuse persist (409: the replicas' files are not
// shared; change the ConfigMap), or commit the override as a plain one (not Persisted) so
// that it stays in etcd for the others.
func TestReview15FleetPersistedWeightReachesEveryReplica(t *testing.T) {
	t.Setenv("SPILLWAY_ADMIN_TOKEN", opsToken)
	etcd := etcdtest.Start(t, 1)
	var backends [3]*countingBackend
	for i := range backends {
		backends[i] = newCountingBackend(t, 0)
	}
	var rs []*opsRun
	for i := range 2 {
		rs = append(rs, startRun(t, opsWriteConfig(t, fleetConfig(fmt.Sprintf("r%d", i), etcd.Endpoints(), backends, ""))))
	}
	status, body := rs[0].call(http.MethodPut, rs[0].admin+"/api/v1/sites/idc1/weight?persist=true", opsToken, `{"weight":9}`)
	if status != http.StatusOK {
		// Refusing persist in a fleet, saying why, is a fix too.
		t.Logf("PUT weight?persist=true through r0: %d %s", status, body)
		if status == http.StatusConflict || status == http.StatusBadRequest {
			return
		}
		t.Fatalf("PUT weight?persist=true through r0: %d %s", status, body)
	}
	if w, _, _ := rs[0].site(t, "idc1"); w != 9 {
		t.Fatalf("r0's idc1 weight %v after its own persisted change, want 9", w)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		w, _, o := rs[1].site(t, "idc1")
		if w == 9 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("r1's idc1 weight is %v (override %+v) 5s after a persisted weight of 9 through r0: the change applies on one replica only", w, o)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
