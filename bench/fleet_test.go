package bench

import (
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// spillwayForTest builds the spillway command into a temporary directory, or skips.
func spillwayForTest(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "spillway")
	cmd := exec.Command(goBin, "build", "-o", bin, "../cmd/spillway")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("cannot build spillway (%v): %s", err, out)
	}
	return bin
}

// The fleet scenario end to end, briefly: three replicas on one etcd, a stop and a join.
// Timing is not judged here but for the fleet-wide limit, which must hold whatever the
// machine's speed: what a backend held at once, measured at the backend, is never above
// its max_inflight.
func TestFleetScenario(t *testing.T) {
	if _, err := lookEtcd(); err != nil {
		t.Skip("etcd not installed (Debian's etcd-server): the fleet scenario needs it")
	}
	bin := spillwayForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // liveness only
	defer cancel()
	rep, err := Run(ctx, Options{Scenarios: []string{"fleet"}, Short: true, SpillwayBinary: bin,
		Dir: t.TempDir(), Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Scenarios) != 1 {
		t.Fatalf("%d scenarios", len(rep.Scenarios))
	}
	r := rep.Scenarios[0]
	if r.Verdict != Pass && r.Verdict != Fail {
		t.Fatalf("verdict %s (%s)", r.Verdict, r.Note)
	}
	want := []string{"idc1 share before the overload", "idc2 share before the overload", "aws share before the overload",
		"most requests one idc1 backend", "most requests one idc2 backend", "most requests one aws backend",
		"requests not answered 2xx", "requests spilled", "spills that went to aws", "replicas that joined"}
	for _, w := range want {
		found := false
		for _, c := range r.Checks {
			if strings.HasPrefix(c.Name, w) {
				found = true
				if strings.HasPrefix(w, "most requests one") && !c.Pass {
					t.Errorf("fleet-wide limit exceeded: %s", c)
				}
			}
		}
		if !found {
			t.Errorf("no check %q in %v", w, r.Checks)
		}
	}
	if r.Series == nil || len(r.Series.Marks) < 3 || len(r.Series.ST) == 0 || r.Table == nil || len(r.Table.Rows) != 4 {
		t.Errorf("series %+v, table %+v", r.Series != nil, r.Table)
	}
	if r.Verdict == Fail {
		t.Logf("fleet failed on this machine (timing is not judged here): %v", r.Checks)
	}
}

// Without a spillway binary the fleet scenario is a skip with a note, not an error.
func TestFleetSkipsWithoutBinary(t *testing.T) {
	rep, err := Run(context.Background(), Options{Scenarios: []string{"fleet"}, Short: true, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Scenarios[0]; r.Verdict != Skip || r.Note == "" {
		t.Errorf("verdict %s, note %q", r.Verdict, r.Note)
	}
}
