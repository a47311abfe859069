package cluster_test

// Faults and attacks on the fleet's etcd store and membership, with a real embedded etcd
// (from review 15; a BUG comment describes the bug its test caught, as it was).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spillway/spillway/proxy/cluster"
	"github.com/spillway/spillway/proxy/cluster/clustertest"
	"github.com/spillway/spillway/proxy/proxytest"
	"github.com/spillway/spillway/proxy/store"
)

// cutProxy is a TCP forwarder in front of etcd that can cut one client off (a network
// partition between one replica and etcd) and let it through again, on the same address.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		ln.Close()
		p.setDown(true)
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			c.Close()
			continue
		}
		u, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { io.Copy(u, c); u.Close(); c.Close() })
		p.wg.Go(func() { io.Copy(c, u); u.Close(); c.Close() })
	}
}

// setDown cuts every connection and refuses new ones (down), or lets them through again.
func (p *cutProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// BUG (store.Store contract, "after an error, neither"): Commit sends its transaction and,
// when the answer is lost (etcd stops, or the connection breaks, after it applied the
// transaction but before the reply reaches the replica), reports ErrUnavailable — which the
// proxy turns into a 503 "the change was not applied" — although the edits and the audit
// entry are in etcd, and every replica (this one too, through its watch) applies them.
// Cause: proxy/cluster/store.go, Commit: a Txn error is returned as unavailable without
// finding out whether the transaction was applied.
func TestCommitLostReplyIsNotNeither(t *testing.T) {
	etcd := clustertest.Start(t, 1)
	var lose atomic.Bool
	loseTxnReply := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if method == "/etcdserverpb.KV/Txn" && err == nil && lose.Load() {
			return status.Error(codes.Unavailable, "connection lost before the reply (simulated)")
		}
		return err
	}
	c := clustertest.Client(t, etcd.Endpoints(), grpc.WithChainUnaryInterceptor(loseTxnReply))
	s := cluster.NewStore(c, "prod", "a", 0, zap.NewNop())
	ctx := t.Context()

	lose.Store(true)
	d := store.Drain{By: "alice", Since: time.Now().UTC()}
	_, err := s.Commit(ctx, store.Change{Who: "alice", Action: "drain", Site: "idc1", Time: time.Now()}, store.Edit{Site: "idc1", Drain: &d})
	lose.Store(false)

	st, lerr := s.Load(ctx)
	if lerr != nil {
		t.Fatal(lerr)
	}
	entries, _, cerr := s.Changes(ctx, 0, 10)
	if cerr != nil {
		t.Fatal(cerr)
	}
	_, drained := st.Drains["idc1"]
	if err != nil && (drained || len(entries) > 0) {
		t.Fatalf("Commit returned %v (the operator is told the drain was not applied), yet the drain is stored (%v) with %d audit entries: an error must mean neither", err, drained, len(entries))
	}
	if err == nil && !(drained && len(entries) == 1) {
		t.Fatalf("Commit succeeded but drain stored=%v entries=%d", drained, len(entries))
	}
}

// BUG (store.Store contract; Memory applies edits in order): two edits of the same site's
// override in one Commit (set, then clear) make etcd refuse the transaction ("duplicate key
// given in txn request"), and Commit reports it as ErrUnavailable, the store being down,
// although etcd answered. Cause: proxy/cluster/store.go, Commit builds one Op per edit
// without folding edits of the same key, and wraps every Txn error with unavailable().
// Fix: fold the edits per key (the last wins, as State.Apply does) before building the Txn.
func TestCommitTwoEditsOfOneSite(t *testing.T) {
	etcd := clustertest.Start(t, 1)
	c := clustertest.Client(t, etcd.Endpoints())
	s := cluster.NewStore(c, "prod", "a", 0, zap.NewNop())
	o := store.Override{Weight: 7, From: 7, Start: time.Now().UTC(), End: time.Now().UTC(), By: "alice"}
	_, err := s.Commit(t.Context(), store.Change{Who: "alice", Action: "weight", Site: "idc1", Time: time.Now()},
		store.Edit{Site: "idc1", Override: &o}, store.Edit{Site: "idc1", ClearOverride: true})
	if err != nil {
		t.Fatalf("Commit of two edits of one site: %v (unavailable: %v)", err, errors.Is(err, store.ErrUnavailable))
	}
	st, err := s.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Overrides["idc1"]; ok {
		t.Fatalf("the later edit (clear) must win, as store.State.Apply does: %+v", st.Overrides)
	}
}

// Contract checks that hold (worth keeping): concurrent commits from two replicas get
// unique, consecutive IDs; the last writer (highest ID) is the value stored; Changes pages
// newest first without gaps or repeats; Load refuses a value it cannot parse; a stopped
// etcd is ErrUnavailable within a bound.
func TestStoreContract(t *testing.T) {
	etcd := clustertest.Start(t, 1)
	ctx := t.Context()
	sa := cluster.NewStore(clustertest.Client(t, etcd.Endpoints()), "prod", "a", 5, zap.NewNop())
	sb := cluster.NewStore(clustertest.Client(t, etcd.Endpoints()), "prod", "b", 5, zap.NewNop())

	const per = 10
	var wg sync.WaitGroup
	errs := make(chan error, 2*per)
	for i, s := range []*cluster.Store{sa, sb} {
		wg.Go(func() {
			for j := range per {
				w := 1 + i*per + j
				o := store.Override{Weight: w, From: float64(w), By: fmt.Sprint(i)}
				if _, err := s.Commit(ctx, store.Change{Who: fmt.Sprint(i), Action: "weight", Site: "idc1", After: fmt.Sprint(w), Time: time.Now()},
					store.Edit{Site: "idc1", Override: &o}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// keep 5: the newest 5 of 20, paged 2 at a time, newest first.
	var got []store.Change
	var before uint64
	for {
		page, total, err := sa.Changes(ctx, before, 2)
		if err != nil {
			t.Fatal(err)
		}
		if total != 5 {
			t.Fatalf("total %d, want 5 kept", total)
		}
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		before = page[len(page)-1].ID
	}
	if len(got) != 5 {
		t.Fatalf("paged %d entries, want 5", len(got))
	}
	for i, c := range got {
		if c.ID != uint64(20-i) {
			t.Fatalf("entry %d has ID %d, want %d (newest first, consecutive): %+v", i, c.ID, 20-i, got)
		}
	}
	st, err := sb.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(st.Overrides["idc1"].Weight) != got[0].After {
		t.Fatalf("stored weight %d is not the last writer's (entry %d: %s)", st.Overrides["idc1"].Weight, got[0].ID, got[0].After)
	}

	// A value that does not parse: Load refuses it.
	if _, err := clustertest.Client(t, etcd.Endpoints()).Put(ctx, cluster.Prefix("prod")+"state/drains/idc2", "{not json"); err != nil {
		t.Fatal(err)
	}
	if _, err := sa.Load(ctx); err == nil {
		t.Fatal("Load read a drain that does not parse without an error")
	}

	// etcd stopped: ErrUnavailable, within opTimeout and some.
	etcd.Stop()
	start := time.Now()
	d := store.Drain{By: "x"}
	_, err = sa.Commit(ctx, store.Change{Who: "x", Action: "drain", Site: "idc1", Time: time.Now()}, store.Edit{Site: "idc1", Drain: &d})
	if !errors.Is(err, store.ErrUnavailable) || time.Since(start) > 10*time.Second {
		t.Fatalf("Commit with etcd stopped: %v after %s, want ErrUnavailable within 10s", err, time.Since(start))
	}
}

// A watch whose replica was cut off from etcd while others changed the state and etcd
// compacted past the watch's revision recovers: once the replica reaches etcd again it
// delivers the newest state (passes; worth keeping).
func TestWatchRecoversAfterCompaction(t *testing.T) {
	etcd := clustertest.Start(t, 1)
	cut := newCutProxy(t, etcd.Endpoints()[0][len("http://"):])
	watched := cluster.NewStore(clustertest.Client(t, []string{cut.URL()}), "prod", "w", 0, zap.NewNop())
	direct := clustertest.Client(t, etcd.Endpoints())
	other := cluster.NewStore(direct, "prod", "o", 0, zap.NewNop())

	var last atomic.Pointer[store.State]
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); watched.Watch(ctx, func(s store.State) { last.Store(&s) }) }()
	defer func() { cancel(); <-done }()

	drain := func(site string) {
		d := store.Drain{By: "o", Since: time.Now().UTC()}
		if _, err := other.Commit(t.Context(), store.Change{Who: "o", Action: "drain", Site: site, Time: time.Now()}, store.Edit{Site: site, Drain: &d}); err != nil {
			t.Fatal(err)
		}
	}
	has := func(site string) bool {
		s := last.Load()
		if s == nil {
			return false
		}
		_, ok := s.Drains[site]
		return ok
	}
	drain("idc1")
	proxytest.Eventually(t, 10*time.Second, "the watch delivers idc1's drain", func() bool { return has("idc1") })

	cut.setDown(true)
	for i := range 5 {
		drain(fmt.Sprintf("s%d", i))
	}
	clustertest.CompactNow(t, direct)
	cut.setDown(false)
	proxytest.Eventually(t, 20*time.Second, "the watch delivers the state made while it was cut off, past a compaction", func() bool { return has("s4") })
}

// Fleet: the members' watch recovers past a compaction too — a replica cut off from etcd
// (for less than its lease) while another joined and history was compacted sees the new
// member and hands over (passes; worth keeping).
func TestFleetWatchRecoversAfterCompaction(t *testing.T) {
	etcd := clustertest.Start(t, 1)
	cut := newCutProxy(t, etcd.Endpoints()[0][len("http://"):])
	a := clustertest.Join(t, []string{cut.URL()}, "a", 10*time.Second)
	a.Joined(t)
	cut.setDown(true)
	b := clustertest.Join(t, etcd.Endpoints(), "b", 10*time.Second)
	direct := clustertest.Client(t, etcd.Endpoints())
	for i := range 20 { // history to compact
		if _, err := direct.Put(t.Context(), "/spillway/prod/noise", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	clustertest.CompactNow(t, direct)
	cut.setDown(false)
	b.Joined(t)
	proxytest.Eventually(t, 20*time.Second, "a sees b and holds half", func() bool {
		return len(a.Status().Members) == 2 && a.Share().Of(backends()[0], 10) == 5
	})
}

// Two replicas joining at the same instant never make the fleet hold more than a limit,
// and both end up with equal shares (passes; worth keeping).
func TestTwoJoinAtOnce(t *testing.T) {
	etcd := clustertest.Start(t, 1)
	a := clustertest.Join(t, etcd.Endpoints(), "a", 2*time.Second)
	a.Joined(t)
	var mu sync.Mutex
	all := []*clustertest.Replica{a}
	stop := make(chan struct{})
	over := watchBudget(func() []*clustertest.Replica {
		mu.Lock()
		defer mu.Unlock()
		return append([]*clustertest.Replica(nil), all...)
	}, stop)
	var wg sync.WaitGroup
	rs := make([]*clustertest.Replica, 2)
	for i, n := range []string{"b", "c"} {
		rs[i] = clustertest.Open(t, cluster.Options{Node: n, Endpoints: etcd.Endpoints(), Lease: 2 * time.Second})
	}
	mu.Lock()
	all = append(all, rs...)
	mu.Unlock()
	for _, r := range rs {
		wg.Go(func() {
			if err := r.Start(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, r := range rs {
		r.Joined(t)
	}
	proxytest.Eventually(t, 30*time.Second, "3 replicas share 99 as 33 each", func() bool {
		for _, r := range []*clustertest.Replica{a, rs[0], rs[1]} {
			if s := r.Share(); s == nil || s.Of(backends()[0], 99) != 33 {
				return false
			}
		}
		return true
	})
	close(stop)
	if n := over.Load(); n > 0 {
		t.Fatalf("the fleet held more than a limit in %d samples while two joined at once", n)
	}
}

// Close with etcd down returns within a bound and leaves no goroutine behind (TestMain's
// goleak) (passes; worth keeping).
func TestCloseWithEtcdDown(t *testing.T) {
	etcd := clustertest.Start(t, 1)
	f, err := cluster.Open(cluster.Options{Name: "prod", Node: "a", Endpoints: etcd.Endpoints(), Lease: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	<-f.Joined()
	etcd.Stop()
	time.Sleep(1500 * time.Millisecond) // let the health check find out, or not
	done := make(chan struct{})
	go func() { f.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("Close with etcd down did not return within 15s")
	}
}

// slowEtcd starts one embedded etcd member with WAN-like raft timing (heartbeat
// 100 ms, election 3 s — etcd's advice for members far apart, as IDC1, IDC2 and AWS are).
// etcd's shortest lease is then 1.5 × the election timeout, rounded up: 5 s.
func slowEtcd(t *testing.T) []string {
	t.Helper()
	free := func() url.URL {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return url.URL{Scheme: "http", Host: ln.Addr().String()}
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = "slow", t.TempDir()
	c, p := free(), free()
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{c}, []url.URL{c}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{p}, []url.URL{p}
	cfg.ListenMetricsUrls = nil
	cfg.InitialCluster = "slow=" + p.String()
	cfg.UnsafeNoFsync = true
	cfg.TickMs, cfg.ElectionMs = 100, 3000
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		t.Fatal("slow etcd not ready in 60s")
	}
	return []string{c.String()}
}

// BUG (a dead replica's share returns within lease + 1 s): etcd does not grant a lease
// shorter than its minimum (1.5 × its election timeout), and returns the TTL it granted; the
// fleet ignores it. Against an etcd tuned for a WAN (election 3 s → minimum 5 s), a fleet
// with lease: 2s (valid: 2s..5m) silently holds a dead replica's share for 5 s, not 3, and
// nothing says so. Cause: proxy/cluster/fleet.go, register: g.TTL from Grant is not compared
// with the TTL asked for. Fix: when g.TTL > the lease asked for, warn at start (or refuse),
// naming etcd's minimum, and report the effective lease in the state API.
func TestLeaseShorterThanEtcdMinimum(t *testing.T) {
	endpoints := slowEtcd(t)
	core, logs := observer.New(zap.WarnLevel)
	const lease = 2 * time.Second
	a := clustertest.JoinWith(t, cluster.Options{Node: "a", Endpoints: endpoints, Lease: lease, Log: zap.New(core)})
	a.Joined(t)
	b := clustertest.Join(t, endpoints, "b", lease)
	b.Joined(t)
	id := backends()[0]
	proxytest.Eventually(t, 30*time.Second, "a holds half of 10", func() bool { return a.Share().Of(id, 10) == 5 })

	warned := func() bool {
		for _, e := range logs.All() {
			s := e.Message + fmt.Sprint(e.ContextMap())
			if strings.Contains(s, "lease") || strings.Contains(s, "TTL") {
				return true
			}
		}
		return false
	}
	b.Crash()
	start := time.Now()
	proxytest.Eventually(t, 30*time.Second, "a takes b's share back", func() bool { return a.Share().Of(id, 10) == 10 })
	took := time.Since(start)
	if took > lease+1500*time.Millisecond && !warned() {
		t.Fatalf("a dead replica's share came back after %s with lease %s (etcd's minimum lease is 5s), and nothing was logged about the lease", took.Round(100*time.Millisecond), lease)
	}
}

// BUG (same cause as above, worse effect): a replica restarted right after a crash waits for
// its predecessor's lease for at most lease + 2 s (claim), but etcd keeps the predecessor's
// key for its own minimum lease (5 s here): the restarted replica does not start, told that
// "another running replica is registered under this node name" — a crash loop under a
// supervisor that restarts at once. Cause: proxy/cluster/fleet.go, claim's deadline uses
// Options.Lease, not the TTL etcd granted (or the old key's lease's TTL, which
// clientv3 TimeToLive would give). Fix: wait for the old key's lease (TimeToLive) to run out.
func TestRestartAfterCrashWithEtcdMinimumLease(t *testing.T) {
	endpoints := slowEtcd(t)
	const lease = 2 * time.Second
	a := clustertest.Join(t, endpoints, "a", lease)
	a.Joined(t)
	a.Crash()
	f, err := cluster.Open(cluster.Options{Name: "prod", Node: "a", Endpoints: endpoints, Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Start(t.Context()); err != nil {
		t.Fatalf("a restarted after a crash: %v", err)
	}
}

// BUG (fail silent): one value under state/ that does not parse (written by hand, or by a
// newer version) is ignored by a running watch, but once that watch has to start again (a
// compaction past its revision, a lost leader) Store.Watch cannot Load the state and retries
// forever, logging only at Debug: from then on no change made by any replica reaches this
// one — the fleet's state silently stops propagating, while changes are still accepted
// (and 200'd) everywhere. Cause: proxy/cluster/store.go, Watch: a Load error other than
// unavailability is retried with a debug log, and nothing is delivered; follow and Load
// disagree about a bad value (ignored vs fatal). Fix: in Watch, apply what parses and keep
// the value in effect for a key that does not (as follow does), logging at Error, or at
// least log at Error and report the store as unhealthy.
func TestWatchSurvivesOneBadValue(t *testing.T) {
	etcd := clustertest.Start(t, 1)
	cut := newCutProxy(t, etcd.Endpoints()[0][len("http://"):])
	watched := cluster.NewStore(clustertest.Client(t, []string{cut.URL()}), "prod", "w", 0, zaptest.NewLogger(t))
	direct := clustertest.Client(t, etcd.Endpoints())
	other := cluster.NewStore(direct, "prod", "o", 0, zap.NewNop())

	var last atomic.Pointer[store.State]
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); watched.Watch(ctx, func(s store.State) { last.Store(&s) }) }()
	defer func() { cancel(); <-done }()
	has := func(site string) bool {
		s := last.Load()
		if s == nil {
			return false
		}
		_, ok := s.Drains[site]
		return ok
	}
	drain := func(site string) {
		d := store.Drain{By: "o", Since: time.Now().UTC()}
		if _, err := other.Commit(t.Context(), store.Change{Who: "o", Action: "drain", Site: site, Time: time.Now()}, store.Edit{Site: site, Drain: &d}); err != nil {
			t.Fatal(err)
		}
	}
	drain("idc1")
	proxytest.Eventually(t, 10*time.Second, "the watch delivers idc1's drain", func() bool { return has("idc1") })
	if _, err := direct.Put(t.Context(), cluster.Prefix("prod")+"state/overrides/legacy", `{"weight":"seven"}`); err != nil {
		t.Fatal(err)
	}
	drain("idc2")
	proxytest.Eventually(t, 10*time.Second, "the running watch ignores the bad value and delivers idc2's drain", func() bool { return has("idc2") })

	// The watch has to start again: cut off while history is compacted past it.
	cut.setDown(true)
	drain("aws")
	if _, err := direct.Put(t.Context(), "/elsewhere", "noise"); err != nil { // the compaction must pass aws's revision
		t.Fatal(err)
	}
	clustertest.CompactNow(t, direct)
	cut.setDown(false)
	drain("idc3")
	deadline := time.Now().Add(15 * time.Second)
	for !(has("aws") && has("idc3")) {
		if time.Now().After(deadline) {
			t.Fatal("15s after the watch had to start again, the drains of aws and idc3 (made through another replica, stored, 200) never reached this replica: one unparsable key elsewhere froze its state")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
