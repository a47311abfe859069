package cluster_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/proxy/cluster"
	"github.com/spillway/spillway/proxy/cluster/etcdtest"
)

// replica is a Fleet with the share it last published.
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
	return r
}

func (r *replica) joined(t *testing.T) {
	t.Helper()
	select {
	case <-r.f.Joined():
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not join in 30s: %+v", r.f.Status().Node, r.f.Status())
	}
}

var limits = []int64{1, 2, 3, 7, 10, 100, 101}

func backends() []balancer.BackendID {
	var ids []balancer.BackendID
	for i := range 5 {
		ids = append(ids, balancer.BackendID{Site: "idc1", Addr: fmt.Sprintf("http://10.0.0.%d:80", i)})
	}
	return ids
}

// sum is what the replicas hold of limit at id, together.
func sum(rs []*replica, id balancer.BackendID, limit int64) int64 {
	var n int64
	for _, r := range rs {
		if s := r.share.Load(); s != nil {
			n += s.Of(id, limit)
		}
	}
	return n
}

// watchBudget checks, until stop, that the replicas never hold more than any limit between
// them, and returns how many samples broke it.
func watchBudget(rs func() []*replica, stop <-chan struct{}) *atomic.Int64 {
	var over atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, id := range backends() {
				for _, l := range limits {
					if sum(rs(), id, l) > l {
						over.Add(1)
					}
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return &over
}

// Replicas join one by one, one leaves, one dies: at every moment the shares they hold add up
// to at most each limit; once the fleet is settled they add up to exactly each limit (equal
// shares); a dead replica's share comes back within about the lease.
func TestFleetSharesFollowMembers(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	const lease = 2 * time.Second
	var mu sync.Mutex
	var all []*replica
	snapshot := func() []*replica { mu.Lock(); defer mu.Unlock(); return append([]*replica(nil), all...) }
	add := func(node string) *replica {
		r := join(t, etcd.Endpoints(), node, lease)
		mu.Lock()
		all = append(all, r)
		mu.Unlock()
		return r
	}
	stop := make(chan struct{})
	over := watchBudget(snapshot, stop)
	defer close(stop)

	settled := func(rs []*replica, n int) {
		t.Helper()
		eventually(t, 30*time.Second, fmt.Sprintf("%d replicas share every limit exactly", n), func() bool {
			for _, id := range backends() {
				for _, l := range limits {
					if sum(rs, id, l) != l {
						return false
					}
				}
			}
			for _, r := range rs {
				if len(r.f.Status().Members) != n {
					return false
				}
			}
			return true
		})
	}

	a := add("a")
	a.joined(t)
	settled([]*replica{a}, 1)
	b := add("b")
	b.joined(t)
	settled([]*replica{a, b}, 2)
	c := add("c")
	c.joined(t)
	settled([]*replica{a, b, c}, 3)
	if got := a.share.Load().Of(backends()[0], 99); got != 33 {
		t.Fatalf("a's share of 99 among 3: %d, want 33", got)
	}

	// c leaves (gracefully: its lease is revoked at once), having stopped serving first.
	mu.Lock()
	all = []*replica{a, b}
	mu.Unlock()
	c.f.Close()
	settled([]*replica{a, b}, 2)

	// b dies: a gets all back within the lease and a second (or so: a generous bound).
	mu.Lock()
	all = []*replica{a} // a dead replica holds nothing
	mu.Unlock()
	died := time.Now()
	b.f.Crash()
	settled([]*replica{a}, 1)
	if d := time.Since(died); d > lease+5*time.Second {
		t.Errorf("a dead replica's share came back after %s; lease is %s", d, lease)
	}
	t.Logf("a dead replica's share came back after %s (lease %s)", time.Since(died).Round(time.Millisecond), lease)
	if n := over.Load(); n > 0 {
		t.Fatalf("%d samples where the replicas held more than a limit between them", n)
	}
}

// etcd down: every replica keeps the share it had (fail static) and says the store is
// unavailable; once etcd is back, the store is up again and a new replica can join.
func TestFleetFailStatic(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	a := join(t, etcd.Endpoints(), "a", 2*time.Second)
	b := join(t, etcd.Endpoints(), "b", 2*time.Second)
	a.joined(t)
	b.joined(t)
	id := backends()[0]
	eventually(t, 30*time.Second, "two members", func() bool { return sum([]*replica{a, b}, id, 10) == 10 })
	etcd.Stop()
	eventually(t, 30*time.Second, "the store is reported unavailable", func() bool {
		return a.f.Status().Store == "unavailable" && !b.f.Up()
	})
	if got := a.share.Load().Of(id, 10) + b.share.Load().Of(id, 10); got != 10 {
		t.Fatalf("with etcd down the shares changed: %d of 10", got)
	}
	time.Sleep(3 * time.Second) // longer than the lease: nothing expires while etcd is down
	if got := a.share.Load().Of(id, 10); got != 5 {
		t.Fatalf("a's share with etcd down for longer than the lease: %d, want the 5 it had", got)
	}
	etcd.Restart()
	eventually(t, 30*time.Second, "the store is up again", func() bool { return a.f.Up() && b.f.Up() })
	c := join(t, etcd.Endpoints(), "c", 2*time.Second)
	c.joined(t)
	eventually(t, 30*time.Second, "three members share the limit", func() bool {
		return sum([]*replica{a, b, c}, id, 10) == 10 && c.share.Load().Of(id, 10) > 0 && len(a.f.Status().Members) == 3
	})
}

// Two replicas may not share a node name: the second fails to start, saying so. A replica
// that crashed is replaced under its name once its lease has run out (the others first
// take its share back, then the new one joins).
func TestFleetNodeNameTaken(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	a := join(t, etcd.Endpoints(), "a", 2*time.Second)
	b := join(t, etcd.Endpoints(), "b", 2*time.Second)
	a.joined(t)
	b.joined(t)
	dup, err := cluster.Open(cluster.Options{Name: "prod", Node: "a", Endpoints: etcd.Endpoints(), Lease: 2 * time.Second, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	err = dup.Start(t.Context())
	dup.Close()
	if !errors.Is(err, cluster.ErrNodeTaken) {
		t.Fatalf("a second replica named a: %v, want ErrNodeTaken", err)
	}
	if len(a.f.Status().Members) != 2 || sum([]*replica{a, b}, backends()[0], 10) != 10 {
		t.Fatalf("the refused duplicate disturbed the fleet: %+v", a.f.Status())
	}

	a.f.Crash()
	again := join(t, etcd.Endpoints(), "a", 2*time.Second)
	again.joined(t)
	eventually(t, 30*time.Second, "the new a and b share 10", func() bool {
		return sum([]*replica{again, b}, backends()[0], 10) == 10 && len(b.f.Status().Members) == 2
	})
}

// Demand-following shares: the fleet divides each limit in proportion to what each replica
// reports, never holding more than the limit between the replicas while the weights move.
func TestFleetDemandShares(t *testing.T) {
	etcd := etcdtest.Start(t, 1)
	var demandA, demandB atomic.Int64
	demandA.Store(30)
	demandB.Store(10)
	mk := func(node string, d *atomic.Int64) *replica {
		r := &replica{}
		f, err := cluster.Open(cluster.Options{Name: "prod", Node: node, Endpoints: etcd.Endpoints(), Lease: 2 * time.Second, Log: zap.NewNop(),
			OnShare: func(s *cluster.Share) { r.share.Store(s) }, Demand: func() float64 { return float64(d.Load()) }})
		if err != nil {
			t.Fatal(err)
		}
		r.f = f
		if err := f.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return r
	}
	a, b := mk("a", &demandA), mk("b", &demandB)
	a.joined(t)
	b.joined(t)
	rs := []*replica{a, b}
	stop := make(chan struct{})
	over := watchBudget(func() []*replica { return rs }, stop)
	id := backends()[0]
	eventually(t, 30*time.Second, "a holds about three quarters of 100", func() bool {
		sa := a.share.Load().Of(id, 100)
		return sa >= 65 && sa <= 80 && sum(rs, id, 100) == 100
	})
	demandA.Store(10)
	demandB.Store(30)
	eventually(t, 30*time.Second, "the weights turn: b holds about three quarters", func() bool {
		sb := b.share.Load().Of(id, 100)
		return sb >= 65 && sb <= 80 && sum(rs, id, 100) == 100
	})
	close(stop)
	if n := over.Load(); n > 0 {
		t.Fatalf("%d samples where the replicas held more than a limit between them", n)
	}
}
