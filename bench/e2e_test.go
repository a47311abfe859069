package bench

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spillway/spillway/bench/sim"
)

// Two scenarios end to end through the real proxy, briefly: they run, are judged, and
// report. Whether their verdicts pass is a matter of timing, which tests do not judge.
func TestRunScenariosEndToEnd(t *testing.T) {
	var progress bytes.Buffer
	rep, err := Run(context.Background(), Options{Scenarios: []string{"steady", "reload"}, Short: true,
		Duration: time.Second, Progress: &progress, Dir: t.TempDir(), Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Scenarios) != 2 {
		t.Fatalf("%d scenarios", len(rep.Scenarios))
	}
	for _, r := range rep.Scenarios {
		if r.Verdict != Pass && r.Verdict != Fail {
			t.Errorf("%s: verdict %s (%s)", r.Name, r.Verdict, r.Note)
		}
		if len(r.Checks) == 0 || r.Series == nil || len(r.Series.T) == 0 || r.Figures["requests"] == 0 {
			t.Errorf("%s: checks %d, series %v, figures %v", r.Name, len(r.Checks), r.Series != nil, r.Figures)
		}
		// The charts' points are 100 ms; series.csv gets the run by the second.
		if ps := r.PerSecond; ps == nil || ps.Bucket != 1 || len(ps.T) != 1 || ps.Offered[0] == 0 || ps.ST != nil {
			t.Errorf("%s: per second %+v", r.Name, ps)
		}
	}
	if rl := rep.Scenarios[1]; rl.Params["weight_changes"] != 10 || len(rl.Series.Marks) != 10 {
		t.Errorf("reload: %v weight changes, %d marks", rl.Params["weight_changes"], len(rl.Series.Marks))
	}
	if !strings.Contains(progress.String(), "=== steady") || !strings.Contains(progress.String(), "--- reload") {
		t.Errorf("progress:\n%s", progress.String())
	}
	dir := t.TempDir()
	if err := WriteReport(dir, rep); err != nil {
		t.Fatal(err)
	}
	back, err := ReadResults(filepath.Join(dir, ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckResults(back, []string{"steady", "reload"}); err != nil {
		t.Fatal(err)
	}
	csv, err := os.ReadFile(filepath.Join(dir, SeriesFile))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(csv)), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[1], "steady,0,1,") || !strings.HasPrefix(lines[2], "reload,0,1,") {
		t.Errorf("series.csv:\n%s", csv)
	}
}

func TestRunRefusesUnknownScenario(t *testing.T) {
	if _, err := Run(context.Background(), Options{Scenarios: []string{"stedy"}}); err == nil || !strings.Contains(err.Error(), "unknown scenario") {
		t.Fatalf("got %v", err)
	}
}

// SetWeights is a reload: the split follows it at once, in-flight state carries over.
func TestEnvSetWeights(t *testing.T) {
	env, err := StartEnv(EnvOptions{Sites: standardSites(), Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	split := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			res, err := client.Get(env.URL + "/")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			got[res.Header.Get(sim.HeaderSite)]++
		}
		return got
	}
	if got := split(20); got["idc1"] != 10 || got["idc2"] != 6 || got["aws"] != 4 {
		t.Fatalf("5:3:2: %v", got)
	}
	if err := env.SetWeights([]int{1, 0, 1}); err != nil {
		t.Fatal(err)
	}
	if got := split(20); got["idc1"] != 10 || got["idc2"] != 0 || got["aws"] != 10 {
		t.Fatalf("1:0:1: %v", got)
	}
	if err := env.SetWeights([]int{1, 2}); err == nil {
		t.Fatal("two weights for three sites accepted")
	}
	if w := env.Weights(); w[0] != 1 || w[1] != 0 || w[2] != 1 {
		t.Fatalf("weights %v after a refused change", w)
	}
}
