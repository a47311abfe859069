// Package clustertest is what the fleet's tests share: real etcd members run in the test's
// process (go.etcd.io/etcd/server/v3/embed) on loopback, on free ports, with their data in
// the test's temporary directory, so that `go test ./...` needs no etcd installed (a member
// can be stopped and started again on the same ports and data: etcd down, etcd back); and
// replicas of a fleet joined to them, with the shares they publish.
package clustertest

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Cluster is one or more etcd members that form one etcd cluster.
type Cluster struct {
	t       testing.TB
	members []*Member
}

// Member is one etcd member.
type Member struct {
	t         testing.TB
	name, dir string
	client    url.URL
	peer      url.URL
	initial   string
	mu        sync.Mutex
	etcd      *embed.Etcd
	existing  bool
}

// Start runs an etcd cluster of n members and stops it when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	var initial []string
	for i := range n {
		m := &Member{t: t, name: fmt.Sprintf("m%d", i), dir: t.TempDir(), client: freeURL(t), peer: freeURL(t)}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peer.String())
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, m := range c.members {
		m.initial = strings.Join(initial, ",")
		wg.Go(func() { errs[i] = m.start() })
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, m := range c.members {
			m.Stop()
		}
	})
	for _, err := range errs {
		if err != nil {
			t.Fatalf("etcd: %v", err)
		}
	}
	return c
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.client.String())
	}
	return eps
}

// Member is the i-th member.
func (c *Cluster) Member(i int) *Member { return c.members[i] }

// Stop stops every member.
func (c *Cluster) Stop() {
	for _, m := range c.members {
		m.Stop()
	}
}

// Restart starts every stopped member again, on its ports and data.
func (c *Cluster) Restart() {
	c.t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(c.members))
	for i, m := range c.members {
		wg.Go(func() { errs[i] = m.start() })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			c.t.Fatalf("etcd restart: %v", err)
		}
	}
}

func (m *Member) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.etcd != nil {
		return nil
	}
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dir
	cfg.ListenClientUrls = []url.URL{m.client}
	cfg.AdvertiseClientUrls = []url.URL{m.client}
	cfg.ListenPeerUrls = []url.URL{m.peer}
	cfg.AdvertisePeerUrls = []url.URL{m.peer}
	cfg.ListenMetricsUrls = nil
	cfg.InitialCluster = m.initial
	if m.existing {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	cfg.UnsafeNoFsync = true
	cfg.TickMs, cfg.ElectionMs = 50, 500
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	var e *embed.Etcd
	var err error
	for range 50 { // a port just closed may take a moment to be free again
		if e, err = embed.StartEtcd(cfg); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("start %s: %w", m.name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		return fmt.Errorf("start %s: not ready after 60s", m.name)
	}
	m.etcd, m.existing = e, true
	return nil
}

// Start starts the member again after Stop.
func (m *Member) Start() {
	m.t.Helper()
	if err := m.start(); err != nil {
		m.t.Fatalf("etcd: %v", err)
	}
}

// Stop stops the member; its clients' requests fail (or wait) until it starts again.
func (m *Member) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.etcd != nil {
		m.etcd.Close()
		m.etcd = nil
	}
}

// freeURL is an http://127.0.0.1:port URL on a port free now.
func freeURL(t testing.TB) url.URL {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return url.URL{Scheme: "http", Host: ln.Addr().String()}
}
