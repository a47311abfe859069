package telemetry_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/telemetry"
)

func accessConfig(t *testing.T, output string) *configs.Config {
	t.Helper()
	yaml := fmt.Sprintf("sites:\n- {name: idc1, weight: 1, backends: [\"http://127.0.0.1:1\"]}\naccess_log: {output: %q, sample_2xx: 1}\n", output)
	cfg, err := configs.Parse("spillway.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Prepare changes nothing until commit: a config whose output cannot be opened is refused
// and the lines keep going to the output in effect; a discarded one is never written to.
func TestAccessLogPrepareCommitDiscard(t *testing.T) {
	dir := t.TempDir()
	first, second, third := filepath.Join(dir, "1.log"), filepath.Join(dir, "2.log"), filepath.Join(dir, "3.log")
	a := telemetry.NewAccessLog(nil)
	defer a.Close()
	commit, _, err := a.Prepare(accessConfig(t, first))
	if err != nil {
		t.Fatal(err)
	}
	commit()
	if _, _, err := a.Prepare(accessConfig(t, filepath.Join(dir, "missing", "x.log"))); err == nil {
		t.Error("an output in a missing directory was not refused")
	}
	_, discard, err := a.Prepare(accessConfig(t, second))
	if err != nil {
		t.Fatal(err)
	}
	a.Record(&proxy.RequestInfo{ID: "one", Status: 200})
	discard()
	commit, _, err = a.Prepare(accessConfig(t, third))
	if err != nil {
		t.Fatal(err)
	}
	commit() // closes first, flushing it
	a.Record(&proxy.RequestInfo{ID: "two", Status: 200})
	a.Close()
	for path, want := range map[string]string{first: `"request_id":"one"`, second: "", third: `"request_id":"two"`} {
		b, _ := os.ReadFile(path)
		if got := strings.TrimSpace(string(b)); (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("%s: %q, want a line with %s", filepath.Base(path), got, want)
		}
	}
}
