package discovery_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spillway/spillway/balancer/discovery"
)

// replace writes content to path the way editors and deploy tools do: a temporary file in
// the same directory, renamed over path.
func replace(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFileWatch drives the targets file through the watch alone: Interval is an hour, so
// every change seen is one the watch saw.
func TestFileWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "targets.txt")
	write(t, path, "127.0.0.2:8080\n")
	d, u, l := newDiscoverer(t, discovery.Options{File: path, Interval: time.Hour})
	run(t, d, u)
	u.until(t, "127.0.0.2:8080")

	t.Log("replaced by a rename")
	replace(t, path, "127.0.0.2:8080\n127.0.0.3:8080\n")
	u.until(t, "127.0.0.2:8080", "127.0.0.3:8080")

	t.Log("written in place")
	write(t, path, "127.0.0.3:8080\n")
	u.until(t, "127.0.0.3:8080")

	t.Log("invalid lines skipped, the rest used")
	badMsg := "invalid line in the targets file, skipped"
	n0 := l.count(badMsg)
	replace(t, path, `# the AWS pool
127.0.0.2:8080
http://127.0.0.3:8081   # a trailing comment
https://LocalHost
not a target
127.0.0.4
[::1]:8443

127.0.0.5:99999
ftp://127.0.0.6:21
127.0.0.2:8080
`)
	u.until(t, "127.0.0.2:8080", "127.0.0.3:8081", "localhost:443", "[::1]:8443")
	bad := l.until(t, badMsg, n0+4)
	var at []string
	for _, e := range bad[n0:] {
		at = append(at, fmt.Sprint(e.ContextMap()["at"]))
	}
	want := []string{path + ":5", path + ":6", path + ":9", path + ":10"}
	if !slices.Equal(at, want) {
		t.Errorf("invalid lines logged at %q, want %q", at, want)
	}
	if n := d.Failures(); n != 0 {
		t.Errorf("Failures() = %d with invalid lines, want 0: they are skipped, not failures", n)
	}

	t.Log("the same members in another order: no Update")
	replace(t, path, "[::1]:8443\nlocalhost:443\nhttp://127.0.0.3:8081\n127.0.0.2:8080\n")
	if err := d.Resolve(t.Context()); err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	u.none(t)

	good := []string{"127.0.0.2:8080", "127.0.0.3:8081", "[::1]:8443", "localhost:443"}
	slices.Sort(good)
	t.Log("empty file: the last set stays")
	n := l.count(failedMsg)
	replace(t, path, "# nothing here\n\n")
	l.until(t, failedMsg, n+1)
	if got := d.Members(); !slices.Equal(got, good) {
		t.Errorf("Members() = %q after an empty file, want the last good %q", got, good)
	}

	t.Log("file removed: the last set stays")
	n = l.count(failedMsg)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	l.until(t, failedMsg, n+1)
	if got := d.Members(); !slices.Equal(got, good) {
		t.Errorf("Members() = %q after the file went, want the last good %q", got, good)
	}
	u.none(t)
	if got := d.Failures(); got < 2 {
		t.Errorf("Failures() = %d, want >= 2", got)
	}

	t.Log("file back")
	replace(t, path, "127.0.0.9:8080\n")
	u.until(t, "127.0.0.9:8080")
}

// TestFileConfigMapSwap: a Kubernetes ConfigMap volume holds each file as a symlink through
// "..data", a symlink to a timestamped directory; an update writes a new directory and
// renames a new ..data over the old one. The file itself sees no event.
func TestFileConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	generation := 0
	publish := func(content string) {
		t.Helper()
		generation++
		ts := fmt.Sprintf("..2026_11_25_12_00_0%d.%d", generation, 1000+generation)
		if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, ts, "targets.txt"), content)
		old, _ := os.Readlink(filepath.Join(dir, "..data"))
		if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		if old != "" {
			if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish("127.0.0.2:8080\n")
	path := filepath.Join(dir, "targets.txt")
	if err := os.Symlink(filepath.Join("..data", "targets.txt"), path); err != nil {
		t.Fatal(err)
	}
	d, u, _ := newDiscoverer(t, discovery.Options{File: path, Interval: time.Hour})
	run(t, d, u)
	u.until(t, "127.0.0.2:8080")

	publish("127.0.0.2:8080\n127.0.0.3:8080\n")
	u.until(t, "127.0.0.2:8080", "127.0.0.3:8080")
	publish("127.0.0.3:8080\n")
	u.until(t, "127.0.0.3:8080")
}

// TestFileAppearsLater: a file missing at start is a failure, not an empty pool, and the
// watch picks it up once it is written.
func TestFileAppearsLater(t *testing.T) {
	path := filepath.Join(t.TempDir(), "targets.txt")
	d, u, _ := newDiscoverer(t, discovery.Options{File: path, Interval: time.Hour})
	if err := d.Resolve(t.Context()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Resolve of a missing file: %v, want os.ErrNotExist", err)
	}
	if d.Members() != nil || d.Failures() != 1 {
		t.Errorf("Members() = %q, Failures() = %d; want none and 1", d.Members(), d.Failures())
	}
	run(t, d, u)
	replace(t, path, "127.0.0.2:8080\n")
	u.until(t, "127.0.0.2:8080")

	m := d.Members()
	m[0] = "changed"
	if got := d.Members(); got[0] != "127.0.0.2:8080" {
		t.Errorf("Members() shares its slice: %q", got)
	}
}

// TestFilePeriodicReread: the periodic re-read finds what the watch cannot see, here a
// change to the file a symlink points to in another directory.
func TestFilePeriodicReread(t *testing.T) {
	root := t.TempDir()
	other, watched := filepath.Join(root, "other"), filepath.Join(root, "watched")
	for _, dir := range []string{other, watched} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	real := filepath.Join(other, "real.txt")
	write(t, real, "127.0.0.2:8080\n")
	path := filepath.Join(watched, "targets.txt")
	if err := os.Symlink(real, path); err != nil {
		t.Fatal(err)
	}
	d, u, _ := newDiscoverer(t, discovery.Options{File: path, Interval: interval})
	run(t, d, u)
	u.until(t, "127.0.0.2:8080")
	replace(t, real, "127.0.0.3:8080\n")
	u.until(t, "127.0.0.3:8080")
}

// TestFileNoWatch: a directory that cannot be watched (it does not exist yet) is logged, and
// the periodic re-read takes over.
func TestFileNoWatch(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "later")
	path := filepath.Join(dir, "targets.txt")
	d, u, l := newDiscoverer(t, discovery.Options{File: path, Interval: interval})
	run(t, d, u)
	l.until(t, "cannot watch the targets file, re-reading it every interval only", 1)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	replace(t, path, "127.0.0.2:8080\n")
	u.until(t, "127.0.0.2:8080")
}
