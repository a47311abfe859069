package store_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spillway/spillway/proxy/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

func change(action, site string) store.Change {
	return store.Change{Time: t0, Who: "alice", Action: action, Site: site, Before: "5", After: "7"}
}

// A state file keeps overrides (with their ramps' start and end), drains and the trail
// across an open and a reopen, and assigns IDs that go on where they stopped.
func TestFileKeepsStateAcrossReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.json")
	f, err := store.OpenFile(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("OpenFile did not create the file: %v", err)
	}
	o := store.Override{Weight: 7, From: 5, Start: t0, End: t0.Add(30 * time.Second), By: "alice"}
	if c, err := f.Commit(ctx, change("weight", "idc1"), store.Edit{Site: "idc1", Override: &o}); err != nil || c.ID != 1 {
		t.Fatalf("commit: %+v, %v; want ID 1", c, err)
	}
	d := store.Drain{By: "bob", Since: t0}
	if c, err := f.Commit(ctx, change("drain", "aws"), store.Edit{Site: "aws", Drain: &d}); err != nil || c.ID != 2 {
		t.Fatalf("commit: %+v, %v; want ID 2", c, err)
	}
	f.Close()

	g, err := store.OpenFile(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, err := g.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Overrides["idc1"]; !got.Start.Equal(o.Start) || !got.End.Equal(o.End) || got.Weight != 7 || got.From != 5 || got.By != "alice" {
		t.Errorf("override after reopen %+v, want %+v", got, o)
	}
	if got := st.Drains["aws"]; got.By != "bob" || !got.Since.Equal(t0) {
		t.Errorf("drain after reopen %+v", got)
	}
	if w := st.Overrides["idc1"].At(t0.Add(15 * time.Second)); w != 6 {
		t.Errorf("the ramp halfway: %g, want 6", w)
	}
	c, err := g.Commit(ctx, change("undrain", "aws"), store.Edit{Site: "aws", Undrain: true})
	if err != nil || c.ID != 3 {
		t.Fatalf("commit after reopen: %+v, %v; want ID 3", c, err)
	}
	page, total, _ := g.Changes(ctx, 0, 10)
	if total != 3 || len(page) != 3 || page[0].Action != "undrain" || page[2].Action != "weight" {
		t.Errorf("trail %+v (total %d), want undrain, drain, weight", page, total)
	}
	if st, _ := g.Load(ctx); len(st.Drains) != 0 || len(st.Overrides) != 1 {
		t.Errorf("state after undrain %+v", st)
	}
	// Nothing but the state file and its lock is left in its directory.
	var names []string
	ents, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if fmt.Sprint(names) != "[state.json state.json.lock]" {
		t.Errorf("files in the state file's directory: %v, want the file and its lock", names)
	}
}

// Two processes (here two opens) must not share a state file: each would overwrite the
// other's changes. The second is refused until the first closes.
func TestFileIsLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	f, err := store.OpenFile(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.OpenFile(path, 0); err == nil || !strings.Contains(err.Error(), "in use by another Spillway") {
		t.Fatalf("second open: %v, want refused as in use", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g, err := store.OpenFile(path, 0)
	if err != nil {
		t.Fatalf("open after the first closed: %v", err)
	}
	g.Close()
}

// A state file that cannot be understood stops the open with a message naming the file and
// the fault, and is left as it was: drains are never silently dropped.
func TestFileRefusesCorruptFile(t *testing.T) {
	for _, tc := range []struct{ name, content, want string }{
		{"truncated", `{"version": 1, "state": {"overrides": {}, "drains": {"idc1": {"by": "bob"`, "corrupt"},
		{"not JSON", "drains: [idc1]\n", "corrupt"},
		{"empty", "", "corrupt"},
		{"unknown field", `{"version": 1, "state": {}, "next_id": 1, "trail": [], "extra": 1}`, "corrupt"},
		{"two objects", `{"version": 1, "state": {}, "next_id": 1, "trail": []} {}`, "corrupt"},
		{"newer format", `{"version": 2, "state": {}, "next_id": 1, "trail": []}`, "format version 2"},
		{"no version", `{"state": {}, "next_id": 1, "trail": []}`, `corrupt (no "version")`},
		{"a drain that is a number", `{"version": 1, "state": {"drains": {"idc1": 5}}, "next_id": 1, "trail": []}`, "corrupt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := store.OpenFile(path, 0)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("OpenFile: %v; want an error naming %s and %q", err, path, tc.want)
			}
			if err2 := store.CheckFile(path); err2 == nil || err2.Error() != err.Error() {
				t.Errorf("CheckFile: %v; want the same error as OpenFile", err2)
			}
			if got, _ := os.ReadFile(path); string(got) != tc.content {
				t.Errorf("the file was changed: %q", got)
			}
		})
	}
	if err := store.CheckFile(filepath.Join(t.TempDir(), "missing.json")); err != nil {
		t.Errorf("CheckFile of a missing file: %v, want nil (OpenFile creates it)", err)
	}
}

// A commit whose write fails changes nothing, in memory or on disk, and says why.
func TestFileCommitFailureChangesNothing(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "state.json")
	f, err := store.OpenFile(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	d := store.Drain{By: "bob", Since: t0}
	if _, err := f.Commit(ctx, change("drain", "idc1"), store.Edit{Site: "idc1", Drain: &d}); err != nil {
		t.Fatal(err)
	}
	// The directory goes away (a lost mount): no temporary file can be made beside it.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Commit(ctx, change("undrain", "idc1"), store.Edit{Site: "idc1", Undrain: true}); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("commit into a missing directory: %v, want an error naming %s", err, path)
	}
	st, _ := f.Load(ctx)
	if _, ok := st.Drains["idc1"]; !ok {
		t.Errorf("a failed undrain was applied in memory: %+v", st)
	}
	if page, total, _ := f.Changes(ctx, 0, 10); total != 1 || page[0].Action != "drain" {
		t.Errorf("trail after a failed commit: %+v", page)
	}
}

// The trail pages newest first by ID, and keeps only the newest entries.
func TestTrailPagesAndBound(t *testing.T) {
	ctx := context.Background()
	for _, s := range []struct {
		name string
		open func(t *testing.T) store.Store
	}{
		{"memory", func(*testing.T) store.Store { return store.NewMemory(5) }},
		{"file", func(t *testing.T) store.Store {
			f, err := store.OpenFile(filepath.Join(t.TempDir(), "s.json"), 5)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}},
	} {
		t.Run(s.name, func(t *testing.T) {
			st := s.open(t)
			defer st.Close()
			for range 8 {
				if _, err := st.Commit(ctx, change("reload", "")); err != nil {
					t.Fatal(err)
				}
			}
			ids := func(before uint64, limit int) []uint64 {
				page, total, err := st.Changes(ctx, before, limit)
				if err != nil || total != 5 {
					t.Fatalf("Changes: total %d, %v; want 5 kept", total, err)
				}
				var out []uint64
				for _, c := range page {
					out = append(out, c.ID)
				}
				return out
			}
			for _, tc := range []struct {
				before uint64
				limit  int
				want   string
			}{
				{0, 2, "[8 7]"}, {7, 2, "[6 5]"}, {5, 2, "[4]"}, {4, 10, "[]"}, {0, 100, "[8 7 6 5 4]"},
				{100, 1, "[8]"}, {1, 5, "[]"}, {0, 0, "[]"}, {0, -1, "[]"},
			} {
				if got := ids(tc.before, tc.limit); fmt.Sprint(got) != tc.want {
					t.Errorf("before %d limit %d: %v, want %s", tc.before, tc.limit, got, tc.want)
				}
			}
			if st.Durable() != (s.name == "file") {
				t.Errorf("Durable() = %v", st.Durable())
			}
		})
	}
}

// An override's weight moves linearly from From to Weight between Start and End, and is
// Weight at once without a ramp.
func TestOverrideAt(t *testing.T) {
	o := store.Override{Weight: 10, From: 2, Start: t0, End: t0.Add(8 * time.Second)}
	for _, tc := range []struct {
		at   time.Duration
		want float64
	}{{-time.Second, 2}, {0, 2}, {2 * time.Second, 4}, {8 * time.Second, 10}, {time.Hour, 10}} {
		if got := o.At(t0.Add(tc.at)); got != tc.want {
			t.Errorf("at %s: %g, want %g", tc.at, got, tc.want)
		}
	}
	if got := (store.Override{Weight: 3, From: 9, Start: t0, End: t0}).At(t0); got != 3 {
		t.Errorf("no ramp: %g, want 3", got)
	}
}
