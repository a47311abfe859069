package discovery_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spillway/spillway/balancer/discovery"
)

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestFailureLogIsPaced: a lasting discovery failure is logged once at once, then at most
// every five minutes with the count since the last line; every failure is counted all the
// same; the recovery is logged once with how long it failed.
func TestFailureLogIsPaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "targets.txt") // missing: every read fails
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	d, u, l := newDiscoverer(t, discovery.Options{File: path, Interval: time.Hour, Now: clock.Now})
	const failMsg = "discovery failed, keeping the last members"
	for range 30 { // 30 failures, 10 s apart: 5 minutes
		if err := d.Resolve(context.Background()); err == nil {
			t.Fatal("Resolve of a missing file succeeded")
		}
		clock.add(10 * time.Second)
	}
	warnings := func() []observer.LoggedEntry {
		return l.all.FilterMessage(failMsg).Filter(func(e observer.LoggedEntry) bool { return e.Level == zapcore.WarnLevel }).All()
	}
	if n := len(warnings()); n != 1 {
		t.Errorf("%d failure warnings for 30 failures within 5 minutes, want 1", n)
	}
	if n := l.count(failMsg); n != 30 {
		t.Errorf("%d failure lines in all, want 30 (the paced ones at debug level)", n)
	}
	d.Resolve(context.Background()) // 5 minutes after the first line: the second
	lines := warnings()
	if len(lines) != 2 || lines[1].ContextMap()["failures_since_last_line"] != uint64(30) {
		t.Errorf("failure warnings %v, want a second one counting 30 failures", lines)
	}
	if n := d.Failures(); n != 31 {
		t.Errorf("Failures = %d, want 31 (each counted)", n)
	}
	write(t, path, "127.0.0.2:8080\n")
	if err := d.Resolve(context.Background()); err != nil {
		t.Fatal(err)
	}
	u.until(t, "127.0.0.2:8080")
	if n := l.count("discovery works again"); n != 1 {
		t.Errorf("%d recovery lines, want 1", n)
	}
}

// TestKnownMembersLogNoChange: a Discoverer that starts from the set the previous one found
// (a config reload) still hands its first set to Update, but logs "members changed" only
// for what differs.
func TestKnownMembersLogNoChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "targets.txt")
	write(t, path, "127.0.0.2:8080\n127.0.0.3:8080\n")
	d, u, l := newDiscoverer(t, discovery.Options{File: path, Interval: time.Hour,
		Known: []string{"127.0.0.3:8080", "127.0.0.2:8080"}})
	if err := d.Resolve(context.Background()); err != nil {
		t.Fatal(err)
	}
	u.until(t, "127.0.0.2:8080", "127.0.0.3:8080")
	if n := l.count("members changed"); n != 0 {
		t.Errorf("%d 'members changed' lines for the set already known, want 0", n)
	}
	write(t, path, "127.0.0.2:8080\n127.0.0.4:8080\n")
	if err := d.Resolve(context.Background()); err != nil {
		t.Fatal(err)
	}
	u.until(t, "127.0.0.2:8080", "127.0.0.4:8080")
	lines := l.all.FilterMessage("members changed").All()
	if len(lines) != 1 {
		t.Fatalf("%d 'members changed' lines after a real change, want 1", len(lines))
	}
}
