package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Options are what a replica needs to join its fleet. They are plain data; cmd/spillway
// translates the config file's cluster section.
type Options struct {
	Name      string      // the fleet: replicas with the same name and etcd act as one
	Node      string      // this replica, unique in the fleet
	Endpoints []string    // etcd's client URLs
	TLS       *tls.Config // to etcd; nil: plain
	// Lease is how long a silent replica stays a member: once it is over, the others take
	// its shares back. Whole seconds (etcd's leases are).
	Lease time.Duration
	Log   *zap.Logger
	// OnShare is called with every new share of this replica (from one goroutine, in
	// order): at once with the share of a replica that has not joined (0 of every limit).
	OnShare func(*Share)
	// Settled reports whether this replica's in-flight at every backend is within the share
	// last given to OnShare; after a share shrank, the replica tells the fleet it holds the
	// new membership only once it is (or after SettleTimeout), so that the replica that
	// grows into what it gave up never finds it still in use. nil: at once.
	Settled       func() bool
	SettleTimeout time.Duration // default 10 s
	// Demand, when set, is this replica's load now (its requests in flight and waiting):
	// the replica reports it about once a second, and the fleet divides each limit in
	// proportion to the members' demand instead of equally. nil: equal shares.
	Demand func() float64
}

// DefaultSettleTimeout bounds how long a replica waits for its in-flight to fall within a
// shrunken share before it lets the fleet go on: a request that holds its slot longer (a
// stream, a WebSocket) is counted in the new share from then.
const DefaultSettleTimeout = 10 * time.Second

// Status is the fleet as this replica sees it.
type Status struct {
	Name    string   `json:"name"`
	Node    string   `json:"node"`
	Members []string `json:"members"` // node names, sorted
	Store   string   `json:"store"`   // "up" or "unavailable"
	Joined  bool     `json:"joined"`  // this replica holds its share of the fleet's limits
}

// Fleet is this replica's membership of its fleet. The zero value is not usable; call
// Open, then Start. Safe for concurrent use.
type Fleet struct {
	o      Options
	c      *clientv3.Client
	prefix string
	log    *zap.Logger

	up     atomic.Bool // etcd answered the last health check
	joined chan struct{}
	kick   chan struct{} // the members or acks changed

	mu      sync.Mutex
	members map[string]int64   // node → CreateRevision of its member key
	acks    map[string]string  // node → the view it holds
	loads   map[string]float64 // node → its reported demand
	table   *table             // the coordinator's weights; nil: equal shares
	lease   clientv3.LeaseID
	granted time.Duration // the lease etcd grants (at least its own minimum, maybe more than cluster.lease)
	share   *Share
	acked   string // the view this replica has told the fleet it holds

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Open connects to etcd (without waiting for it to answer). Close releases it.
func Open(o Options) (*Fleet, error) {
	if o.Name == "" || o.Node == "" || strings.Contains(o.Node, "/") {
		return nil, fmt.Errorf("cluster: want a name and a node without \"/\", got %q and %q", o.Name, o.Node)
	}
	if o.Lease < time.Second {
		o.Lease = 5 * time.Second
	}
	if o.SettleTimeout <= 0 {
		o.SettleTimeout = DefaultSettleTimeout
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: o.Endpoints, TLS: o.TLS, DialTimeout: 2 * time.Second,
		DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: 2 * time.Second,
		Logger: o.Log.Named("etcd").WithOptions(zap.IncreaseLevel(zap.ErrorLevel))})
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd client: %w", err)
	}
	f := &Fleet{o: o, c: c, prefix: Prefix(o.Name), log: o.Log, joined: make(chan struct{}), kick: make(chan struct{}, 1),
		members: map[string]int64{}, acks: map[string]string{}, loads: map[string]float64{}, share: &Share{node: o.Node, views: []view{noView}}}
	return f, nil
}

// Client is the etcd client, for the fleet's Store.
func (f *Fleet) Client() *clientv3.Client { return f.c }

// Store returns the fleet's runtime state store, keeping up to keep audit entries. While
// the fleet finds etcd unreachable it refuses changes at once, without waiting for a timeout.
func (f *Fleet) Store(keep int) *Store {
	s := NewStore(f.c, f.o.Name, f.o.Node, keep, f.log)
	s.up = f.up.Load
	return s
}

func (f *Fleet) memberKey(node string) string { return f.prefix + "members/" + node }
func (f *Fleet) ackKey(node string) string    { return f.prefix + "acks/" + node }
func (f *Fleet) loadKey(node string) string   { return f.prefix + "load/" + node }
func (f *Fleet) tableKey() string             { return f.prefix + "table" }

// Start registers this replica under a lease (etcd must answer within ctx: a replica
// cannot take part in a fleet it cannot reach) and starts following the fleet. Its share of
// every limit is 0 until the others have made room for it: see Joined.
func (f *Fleet) Start(ctx context.Context) error {
	f.publish(f.share)
	if err := f.claim(ctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("etcd did not answer within %s (is it running, and reachable from here?): %w", opTimeout, err)
		}
		return fmt.Errorf("cluster %s: register node %s in etcd %s: %w", f.o.Name, f.o.Node, strings.Join(f.o.Endpoints, ","), err)
	}
	f.up.Store(true)
	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.cancel = cancel
	f.wg.Go(func() { f.keepAlive(run) })
	f.wg.Go(func() { f.watch(run) })
	f.wg.Go(func() { f.health(run) })
	f.wg.Go(func() { f.handOver(run) })
	f.wg.Go(func() { f.weighDemand(run) })
	return nil
}

// Joined is closed once this replica first holds its share of the fleet's limits.
func (f *Fleet) Joined() <-chan struct{} { return f.joined }

// Up reports whether etcd answered the last check (about once a second).
func (f *Fleet) Up() bool { return f.up.Load() }

// Status is the fleet as this replica sees it now.
func (f *Fleet) Status() Status {
	f.mu.Lock()
	members := make([]string, 0, len(f.members))
	for n := range f.members {
		members = append(members, n)
	}
	sh := f.share
	f.mu.Unlock()
	slices.Sort(members)
	_, in := slices.BinarySearch(sh.latest().nodes, f.o.Node)
	st := Status{Name: f.o.Name, Node: f.o.Node, Members: members, Store: "up", Joined: sh.settled() && in}
	if !f.Up() {
		st.Store = "unavailable"
	}
	return st
}

// Share is this replica's share now.
func (f *Fleet) Share() *Share {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.share
}

// RegisterMetrics adds spillway_cluster_members and spillway_cluster_store_up to reg.
func (f *Fleet) RegisterMetrics(reg prometheus.Registerer) error {
	members := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spillway_cluster_members",
		Help: "Replicas in the fleet, as this replica sees them (members registered in etcd under a live lease)."},
		func() float64 { return float64(len(f.Status().Members)) })
	up := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "spillway_cluster_store_up",
		Help: "1 while the fleet's etcd answers; 0 while it cannot be reached (serving on the last state and shares, runtime changes refused)."},
		func() float64 {
			if f.Up() {
				return 1
			}
			return 0
		})
	return errors.Join(reg.Register(members), reg.Register(up))
}

// Close leaves the fleet: it stops following it and revokes the lease, so that the others
// take this replica's shares back at once rather than after the lease. Call it once the
// replica has stopped serving (its requests in flight hold their part of the budget).
func (f *Fleet) Close() error {
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
	f.mu.Lock()
	lease := f.lease
	f.mu.Unlock()
	if lease != 0 && f.Up() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		f.c.Revoke(ctx, lease) // best effort: otherwise the lease runs out
		cancel()
	}
	return f.c.Close()
}

// health asks etcd for this replica's member key about once a second, with a linearizable
// read (a quorum must answer: an etcd that lost its quorum cannot take changes either), and
// logs each change of reachability once.
func (f *Fleet) health(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c, cancel := context.WithTimeout(ctx, time.Second)
		_, err := f.c.Get(c, f.memberKey(f.o.Node), clientv3.WithCountOnly())
		cancel()
		if ctx.Err() != nil {
			return
		}
		up := err == nil
		if f.up.Swap(up) != up {
			if up {
				f.log.Info("cluster store reachable again: runtime changes accepted", zap.String("cluster", f.o.Name))
			} else {
				f.log.Error("cluster store unavailable: serving with the last state and shares; runtime changes are refused until it is back",
					zap.String("cluster", f.o.Name), zap.Strings("endpoints", f.o.Endpoints), zap.Error(err))
			}
		}
	}
}

// watch follows the member and ack keys. While etcd cannot be reached it keeps what it
// had: the shares stay as they are (fail static).
func (f *Fleet) watch(ctx context.Context) {
	b := newBackoff()
	for ctx.Err() == nil {
		rev, err := f.list(ctx)
		if err != nil {
			if !b.wait(ctx) {
				return
			}
			continue
		}
		b.reset()
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for resp := range f.c.Watch(wctx, f.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if resp.Err() != nil {
				break
			}
			changed := false
			f.mu.Lock()
			for _, ev := range resp.Events {
				changed = f.applyLocked(string(ev.Kv.Key), string(ev.Kv.Value), ev.Kv.CreateRevision, ev.Type == clientv3.EventTypeDelete) || changed
			}
			f.mu.Unlock()
			if changed {
				f.poke()
			}
		}
		cancel()
		if ctx.Err() == nil && !b.wait(ctx) {
			return
		}
	}
}

// list reads the member and ack keys anew, and returns the revision they were read at.
func (f *Fleet) list(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := f.c.Txn(ctx).Then(
		clientv3.OpGet(f.prefix+"members/", clientv3.WithPrefix()),
		clientv3.OpGet(f.prefix+"acks/", clientv3.WithPrefix()),
		clientv3.OpGet(f.prefix+"load/", clientv3.WithPrefix()),
		clientv3.OpGet(f.tableKey())).Commit()
	if err != nil {
		return 0, err
	}
	f.mu.Lock()
	f.members, f.acks, f.loads, f.table = map[string]int64{}, map[string]string{}, map[string]float64{}, nil
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			f.applyLocked(string(kv.Key), string(kv.Value), kv.CreateRevision, false)
		}
	}
	f.mu.Unlock()
	f.poke()
	return resp.Header.Revision, nil
}

// applyLocked records a change of a member or ack key; it reports whether it was one.
func (f *Fleet) applyLocked(key, value string, created int64, deleted bool) bool {
	rest := strings.TrimPrefix(key, f.prefix)
	switch {
	case strings.HasPrefix(rest, "members/"):
		node := strings.TrimPrefix(rest, "members/")
		if deleted {
			delete(f.members, node)
		} else {
			f.members[node] = created
		}
	case strings.HasPrefix(rest, "acks/"):
		node := strings.TrimPrefix(rest, "acks/")
		if deleted {
			delete(f.acks, node)
		} else {
			f.acks[node] = value
		}
	case strings.HasPrefix(rest, "load/"):
		node := strings.TrimPrefix(rest, "load/")
		d, err := strconv.ParseFloat(value, 64)
		if deleted || err != nil {
			delete(f.loads, node)
		} else {
			f.loads[node] = d
		}
		return false // a report changes no view; the coordinator reads it
	case rest == "table":
		var t table
		if deleted || json.Unmarshal([]byte(value), &t) != nil {
			f.table = nil
		} else {
			f.table = &t
		}
	default:
		return false
	}
	return true
}
