package clustertest

import (
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/proxy/cluster"
)

// Replica is a Fleet joined to a test's etcd, with the share it last published.
type Replica struct {
	*cluster.Fleet
	share atomic.Pointer[cluster.Share]
}

// Join opens and starts a replica called node of the fleet "prod" on endpoints, with the
// given lease; it is closed when the test ends. It does not wait to join (see Joined).
func Join(t testing.TB, endpoints []string, node string, lease time.Duration) *Replica {
	t.Helper()
	return JoinWith(t, cluster.Options{Node: node, Endpoints: endpoints, Lease: lease})
}

// JoinWith is Join with every option: Name defaults to "prod" and Log to none; OnShare is
// the Replica's own.
func JoinWith(t testing.TB, opts cluster.Options) *Replica {
	t.Helper()
	r := Open(t, opts)
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return r
}

// Open is JoinWith without starting: the test calls Start (to start several at once).
func Open(t testing.TB, opts cluster.Options) *Replica {
	t.Helper()
	r := &Replica{}
	if opts.Name == "" {
		opts.Name = "prod"
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	opts.OnShare = func(s *cluster.Share) { r.share.Store(s) }
	f, err := cluster.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	r.Fleet = f
	t.Cleanup(func() { f.Close() })
	return r
}

// Joined waits until r has joined the fleet, failing the test after 30 s.
func (r *Replica) Joined(t testing.TB) {
	t.Helper()
	select {
	case <-r.Fleet.Joined():
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not join in 30s: %+v", r.Status().Node, r.Status())
	}
}

// Share is the share r last published; nil before its first.
func (r *Replica) Share() *cluster.Share { return r.share.Load() }

// Sum is what the replicas hold of limit at id, together.
func Sum(rs []*Replica, id balancer.BackendID, limit int64) int64 {
	var n int64
	for _, r := range rs {
		if s := r.Share(); s != nil {
			n += s.Of(id, limit)
		}
	}
	return n
}

// Client is an etcd client of endpoints, closed when the test ends.
func Client(t testing.TB, endpoints []string, opts ...grpc.DialOption) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second,
		DialKeepAliveTime: time.Second, DialKeepAliveTimeout: time.Second, DialOptions: opts,
		Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// CompactNow compacts c's etcd history up to its current revision, physically: a watch
// cut off before it has to start again.
func CompactNow(t testing.TB, c *clientv3.Client) {
	t.Helper()
	resp, err := c.Get(t.Context(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(t.Context(), resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
}
