// Package quorumtest tests a fleet on a three-member etcd that loses members. It is apart
// from package cluster's tests because it runs no goroutine leak check: an embedded etcd
// member stopped while its peers run leaves peer connections (etcd's rafthttp, not ours)
// that outlive the whole cluster's stop.
package quorumtest

import (
	"errors"
	"testing"
	"time"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/proxy/cluster"
	"github.com/spillway/spillway/proxy/cluster/clustertest"
	"github.com/spillway/spillway/proxy/proxytest"
	"github.com/spillway/spillway/proxy/store"
)

// A three-member etcd (one per site): losing one member, the fleet still takes changes;
// losing two (no quorum), it fails static — shares kept, changes refused — and recovers
// once they are back.
func TestFleetOnThreeMemberEtcd(t *testing.T) {
	etcd := clustertest.Start(t, 3)
	a := clustertest.Join(t, etcd.Endpoints(), "a", 2*time.Second)
	b := clustertest.Join(t, etcd.Endpoints(), "b", 2*time.Second)
	id := balancer.BackendID{Site: "idc1", Addr: "http://10.0.0.1:80"}
	proxytest.Eventually(t, 30*time.Second, "two members share 10", func() bool {
		return clustertest.Sum([]*clustertest.Replica{a, b}, id, 10) == 10 && len(a.Status().Members) == 2
	})
	sa, sb := a.Store(0), b.Store(0)
	ctx := t.Context()
	drain := func(s *cluster.Store, site string) error {
		_, err := s.Commit(ctx, store.Change{Action: "drain", Site: site}, store.Edit{Site: site, Drain: &store.Drain{By: "t"}})
		return err
	}

	etcd.Member(0).Stop()
	proxytest.Eventually(t, 30*time.Second, "a change with one etcd member down", func() bool { return drain(sa, "idc1") == nil })
	if st, err := sb.Load(ctx); err != nil || len(st.Drains) != 1 {
		t.Fatalf("b loads %+v, %v", st, err)
	}
	if !a.Up() || !b.Up() {
		t.Fatal("the store is reported down with two of three etcd members up")
	}

	etcd.Member(1).Stop()
	proxytest.Eventually(t, 30*time.Second, "the store is reported down without quorum", func() bool { return !a.Up() && !b.Up() })
	if err := drain(sb, "idc2"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("a change without quorum: %v, want ErrUnavailable", err)
	}
	if got := a.Share().Of(id, 10) + b.Share().Of(id, 10); got != 10 || a.Share().Of(id, 10) != 5 {
		t.Fatalf("shares without quorum: %d of 10 (a %d), want the 5 and 5 they had", got, a.Share().Of(id, 10))
	}

	etcd.Member(0).Start()
	etcd.Member(1).Start()
	proxytest.Eventually(t, 60*time.Second, "the store is up again", func() bool { return a.Up() && b.Up() })
	proxytest.Eventually(t, 30*time.Second, "changes are taken again", func() bool { return drain(sb, "idc2") == nil })
	if st, err := sa.Load(ctx); err != nil || len(st.Drains) != 2 {
		t.Fatalf("a loads %+v, %v", st, err)
	}
}
