package sim

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func get(t *testing.T, c *http.Client, url string) (int, error) {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, nil
}

func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// blockingDist holds every request until release is closed, and says when one arrives.
type blockingDist struct {
	arrived chan struct{}
	release chan struct{}
}

func (d blockingDist) Sample(Rand) time.Duration {
	d.arrived <- struct{}{}
	<-d.release
	return 0
}

func TestCapacity(t *testing.T) {
	for _, tc := range []struct {
		name     string
		overflow Overflow
		want     []int
	}{
		{"reject answers 503", Reject, []int{200, 200, 503}},
		{"queue waits", Queue, []int{200, 200, 200}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := blockingDist{arrived: make(chan struct{}, 3), release: make(chan struct{})}
			b, err := StartWith("127.0.0.1:0", Options{Site: "s", Name: "n", Service: d, Capacity: 2, Overflow: tc.overflow, HealthPath: "/healthz"})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			c := newClient(t)
			codes := make(chan int, 3)
			var wg sync.WaitGroup
			for range 2 {
				wg.Go(func() { code, _ := get(t, c, b.URL()+"/"); codes <- code })
			}
			<-d.arrived
			<-d.arrived
			// At capacity: health answers anyway, a third request is refused or waits.
			if code, err := get(t, c, b.URL()+"/healthz"); err != nil || code != 200 {
				t.Fatalf("health at capacity: %d %v", code, err)
			}
			wg.Go(func() { code, _ := get(t, c, b.URL()+"/"); codes <- code })
			if tc.overflow == Reject {
				if code := <-codes; code != 503 {
					t.Fatalf("third request: %d", code)
				}
				codes <- 503
			}
			close(d.release)
			wg.Wait()
			close(codes)
			var got []int
			for c := range codes {
				got = append(got, c)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("statuses %v, want %v", got, tc.want)
			}
			if st := b.Stats(); st.Peak != 2 || st.Inflight != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestFaults(t *testing.T) {
	b, err := StartWith("127.0.0.1:0", Options{Site: "s", Name: "n", Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c := newClient(t)
	b.SetErrorRate(1)
	if code, _ := get(t, c, b.URL()); code != 500 {
		t.Fatalf("error rate 1: %d", code)
	}
	b.SetErrorRate(0)
	b.SetResetRate(1)
	if _, err := get(t, c, b.URL()); err == nil {
		t.Fatal("reset rate 1: answered")
	}
	b.SetResetRate(0)
	if code, err := get(t, c, b.URL()); code != 200 || err != nil {
		t.Fatalf("no faults: %d %v", code, err)
	}
	// Go's client may resend a GET once when a kept-alive connection is reset: 1 or 2.
	if st := b.Stats(); st.Injected != 1 || st.Resets < 1 || st.Resets > 2 || st.Served != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestKillAndRestoreOnTheSamePort(t *testing.T) {
	d := blockingDist{arrived: make(chan struct{}, 1), release: make(chan struct{})}
	b, err := StartWith("127.0.0.1:0", Options{Site: "s", Name: "n", Service: d})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c := newClient(t)
	url := b.URL()
	errc := make(chan error, 1)
	go func() { _, err := get(t, c, url); errc <- err }()
	<-d.arrived
	n, err := b.Kill()
	close(d.release)
	if err != nil || n != 1 {
		t.Fatalf("kill: %d in flight, %v", n, err)
	}
	if err := <-errc; err == nil {
		t.Fatal("the request in flight was not cut")
	}
	if _, err := get(t, c, url); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("killed backend: %v", err)
	}
	if err := b.Restore(); err != nil {
		t.Fatal(err)
	}
	if b.URL() != url {
		t.Fatalf("restored on %s, was %s", b.URL(), url)
	}
	if code, err := get(t, c, url); err != nil || code != 200 {
		t.Fatalf("restored backend: %d %v", code, err)
	}
	if st := b.Stats(); st.Cut != 1 {
		t.Fatalf("stats %+v", st)
	}
	b.Close()
	if err := b.Restore(); err == nil {
		t.Fatal("a closed backend restored")
	}
}

func TestLogNormal(t *testing.T) {
	d := NewLogNormal(100*time.Millisecond, 250*time.Millisecond)
	r := newLockedRand(1)
	var v []time.Duration
	for range 20000 {
		v = append(v, d.Sample(r))
	}
	slices.Sort(v)
	near := func(got, want time.Duration, tol float64) bool {
		return float64(got) > float64(want)*(1-tol) && float64(got) < float64(want)*(1+tol)
	}
	if med, p99 := v[len(v)/2], v[len(v)*99/100]; !near(med, 100*time.Millisecond, 0.03) || !near(p99, 250*time.Millisecond, 0.08) {
		t.Fatalf("median %s p99 %s", med, p99)
	}
	if m := d.Mean(); !near(m, 108*time.Millisecond, 0.02) {
		t.Fatalf("mean %s", m)
	}
	var _ Rand = rand.New(rand.NewPCG(1, 1))
}

func TestGroupScalesOutAndIn(t *testing.T) {
	d := blockingDist{arrived: make(chan struct{}, 8), release: make(chan struct{})}
	targets := filepath.Join(t.TempDir(), "targets.txt")
	changes := make(chan int, 10)
	g, err := StartGroup(GroupOptions{Instance: Options{Site: "aws", Service: d, Capacity: 2}, TargetsFile: targets,
		Min: 1, Max: 2, Check: time.Millisecond, ScaleOutAt: 0.75, ScaleInBelow: 0.25,
		OnChange: func(n int, added bool) { changes <- n }})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	read := func() []string {
		b, err := os.ReadFile(targets)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				out = append(out, l)
			}
		}
		return out
	}
	first := g.Instances()[0]
	if got := read(); len(got) != 1 || got[0] != first.Addr() {
		t.Fatalf("targets %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	// Saturate the one instance: the group adds the second, and no more (Max 2).
	c := newClient(t)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { get(t, c, first.URL()) })
	}
	<-d.arrived
	<-d.arrived
	if n := <-changes; n != 2 {
		t.Fatalf("scaled out to %d", n)
	}
	if got := read(); len(got) != 2 {
		t.Fatalf("targets after scale-out %v", got)
	}
	// Idle again: it goes back to Min.
	close(d.release)
	wg.Wait()
	if n := <-changes; n != 1 {
		t.Fatalf("scaled in to %d", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := g.Stats(); st.Peak != 2 || st.Added != 1 || st.Removed != 1 || st.Instances != 1 || len(read()) != 1 {
		t.Fatalf("stats %+v, targets %v", st, read())
	}
}
