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
	"github.com/spillway/spillway/proxy/cluster/clustertest"
	"github.com/spillway/spillway/proxy/proxytest"
)

var limits = []int64{1, 2, 3, 7, 10, 100, 101}

func backends() []balancer.BackendID {
	var ids []balancer.BackendID
	for i := range 5 {
		ids = append(ids, balancer.BackendID{Site: "idc1", Addr: fmt.Sprintf("http://10.0.0.%d:80", i)})
	}
	return ids
}

// watchBudget checks, until stop, that the replicas never hold more than any limit between
// them, and returns how many samples broke it.
func watchBudget(rs func() []*clustertest.Replica, stop <-chan struct{}) *atomic.Int64 {
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
					if clustertest.Sum(rs(), id, l) > l {
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
	etcd := clustertest.Start(t, 1)
	const lease = 2 * time.Second
	var mu sync.Mutex
	var all []*clustertest.Replica
	snapshot := func() []*clustertest.Replica {
		mu.Lock()
		defer mu.Unlock()
		return append([]*clustertest.Replica(nil), all...)
	}
	add := func(node string) *clustertest.Replica {
		r := clustertest.Join(t, etcd.Endpoints(), node, lease)
		mu.Lock()
		all = append(all, r)
		mu.Unlock()
		return r
	}
	stop := make(chan struct{})
	over := watchBudget(snapshot, stop)
	defer close(stop)

	settled := func(rs []*clustertest.Replica, n int) {
		t.Helper()
		proxytest.Eventually(t, 30*time.Second, fmt.Sprintf("%d replicas share every limit exactly", n), func() bool {
			for _, id := range backends() {
				for _, l := range limits {
					if clustertest.Sum(rs, id, l) != l {
						return false
					}
				}
			}
			for _, r := range rs {
				if len(r.Status().Members) != n {
					return false
				}
			}
			return true
		})
	}

	a := add("a")
	a.Joined(t)
	settled([]*clustertest.Replica{a}, 1)
	b := add("b")
	b.Joined(t)
	settled([]*clustertest.Replica{a, b}, 2)
	c := add("c")
	c.Joined(t)
	settled([]*clustertest.Replica{a, b, c}, 3)
	if got := a.Share().Of(backends()[0], 99); got != 33 {
		t.Fatalf("a's share of 99 among 3: %d, want 33", got)
	}

	// c leaves (gracefully: its lease is revoked at once), having stopped serving first.
	mu.Lock()
	all = []*clustertest.Replica{a, b}
	mu.Unlock()
	c.Close()
	settled([]*clustertest.Replica{a, b}, 2)

	// b dies: a gets all back within the lease and a second (or so: a generous bound).
	mu.Lock()
	all = []*clustertest.Replica{a} // a dead replica holds nothing
	mu.Unlock()
	died := time.Now()
	b.Crash()
	settled([]*clustertest.Replica{a}, 1)
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
	etcd := clustertest.Start(t, 1)
	a := clustertest.Join(t, etcd.Endpoints(), "a", 2*time.Second)
	b := clustertest.Join(t, etcd.Endpoints(), "b", 2*time.Second)
	a.Joined(t)
	b.Joined(t)
	id := backends()[0]
	proxytest.Eventually(t, 30*time.Second, "two members", func() bool { return clustertest.Sum([]*clustertest.Replica{a, b}, id, 10) == 10 })
	etcd.Stop()
	proxytest.Eventually(t, 30*time.Second, "the store is reported unavailable", func() bool {
		return a.Status().Store == "unavailable" && !b.Up()
	})
	if got := a.Share().Of(id, 10) + b.Share().Of(id, 10); got != 10 {
		t.Fatalf("with etcd down the shares changed: %d of 10", got)
	}
	time.Sleep(3 * time.Second) // longer than the lease: nothing expires while etcd is down
	if got := a.Share().Of(id, 10); got != 5 {
		t.Fatalf("a's share with etcd down for longer than the lease: %d, want the 5 it had", got)
	}
	etcd.Restart()
	proxytest.Eventually(t, 30*time.Second, "the store is up again", func() bool { return a.Up() && b.Up() })
	c := clustertest.Join(t, etcd.Endpoints(), "c", 2*time.Second)
	c.Joined(t)
	proxytest.Eventually(t, 30*time.Second, "three members share the limit", func() bool {
		return clustertest.Sum([]*clustertest.Replica{a, b, c}, id, 10) == 10 && c.Share().Of(id, 10) > 0 && len(a.Status().Members) == 3
	})
}

// Two replicas may not share a node name: the second fails to start, saying so. A replica
// that crashed is replaced under its name once its lease has run out (the others first
// take its share back, then the new one joins).
func TestFleetNodeNameTaken(t *testing.T) {
	etcd := clustertest.Start(t, 1)
	a := clustertest.Join(t, etcd.Endpoints(), "a", 2*time.Second)
	b := clustertest.Join(t, etcd.Endpoints(), "b", 2*time.Second)
	a.Joined(t)
	b.Joined(t)
	dup, err := cluster.Open(cluster.Options{Name: "prod", Node: "a", Endpoints: etcd.Endpoints(), Lease: 2 * time.Second, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	err = dup.Start(t.Context())
	dup.Close()
	if !errors.Is(err, cluster.ErrNodeTaken) {
		t.Fatalf("a second replica named a: %v, want ErrNodeTaken", err)
	}
	if len(a.Status().Members) != 2 || clustertest.Sum([]*clustertest.Replica{a, b}, backends()[0], 10) != 10 {
		t.Fatalf("the refused duplicate disturbed the fleet: %+v", a.Status())
	}

	a.Crash()
	again := clustertest.Join(t, etcd.Endpoints(), "a", 2*time.Second)
	again.Joined(t)
	proxytest.Eventually(t, 30*time.Second, "the new a and b share 10", func() bool {
		return clustertest.Sum([]*clustertest.Replica{again, b}, backends()[0], 10) == 10 && len(b.Status().Members) == 2
	})
}

// Demand-following shares: the fleet divides each limit in proportion to what each replica
// reports, never holding more than the limit between the replicas while the weights move.
func TestFleetDemandShares(t *testing.T) {
	etcd := clustertest.Start(t, 1)
	var demandA, demandB atomic.Int64
	demandA.Store(30)
	demandB.Store(10)
	mk := func(node string, d *atomic.Int64) *clustertest.Replica {
		return clustertest.JoinWith(t, cluster.Options{Node: node, Endpoints: etcd.Endpoints(), Lease: 2 * time.Second,
			Demand: func() float64 { return float64(d.Load()) }})
	}
	a, b := mk("a", &demandA), mk("b", &demandB)
	a.Joined(t)
	b.Joined(t)
	rs := []*clustertest.Replica{a, b}
	stop := make(chan struct{})
	over := watchBudget(func() []*clustertest.Replica { return rs }, stop)
	id := backends()[0]
	proxytest.Eventually(t, 30*time.Second, "a holds about three quarters of 100", func() bool {
		sa := a.Share().Of(id, 100)
		return sa >= 65 && sa <= 80 && clustertest.Sum(rs, id, 100) == 100
	})
	demandA.Store(10)
	demandB.Store(30)
	proxytest.Eventually(t, 30*time.Second, "the weights turn: b holds about three quarters", func() bool {
		sb := b.Share().Of(id, 100)
		return sb >= 65 && sb <= 80 && clustertest.Sum(rs, id, 100) == 100
	})
	close(stop)
	if n := over.Load(); n > 0 {
		t.Fatalf("%d samples where the replicas held more than a limit between them", n)
	}
}
