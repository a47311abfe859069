package runtime_test

// Operator state at the Reloader, from the review of issue 14: restarts of a persisted ramp, the file watch's
// refusals, a change the store cannot keep, hostile values in audit entries.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy/proxytest"
	"github.com/spillway/spillway/proxy/runtime"
	"github.com/spillway/spillway/proxy/store"
)

func twoSitesConf(a, b string, w int, extra string) string {
	return fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
%ssites:
  - {name: idc1, weight: %d, backends: [%q]}
  - {name: idc2, weight: 3, backends: [%q]}
`, extra, w, a, b)
}

// BUG: a persisted weight's override ("persisted": true) is dropped only by its ramp
// goroutine when the ramp ends (rampStep, proxy/controls.go:256). Restored at start after its
// end — the proxy was stopped during the ramp, or the clearing commit failed — no ramp
// goroutine runs (setOverride starts one only while now < End), so the override stays for
// ever: the file already holds the weight, yet every later edit of the site's weight in the
// file is hidden ("an override still wins") until someone clears an override nobody set.
// Same after SetWeight(persist, ramp 0) whose reload was refused (controls.go:159).
// Fix: in restore (and setOverride), treat a Persisted override whose ramp is over as done:
// drop it (with a clear_weight entry) instead of putting it in effect.
func TestPersistedOverrideRestoredAfterItsRampEnds(t *testing.T) {
	a, b := proxytest.NameBackend(t, "idc1"), proxytest.NameBackend(t, "idc2")
	dir := t.TempDir()
	state := filepath.Join(dir, "state.json")
	now := time.Now().UTC()
	// PUT weight 9 ramp 30m persist=true wrote 9 to the file; the proxy stopped during the
	// ramp and started again an hour later.
	saved := fmt.Sprintf(`{"version": 1, "next_id": 2, "trail": [], "state": {"drains": {}, "overrides": {
  "idc1": {"weight": 9, "from": 5, "start": %q, "end": %q, "by": "alice", "persisted": true}}}}`,
		now.Add(-90*time.Minute).Format(time.RFC3339Nano), now.Add(-60*time.Minute).Format(time.RFC3339Nano))
	if err := os.WriteFile(state, []byte(saved), 0o600); err != nil {
		t.Fatal(err)
	}
	extra := fmt.Sprintf("state: {file: %q}\n", state)
	e := proxytest.StartReloader(t, twoSitesConf(a.URL, b.URL, 9, extra), runtime.ReloaderOptions{})
	if s := e.Site(t, "idc1"); s.Override != nil {
		t.Errorf("idc1 at start has override %+v: a persisted ramp that is over should be dropped (the file has the weight)", s.Override)
	}
	// An operator edits the file's weight, and reloads.
	e.Write(t, twoSitesConf(a.URL, b.URL, 4, extra))
	if err := e.R.Reload("sighup", true); err != nil {
		t.Fatal(err)
	}
	if s := e.Site(t, "idc1"); s.Weight != 4 {
		t.Errorf("idc1 after the file set weight 4: in effect %g (override %+v); the finished persisted ramp still hides the file", s.Weight, s.Override)
	}
}

// BUG: a file-watch reload of a config file that cannot be read (deleted, replaced by a
// directory, permission denied) returns nil, logs nothing and audits nothing. load returns a
// zero sum on a read error, and reloadLocked's dedupe (`err != nil && sum == r.refusedSum`,
// proxy/runtime/reload.go:263) matches the zero value refusedSum starts with: the first such refusal
// is taken for one already reported. The issue asks for one log line per refused reload.
// Fix: dedupe only parse refusals (keep a "refused already" flag, or hash the error text),
// never a read error with an unset refusedSum.
func TestUnreadableConfigOnFileWatchIsReported(t *testing.T) {
	a, b := proxytest.NameBackend(t, "idc1"), proxytest.NameBackend(t, "idc2")
	e := proxytest.StartReloader(t, twoSitesConf(a.URL, b.URL, 5, ""), runtime.ReloaderOptions{})
	if err := os.Remove(e.Path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(e.Path, 0o700); err != nil { // a botched deploy: a directory in its place
		t.Fatal(err)
	}
	err := e.R.Reload("file", false)
	if err == nil {
		t.Error(`Reload("file") of a config path that is a directory returned nil`)
	}
	if n := len(e.Logs.FilterMessage("config refused; the running config stays").All()); n != 1 {
		t.Errorf("%d log lines for the refused reload, want 1", n)
	}
	if _, failed := e.R.Reloads(); failed != 1 {
		t.Errorf("failed reloads %d, want 1", failed)
	}
	if ch := e.R.State().Changes; len(ch) == 0 || ch[0].Action != "reload" || ch[0].Result != "refused" {
		t.Errorf("trail %+v, want the refused reload first", ch)
	}
	// Seen a second time by the watch: deduplicated (one line per refusal).
	e.R.Reload("file", false)
	if n := len(e.Logs.FilterMessage("config refused; the running config stays").All()); n > 1 {
		t.Errorf("%d log lines after the watch saw the same refusal twice, want 1", n)
	}
}

// BUG: SetWeight with persist writes the config file (persistWeight, controls.go:137) before
// committing to the store (controls.go:147). When the store cannot take the change, the
// caller gets ErrUnavailable ("not applied", 503) — but the file already holds the new
// weight, and the next reload (the file watch sees the write at once) applies it: a change
// refused as "not applied" takes effect, without an audit entry. Fix: commit first (as an
// override with Persisted), then write the file; or restore the file's old bytes when the
// commit fails.
func TestPersistWithFailingStoreLeavesFileAlone(t *testing.T) {
	a, b := proxytest.NameBackend(t, "idc1"), proxytest.NameBackend(t, "idc2")
	sdir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(sdir, 0o700); err != nil {
		t.Fatal(err)
	}
	e := proxytest.StartReloader(t, twoSitesConf(a.URL, b.URL, 5, fmt.Sprintf("state: {file: %q}\n", filepath.Join(sdir, "state.json"))), runtime.ReloaderOptions{})
	before, _ := os.ReadFile(e.Path)
	if err := os.RemoveAll(sdir); err != nil { // the disk under the state file fails
		t.Fatal(err)
	}
	err := e.R.SetWeight("idc1", 8, 0, "alice", true)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("SetWeight persist with the store gone: %v, want ErrUnavailable", err)
	}
	after, _ := os.ReadFile(e.Path)
	if string(after) != string(before) {
		t.Errorf("the change was refused as not applied, but the config file was rewritten:\n%s", after)
	}
	// What the file watch does next.
	e.R.Reload("file", false)
	if s := e.Site(t, "idc1"); s.Weight != 5 {
		t.Errorf("idc1 weight %g after the file watch's reload, want 5: the refused change took effect", s.Weight)
	}
}

// BUG: the site of a refused attempt is kept as sent: a request for a site named by 64 KiB of
// path lands in the audit trail (and is rewritten into the state file on every later
// change, in every one of the up to state.keep entries) with all of it, while Reason is cut to
// 2000 bytes (controls.go:61). Fix: cut Site (and Who) with cutText as Reason is, in refused
// (controls.go:60) and in Refused.
func TestRefusedAttemptSiteIsBounded(t *testing.T) {
	a, b := proxytest.NameBackend(t, "idc1"), proxytest.NameBackend(t, "idc2")
	state := filepath.Join(t.TempDir(), "state.json")
	e := proxytest.StartReloader(t, twoSitesConf(a.URL, b.URL, 5, fmt.Sprintf("state: {file: %q}\n", state)), runtime.ReloaderOptions{})
	huge := strings.Repeat("x\n\x1b[31m", 64<<10/8)
	if err := e.R.SetDrained(huge, true, "alice"); !errors.Is(err, runtime.ErrNoSite) {
		t.Fatalf("drain of an unknown site: %v", err)
	}
	e.R.Refused("alice", "weight", huge, strings.Repeat("r", 1<<20))
	ch := e.R.State().Changes
	if len(ch) < 2 {
		t.Fatalf("trail %d entries, want the 2 refused attempts", len(ch))
	}
	for _, c := range ch[:2] {
		if c.Result != "refused" {
			t.Errorf("entry %d result %q, want refused", c.ID, c.Result)
		}
		if len(c.Site) > 2100 || len(c.Reason) > 2100 {
			t.Errorf("entry %d keeps a site of %d bytes and a reason of %d: want both cut like the reason (2000)", c.ID, len(c.Site), len(c.Reason))
		}
	}
	if fi, err := os.Stat(state); err != nil || fi.Size() > 32<<10 {
		t.Errorf("state file after two refused attempts: %v bytes (%v), want a few KiB", fi.Size(), err)
	}
}

// Pins (passes): a reload that removes a site drops its drain and override from the store,
// and re-adding the site does not bring them back from anywhere — in memory, in the file,
// or after a restart.
func TestSiteRemovedThenReAdded(t *testing.T) {
	a, b := proxytest.NameBackend(t, "idc1"), proxytest.NameBackend(t, "idc2")
	state := filepath.Join(t.TempDir(), "state.json")
	extra := fmt.Sprintf("state: {file: %q}\n", state)
	e := proxytest.StartReloader(t, twoSitesConf(a.URL, b.URL, 5, extra), runtime.ReloaderOptions{})
	if err := e.R.SetDrained("idc2", true, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := e.R.SetWeight("idc2", 7, time.Hour, "alice", false); err != nil {
		t.Fatal(err)
	}
	e.Write(t, fmt.Sprintf("listen: {http: \"127.0.0.1:0\"}\n%ssites:\n  - {name: idc1, weight: 5, backends: [%q]}\n", extra, a.URL))
	if err := e.R.Reload("sighup", true); err != nil {
		t.Fatal(err)
	}
	e.Write(t, twoSitesConf(a.URL, b.URL, 5, extra))
	if err := e.R.Reload("sighup", true); err != nil {
		t.Fatal(err)
	}
	if s := e.Site(t, "idc2"); s.Drained || s.Override != nil || s.Weight != 3 {
		t.Errorf("idc2 re-added: drained %v override %+v weight %g; want serving at its configured 3", s.Drained, s.Override, s.Weight)
	}
	data, _ := os.ReadFile(state)
	if strings.Contains(string(data), `"idc2": {`) {
		t.Errorf("state file still holds idc2's drain or override:\n%s", data)
	}
}

// Pins (passes): a dry run applies nothing and records nothing: same generation, same
// trail, the file watch's next reload still sees the change.
func TestDryRunHasNoSideEffects(t *testing.T) {
	a, b := proxytest.NameBackend(t, "idc1"), proxytest.NameBackend(t, "idc2")
	e := proxytest.StartReloader(t, twoSitesConf(a.URL, b.URL, 5, ""), runtime.ReloaderOptions{})
	e.Write(t, twoSitesConf(a.URL, b.URL, 6, ""))
	p, err := e.R.DryRun()
	if err != nil {
		t.Fatal(err)
	}
	if p.Unchanged || len(p.Changes) != 1 || p.Changes[0].Path != "sites.idc1.weight" {
		t.Errorf("preview %+v, want sites.idc1.weight 5 → 6", p)
	}
	st := e.R.State()
	if st.Generation != 1 || len(st.Changes) != 0 || e.Site(t, "idc1").Weight != 5 {
		t.Errorf("after a dry run: generation %d, %d trail entries, idc1 %g; want 1, 0, 5", st.Generation, len(st.Changes), e.Site(t, "idc1").Weight)
	}
	if err := e.R.Reload("file", false); err != nil {
		t.Fatal(err)
	}
	if e.Site(t, "idc1").Weight != 6 {
		t.Error("the reload after a dry run did not apply the file")
	}
}

// closingStore is a store that records its Close.
type closingStore struct {
	*store.Memory
	closed atomic.Bool
}

func (s *closingStore) Close() error { s.closed.Store(true); return nil }

// BUG: Reloader.Close never closes the runtime state's store (proxy/runtime/reload.go:376-390 closes
// the generation, the outliers and the access log; r.store.Close is only called on Start's
// failure paths). The Store contract says Close releases what the store holds: a fleet's
// etcd client (connections, lease keep-alive goroutines) would outlive the Reloader.
// Fix: r.store.Close() at the end of Close (after r.wg.Wait, so no ramp or watch commits
// after it).
func TestCloseClosesTheStore(t *testing.T) {
	a, b := proxytest.NameBackend(t, "idc1"), proxytest.NameBackend(t, "idc2")
	path := filepath.Join(t.TempDir(), "spillway.yaml")
	if err := os.WriteFile(path, []byte(twoSitesConf(a.URL, b.URL, 5, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	st := &closingStore{Memory: store.NewMemory(0)}
	r := runtime.NewReloader(runtime.ReloaderOptions{Path: path, OpenStore: func(*configs.Config) (store.Store, error) { return st, nil }})
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	cancel()
	r.Close()
	if !st.closed.Load() {
		t.Error("Reloader.Close left the runtime state's store open")
	}
}

// BUG: a change that was applied is written to the audit log only when the store took it
// (Reloader.commit logs to r.audit after a successful Commit, proxy/controls.go:47). A reload
// is applied whether or not the store records it (reloadLocked → record), so with the state
// file's disk failing, an applied reload — new sites, backends, weights — leaves no line in
// the audit log at all, only an error line in the operational log. Fix: in record (entries
// that stand whatever the store says), write the audit line even when the commit fails
// (marked "not stored").
func TestAppliedReloadIsAuditedWhenStoreFails(t *testing.T) {
	a, b := proxytest.NameBackend(t, "idc1"), proxytest.NameBackend(t, "idc2")
	sdir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(sdir, 0o700); err != nil {
		t.Fatal(err)
	}
	extra := fmt.Sprintf("state: {file: %q}\n", filepath.Join(sdir, "state.json"))
	e := proxytest.StartReloader(t, twoSitesConf(a.URL, b.URL, 5, extra), runtime.ReloaderOptions{})
	if err := os.RemoveAll(sdir); err != nil {
		t.Fatal(err)
	}
	e.Write(t, twoSitesConf(a.URL, b.URL, 7, extra))
	if err := e.R.Reload("sighup", true); err != nil {
		t.Fatal(err)
	}
	if w := e.Site(t, "idc1").Weight; w != 7 {
		t.Fatalf("idc1 %g after the reload, want 7 (applied)", w)
	}
	found := false
	for _, l := range e.Audit.All() {
		if l.ContextMap()["action"] == "reload" {
			found = true
		}
	}
	if !found {
		t.Error("an applied reload (idc1 5 → 7) has no audit log line because the state file could not be written")
	}
}

// BUG: the file watch's dedupe of a refused file ("seen twice by the watch") remembers the
// refused content for ever: refusedSum is not reset when a later file loads
// (proxy/runtime/reload.go:263 and :282). Save a bad edit (refused, logged), fix it (loaded), make the
// same bad edit again (an undo/redo, a `git checkout` of the bad revision): the watch drops
// the second refusal silently — Reload returns nil, no log line, no audit entry, no failure
// counted — and the operator believes the file is running. Fix: clear refusedSum when a
// config loads.
func TestSameBadEditAfterAGoodOneIsReportedAgain(t *testing.T) {
	a, b := proxytest.NameBackend(t, "idc1"), proxytest.NameBackend(t, "idc2")
	good := twoSitesConf(a.URL, b.URL, 5, "")
	bad := twoSitesConf(a.URL, b.URL, -1, "")
	e := proxytest.StartReloader(t, good, runtime.ReloaderOptions{})
	e.Write(t, bad)
	if err := e.R.Reload("file", false); err == nil {
		t.Fatal("a weight of -1 loaded")
	}
	e.Write(t, twoSitesConf(a.URL, b.URL, 6, ""))
	if err := e.R.Reload("file", false); err != nil {
		t.Fatal(err)
	}
	e.Write(t, bad)
	if err := e.R.Reload("file", false); err == nil {
		t.Error("the same bad edit, made again after a good one, was ignored by the file watch (Reload returned nil)")
	}
	if n := len(e.Logs.FilterMessage("config refused; the running config stays").All()); n != 2 {
		t.Errorf("%d refusal log lines, want 2 (one per refused save)", n)
	}
	if _, failed := e.R.Reloads(); failed != 2 {
		t.Errorf("failed reloads %d, want 2", failed)
	}
}
