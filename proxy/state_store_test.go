package proxy_test

// Issue 14: operator state that lasts and is audited, at the Reloader.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/runtime"
)

// A reload that changes the configured weight of an overridden site does not move it: the
// audit entry's item says the override still wins, and a warning line names the site, the
// configured weights and the weight in effect.
func TestOverrideHidesFileEditAndSaysSo(t *testing.T) {
	a, b := nameBackend(t, "idc1"), nameBackend(t, "idc2")
	conf := func(w int) string {
		return fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: %d, backends: [%q]}
  - {name: idc2, weight: 3, backends: [%q]}
`, w, a.URL, b.URL)
	}
	e := startReloader(t, conf(5), runtime.ReloaderOptions{})
	if err := e.r.SetWeight("idc1", 8, 0, "alice", false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.path, []byte(conf(6)), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := e.r.Reload("sighup", false); err != nil {
		t.Fatal(err)
	}
	s := e.site(t, "idc1")
	if s.Weight != 8 || s.ConfiguredWeight != 6 {
		t.Errorf("idc1 after the reload: in effect %g, configured %d; want 8 and 6", s.Weight, s.ConfiguredWeight)
	}
	c := e.r.State().Changes[0]
	if c.Action != "reload" || c.Who != "sighup" || len(c.Items) != 1 || c.Items[0].Path != "sites.idc1.weight" ||
		!strings.Contains(c.Items[0].Note, "an override (8, by alice) still wins") {
		t.Errorf("reload entry %+v, want sites.idc1.weight with a note that alice's override (8) still wins", c)
	}
	warn := e.logs.FilterMessage("the config changed a site's weight, but an operator's override still wins").All()
	if len(warn) != 1 {
		t.Fatalf("%d warning lines, want 1", len(warn))
	}
	f := warn[0].ContextMap()
	if f["site"] != "idc1" || f["configured_before"] != "5" || f["configured_after"] != "6" || f["in_effect"] != "8" || f["override_by"] != "alice" {
		t.Errorf("warning fields %v", f)
	}
	// Cleared, the file's weight applies.
	if err := e.r.ClearWeight("idc1", "alice"); err != nil {
		t.Fatal(err)
	}
	if s := e.site(t, "idc1"); s.Weight != 6 {
		t.Errorf("idc1 after clearing: %g, want the file's 6", s.Weight)
	}
}

// At start, a saved override whose ramp is half over is applied half way; a drain and an
// override of sites the config no longer has are dropped from the file, with an audit entry
// and a warning each.
func TestStartRestoresRampsWhereTheyAre(t *testing.T) {
	a, b := nameBackend(t, "idc1"), nameBackend(t, "idc2")
	dir := t.TempDir()
	state := filepath.Join(dir, "state.json")
	now := time.Now().UTC()
	saved := fmt.Sprintf(`{"version": 1, "next_id": 5, "trail": [], "state": {
  "overrides": {
    "idc1": {"weight": 9, "from": 5, "start": %q, "end": %q, "by": "alice"},
    "gone": {"weight": 1, "from": 1, "start": %q, "end": %q, "by": "bob"}},
  "drains": {"idc2": {"by": "carol", "since": %q}, "old": {"by": "dave", "since": %q}}}}`,
		now.Add(-30*time.Minute).Format(time.RFC3339Nano), now.Add(30*time.Minute).Format(time.RFC3339Nano),
		now.Format(time.RFC3339Nano), now.Format(time.RFC3339Nano), now.Format(time.RFC3339Nano), now.Format(time.RFC3339Nano))
	if err := os.WriteFile(state, []byte(saved), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startReloader(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
state: {file: %q}
sites:
  - {name: idc1, weight: 5, backends: [%q]}
  - {name: idc2, weight: 3, backends: [%q]}
  - {name: idc3, weight: 2, backends: [%q]}
`, state, a.URL, b.URL, b.URL), runtime.ReloaderOptions{})
	idc1, idc2 := e.site(t, "idc1"), e.site(t, "idc2")
	// Half of a 1h ramp from 5 to 9: 7, give or take the moments since.
	if idc1.Weight < 6.9 || idc1.Weight > 7.1 || idc1.Override == nil || idc1.Override.By != "alice" || idc1.Override.Until == nil {
		t.Errorf("idc1 at start: weight %g override %+v; want about 7, half way along alice's ramp", idc1.Weight, idc1.Override)
	}
	if !idc2.Drained {
		t.Error("idc2's saved drain was not applied")
	}
	st := e.r.State()
	if !st.Durable {
		t.Error("durable false with a state file")
	}
	dropped := map[string]bool{}
	for _, c := range st.Changes {
		if c.Who == "start" && strings.HasPrefix(c.After, "dropped: ") {
			dropped[c.Site] = true
		}
	}
	if !dropped["gone"] || !dropped["old"] || len(dropped) != 2 || st.Changes[0].ID != 6 {
		t.Errorf("changes at start %+v; want the override of gone and the drain of old dropped, numbered on from 5", st.Changes)
	}
	if n := len(e.logs.FilterMessageSnippet("dropped: the config has no such site").All()); n != 2 {
		t.Errorf("%d warnings for dropped state, want 2", n)
	}
	data, _ := os.ReadFile(state)
	if strings.Contains(string(data), `"gone": {`) || strings.Contains(string(data), `"old": {`) || !strings.Contains(string(data), `"idc2": {`) {
		t.Errorf("state file after start:\n%s\nwant gone and old dropped, idc2 kept", data)
	}
}

// A state file edited by hand with a value no API change could make is refused at start,
// naming the value; one that drains every site starts (it is what the operators asked for)
// but says that nothing can be served.
func TestStartChecksRestoredState(t *testing.T) {
	a := nameBackend(t, "idc1")
	conf := func(state string) string {
		return fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
state: {file: %q}
sites:
  - {name: idc1, weight: 5, backends: [%q]}
  - {name: idc2, weight: 3, backends: [%q]}
`, state, a.URL, a.URL)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"version": 1, "next_id": 1, "trail": [], "state": {"overrides": {"idc1": {"weight": -3, "from": 5, "start": "2026-12-07T10:00:00Z", "end": "2026-12-07T10:00:00Z", "by": "x"}}, "drains": {}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(path, []byte(conf(bad)), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runtime.NewReloader(runtime.ReloaderOptions{Path: path})
	err := r.Start(t.Context())
	r.Close()
	if err == nil || !strings.Contains(err.Error(), "override of idc1: weight -3 is not between 0 and 1000") {
		t.Errorf("Start with a weight of -3 in the state file: %v", err)
	}

	all := filepath.Join(dir, "all.json")
	if err := os.WriteFile(all, []byte(`{"version": 1, "next_id": 1, "trail": [], "state": {"overrides": {}, "drains": {"idc1": {"by": "x", "since": "2026-12-07T10:00:00Z"}, "idc2": {"by": "y", "since": "2026-12-07T10:00:00Z"}}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startReloader(t, conf(all), runtime.ReloaderOptions{})
	if n := len(e.logs.FilterMessageSnippet("every site is drained or at weight 0").All()); n != 1 {
		t.Errorf("%d error lines about no site left to serve, want 1", n)
	}
}
