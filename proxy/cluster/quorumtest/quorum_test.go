// Package quorumtest tests a fleet on a three-member etcd that loses members. It is apart
// from package cluster's tests because it runs no goroutine leak check: an embedded etcd
// member stopped while its peers run leaves peer connections (etcd's rafthttp, not ours)
// that outlive the whole cluster's stop.
package quorumtest

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/proxy/cluster"
	"github.com/spillway/spillway/proxy/cluster/etcdtest"
	"github.com/spillway/spillway/proxy/store"
)

type replica struct {
	f     *cluster.Fleet
	share atomic.Pointer[cluster.Share]
}

func join(t *testing.T, endpoints []string, node string, lease time.Duration) *replica {
	t.Helper()
	r := &replica{}
	f, err := cluster.Open(cluster.Options{Name: "prod", Node: node, Endpoints: endpoints, Lease: lease, Log: zap.NewNop(),
		OnShare: func(s *cluster.Share) { r.share.Store(s) }})
	if err != nil {
		t.Fatal(err)
	}
	r.f = f
	if err := f.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	select {
	case <-f.Joined():
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not join", node)
	}
	return r
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sum(rs []*replica, id balancer.BackendID, limit int64) int64 {
	var n int64
	for _, r := range rs {
		n += r.share.Load().Of(id, limit)
	}
	return n
}

// A three-member etcd (one per site): losing one member, the fleet still takes changes;
// losing two (no quorum), it fails static — shares kept, changes refused — and recovers
// once they are back.
func TestFleetOnThreeMemberEtcd(t *testing.T) {
	etcd := etcdtest.Start(t, 3)
	a := join(t, etcd.Endpoints(), "a", 2*time.Second)
	b := join(t, etcd.Endpoints(), "b", 2*time.Second)
	id := balancer.BackendID{Site: "idc1", Addr: "http://10.0.0.1:80"}
	eventually(t, 30*time.Second, "two members share 10", func() bool { return sum([]*replica{a, b}, id, 10) == 10 && len(a.f.Status().Members) == 2 })
	sa, sb := a.f.Store(0), b.f.Store(0)
	ctx := t.Context()
	drain := func(s *cluster.Store, site string) error {
		_, err := s.Commit(ctx, store.Change{Action: "drain", Site: site}, store.Edit{Site: site, Drain: &store.Drain{By: "t"}})
		return err
	}

	etcd.Member(0).Stop()
	eventually(t, 30*time.Second, "a change with one etcd member down", func() bool { return drain(sa, "idc1") == nil })
	if st, err := sb.Load(ctx); err != nil || len(st.Drains) != 1 {
		t.Fatalf("b loads %+v, %v", st, err)
	}
	if !a.f.Up() || !b.f.Up() {
		t.Fatal("the store is reported down with two of three etcd members up")
	}

	etcd.Member(1).Stop()
	eventually(t, 30*time.Second, "the store is reported down without quorum", func() bool { return !a.f.Up() && !b.f.Up() })
	if err := drain(sb, "idc2"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("a change without quorum: %v, want ErrUnavailable", err)
	}
	if got := a.share.Load().Of(id, 10) + b.share.Load().Of(id, 10); got != 10 || a.share.Load().Of(id, 10) != 5 {
		t.Fatalf("shares without quorum: %d of 10 (a %d), want the 5 and 5 they had", got, a.share.Load().Of(id, 10))
	}

	etcd.Member(0).Start()
	etcd.Member(1).Start()
	eventually(t, 60*time.Second, "the store is up again", func() bool { return a.f.Up() && b.f.Up() })
	eventually(t, 30*time.Second, "changes are taken again", func() bool { return drain(sb, "idc2") == nil })
	if st, err := sa.Load(ctx); err != nil || len(st.Drains) != 2 {
		t.Fatalf("a loads %+v, %v", st, err)
	}
}
