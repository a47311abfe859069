package discovery_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spillway/spillway/balancer/discovery"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// wait bounds every wait in these tests: a liveness bound, far above what any step takes,
// never what a test's correctness rests on.
const wait = 10 * time.Second

// updates records the calls of Options.Update on a channel.
type updates struct {
	ch   chan []string
	done chan struct{} // closed at cleanup, so an Update nobody reads cannot block Run
	once sync.Once
}

func (u *updates) stop() { u.once.Do(func() { close(u.done) }) }

func newUpdates() *updates {
	return &updates{ch: make(chan []string, 64), done: make(chan struct{})}
}

func (u *updates) update(m []string) {
	select {
	case u.ch <- m:
	case <-u.done:
	}
}

// next returns the next Update call's set, failing the test after wait.
func (u *updates) next(t *testing.T) []string {
	t.Helper()
	select {
	case m := <-u.ch:
		if len(m) == 0 {
			t.Fatalf("Update called with an empty set")
		}
		return m
	case <-time.After(wait):
		t.Fatalf("no Update within %s", wait)
		return nil
	}
}

// until reads Update calls until one brings want (in any order), failing the test if none
// does within wait or if any brings an empty set. Sets in between are allowed: a change
// may be seen half made (A answered before it, AAAA after).
func (u *updates) until(t *testing.T, want ...string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	deadline := time.After(wait)
	var seen [][]string
	for {
		select {
		case m := <-u.ch:
			if len(m) == 0 {
				t.Fatalf("Update called with an empty set")
			}
			if !slices.IsSorted(m) || len(slices.Compact(slices.Clone(m))) != len(m) {
				t.Fatalf("Update called with %q: not sorted and unique", m)
			}
			if slices.Equal(m, want) {
				return
			}
			seen = append(seen, m)
		case <-deadline:
			t.Fatalf("no Update with %q within %s; saw %q", want, wait, seen)
		}
	}
}

// none fails the test if an Update call is waiting.
func (u *updates) none(t *testing.T) {
	t.Helper()
	select {
	case m := <-u.ch:
		t.Fatalf("unexpected Update with %q", m)
	default:
	}
}

// logs is a zap core that keeps every entry and signals each one, so that a test can wait
// for a log line (a failure, an invalid line) instead of sleeping.
type logs struct {
	zapcore.Core
	all    *observer.ObservedLogs
	signal chan struct{}
}

func newLogs() *logs {
	core, all := observer.New(zapcore.DebugLevel)
	return &logs{Core: core, all: all, signal: make(chan struct{}, 1)}
}

func (l *logs) logger() *zap.Logger { return zap.New(l) }

func (l *logs) With(fields []zapcore.Field) zapcore.Core {
	return &logs{Core: l.Core.With(fields), all: l.all, signal: l.signal}
}

func (l *logs) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if l.Enabled(e.Level) {
		return ce.AddCore(e, l)
	}
	return ce
}

func (l *logs) Write(e zapcore.Entry, fields []zapcore.Field) error {
	err := l.Core.Write(e, fields)
	select {
	case l.signal <- struct{}{}:
	default:
	}
	return err
}

// count returns how many entries have message msg.
func (l *logs) count(msg string) int {
	return l.all.FilterMessage(msg).Len()
}

// until waits until at least n entries have message msg and returns them.
func (l *logs) until(t *testing.T, msg string, n int) []observer.LoggedEntry {
	t.Helper()
	deadline := time.After(wait)
	for {
		if got := l.all.FilterMessage(msg).All(); len(got) >= n {
			return got
		}
		select {
		case <-l.signal:
		case <-deadline:
			for _, e := range l.all.All() {
				t.Logf("log: %s %s %v", e.Level, e.Message, e.ContextMap())
			}
			t.Fatalf("fewer than %d %q log lines within %s", n, msg, wait)
		}
	}
}

const failedMsg = "discovery failed, keeping the last members"

// newDiscoverer returns a Discoverer for o whose Update and Log the test watches.
func newDiscoverer(t *testing.T, o discovery.Options) (*discovery.Discoverer, *updates, *logs) {
	t.Helper()
	u, l := newUpdates(), newLogs()
	o.Update, o.Log = u.update, l.logger()
	if o.Site == "" {
		o.Site = "aws"
	}
	d, err := discovery.New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(u.stop)
	return d, u, l
}

// run runs d until the test ends, and checks that Run returns once its context is done.
func run(t *testing.T, d *discovery.Discoverer, u *updates) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { d.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		u.stop()
		stopped := make(chan struct{})
		go func() { wg.Wait(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(wait):
			t.Errorf("Run did not return within %s of its context's end", wait)
		}
	})
}
