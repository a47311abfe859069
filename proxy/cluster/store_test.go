package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/cluster"
	"github.com/spillway/spillway/proxy/cluster/clustertest"
	"github.com/spillway/spillway/proxy/proxytest"
	"github.com/spillway/spillway/proxy/store"
)

// Two replicas' stores on one etcd: what one commits, the other loads, pages and is told of
// by its Watch; the audit entry and the edits go together; IDs follow one another across
// replicas, even committing at once.
func TestStoreAcrossReplicas(t *testing.T) {
	etcd := clustertest.Start(t, 1)
	a := cluster.NewStore(clustertest.Client(t, etcd.Endpoints()), "prod", "a", 5, nil)
	b := cluster.NewStore(clustertest.Client(t, etcd.Endpoints()), "prod", "b", 5, nil)
	other := cluster.NewStore(clustertest.Client(t, etcd.Endpoints()), "test", "c", 5, nil)
	ctx := t.Context()

	var mu sync.Mutex
	var seen []store.State
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Watch(wctx, func(s store.State) { mu.Lock(); seen = append(seen, s); mu.Unlock() })
	}()
	t.Cleanup(func() { stop(); <-done })
	last := func() store.State {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			return store.State{}
		}
		return seen[len(seen)-1]
	}
	proxytest.Eventually(t, 10*time.Second, "the watch delivers the first state", func() bool { return last().Overrides != nil })

	start := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	o := store.Override{Weight: 7, From: 5, Start: start, End: start.Add(30 * time.Second), By: "alice"}
	c, err := a.Commit(ctx, store.Change{Time: start, Who: "alice", Action: "weight", Site: "idc1", Before: "5", After: "7"},
		store.Edit{Site: "idc1", Override: &o}, store.Edit{Site: "idc2", Drain: &store.Drain{By: "alice", Since: start}})
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != 1 || c.Node != "a" {
		t.Fatalf("committed %+v: want ID 1 by node a", c)
	}
	st, err := b.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Overrides["idc1"]; !got.Start.Equal(o.Start) || !got.End.Equal(o.End) || got.Weight != 7 || got.From != 5 {
		t.Fatalf("b loads override %+v, want %+v (start and end stored, not steps)", got, o)
	}
	if _, ok := st.Drains["idc2"]; !ok {
		t.Fatalf("b loads no drain of idc2: %+v", st)
	}
	proxytest.Eventually(t, 5*time.Second, "b's watch delivers a's change", func() bool {
		s := last()
		_, drained := s.Drains["idc2"]
		return s.Overrides["idc1"].Weight == 7 && drained
	})
	if s, _ := other.Load(ctx); len(s.Overrides)+len(s.Drains) != 0 {
		t.Fatalf("another fleet's store sees this one's state: %+v", s)
	}

	// Undrain and clear through b; a sees it.
	if _, err := b.Commit(ctx, store.Change{Time: start, Who: "bob", Action: "undrain", Site: "idc2"},
		store.Edit{Site: "idc2", Undrain: true}, store.Edit{Site: "idc1", ClearOverride: true}); err != nil {
		t.Fatal(err)
	}
	if s, _ := a.Load(ctx); len(s.Overrides)+len(s.Drains) != 0 {
		t.Fatalf("a still loads %+v after b cleared it", s)
	}
	proxytest.Eventually(t, 5*time.Second, "the watch delivers the clearing", func() bool {
		s := last()
		return s.Overrides != nil && len(s.Overrides)+len(s.Drains) == 0
	})

	// Both commit at once: every ID once, in order, the trail bounded at 5.
	var wg sync.WaitGroup
	for i := range 8 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			if _, err := s.Commit(ctx, store.Change{Who: fmt.Sprint(i), Action: "reload"}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	page, total, err := a.Changes(ctx, 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	if total != 5 || len(page) != 3 || page[0].ID != 10 || page[1].ID != 9 || page[2].ID != 8 {
		t.Fatalf("trail page %+v total %d: want IDs 10, 9, 8 of 5 kept", ids(page), total)
	}
	page, _, _ = b.Changes(ctx, 8, 10)
	if len(page) != 2 || page[0].ID != 7 || page[1].ID != 6 {
		t.Fatalf("page before 8: %v, want 7, 6 (older ones dropped)", ids(page))
	}
}

func ids(cs []store.Change) []uint64 {
	var out []uint64
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

// etcd down: Commit is store.ErrUnavailable (promptly) and nothing is half-written; once
// etcd is back, Commit works and the watch delivers the state again.
func TestStoreUnavailable(t *testing.T) {
	etcd := clustertest.Start(t, 1)
	a := cluster.NewStore(clustertest.Client(t, etcd.Endpoints()), "prod", "a", 0, nil)
	ctx := t.Context()
	if _, err := a.Commit(ctx, store.Change{Action: "drain", Site: "idc1"}, store.Edit{Site: "idc1", Drain: &store.Drain{By: "x"}}); err != nil {
		t.Fatal(err)
	}
	etcd.Stop()
	startedAt := time.Now()
	_, err := a.Commit(ctx, store.Change{Action: "undrain", Site: "idc1"}, store.Edit{Site: "idc1", Undrain: true})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("commit with etcd down: %v, want ErrUnavailable", err)
	}
	if d := time.Since(startedAt); d > 20*time.Second {
		t.Fatalf("commit took %s to fail", d)
	}
	if _, err := a.Load(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("load with etcd down: %v, want ErrUnavailable", err)
	}
	etcd.Restart()
	proxytest.Eventually(t, 30*time.Second, "commits work again once etcd is back", func() bool {
		_, err := a.Commit(ctx, store.Change{Action: "reload"})
		return err == nil
	})
	st, err := a.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Drains["idc1"]; !ok {
		t.Fatalf("the drain was lost across etcd's restart, or the refused undrain was applied: %+v", st)
	}
}
