package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/balancer/discovery/dnstest"
	"github.com/spillway/spillway/proxy/proxytest"
	"github.com/spillway/spillway/proxy/runtime"
)

// runTable runs the Table's background work (health checks, discovery) until the test ends.
func (e *env) runTable(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { runtime.RunTable(ctx, e.table, nil) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// The elastic pool grows and shrinks with DNS: members that join raise the site's limit and
// end the shedding; a member that leaves finishes what it has and gets nothing new; a DNS
// failure keeps the pool as it was.
func TestDNSDiscoveryGrowsAndDrainsThePool(t *testing.T) {
	dns := dnstest.Start(t)
	idc := proxytest.NewCapBackend(t, "idc1", true)
	aws := []*proxytest.CapBackend{proxytest.NewCapBackend(t, "aws", true), proxytest.NewCapBackend(t, "aws", true), proxytest.NewCapBackend(t, "aws", true)}
	const srvName = "_app._tcp.aws.spillway.test."
	records := make([]dnstest.SRV, len(aws))
	for i, b := range aws {
		u, _ := url.Parse(b.URL)
		port, _ := strconv.Atoi(u.Port())
		host := fmt.Sprintf("b%d.aws.spillway.test.", i)
		dns.SetA(host, "127.0.0.1")
		records[i] = dnstest.SRV{Target: host, Port: uint16(port)}
	}
	dns.SetSRV(srvName, records[0])
	e := startProxy(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 1, backends: [%q], max_inflight: 1}
  - name: aws
    weight: 0
    elastic: true
    max_inflight: 2
    discovery: {dns: %q, resolver: %q, interval: 20ms}
spillover: {queue: {size: 0, timeout: 1s}}
retries: {attempts: 1}
`, idc.URL, srvName, dns.Addr))
	e.runTable(t)
	awsLimit := func() int64 { return e.table.Status()[1].Limit }
	proxytest.WaitFor(t, "the first member", func() bool { return awsLimit() == 2 })

	statuses := make(chan int, 20)
	send := func() {
		go func() {
			resp, err := e.client.Get(e.url + "/")
			if err != nil {
				statuses <- -1
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	// Capacity 3 (idc1 1, aws 2): the fourth request is shed.
	for range 3 {
		send()
	}
	proxytest.Receive(t, idc.Arrived, "idc1's request")
	proxytest.Receive(t, aws[0].Arrived, "aws b0's first")
	proxytest.Receive(t, aws[0].Arrived, "aws b0's second")
	send()
	if s := proxytest.Receive(t, statuses, "the shed request"); s != http.StatusServiceUnavailable {
		t.Fatalf("status %d with every slot taken and no queue, want 503", s)
	}
	if n := e.reg.Sheds()[balancer.ShedQueueFull]; n != 1 {
		t.Fatalf("sheds %d, want 1", n)
	}

	// Two instances join: the limit grows to 6 and four more requests all find room.
	dns.SetSRV(srvName, records...)
	proxytest.WaitFor(t, "the pool to grow", func() bool { return awsLimit() == 6 })
	for range 4 {
		send()
	}
	for _, b := range aws[1:] {
		proxytest.Receive(t, b.Arrived, "a request at a new member")
		proxytest.Receive(t, b.Arrived, "a request at a new member")
	}
	if n := e.reg.Sheds()[balancer.ShedQueueFull]; n != 1 {
		t.Fatalf("sheds %d after the pool grew, want still 1", n)
	}

	// b0 leaves DNS with two requests in flight: they finish; it gets nothing new.
	dns.SetSRV(srvName, records[1:]...)
	proxytest.WaitFor(t, "b0 to leave", func() bool { return awsLimit() == 4 })
	aws[0].Release <- struct{}{}
	aws[0].Release <- struct{}{}
	for range 2 {
		if s := proxytest.Receive(t, statuses, "a draining member's answer"); s != http.StatusOK {
			t.Fatalf("a request on a member that left DNS got %d, want 200 (drain, not cut)", s)
		}
	}
	for _, b := range aws[1:] {
		b.Release <- struct{}{}
	}
	for range 2 {
		if s := proxytest.Receive(t, statuses, "an answer"); s != http.StatusOK {
			t.Fatalf("status %d", s)
		}
	}
	send()
	send() // b1 and b2 each have one free slot now, b0 is gone
	for range 2 {
		select {
		case <-aws[1].Arrived:
		case <-aws[2].Arrived:
		case <-aws[0].Arrived:
			t.Fatal("a member that left DNS got a new request")
		case <-time.After(proxytest.Liveness):
			t.Fatal("timed out waiting for the requests to reach b1 and b2")
		}
	}

	// DNS fails: the pool stays as it was.
	dns.SetMode(dnstest.ServFail)
	for range 3 {
		proxytest.Receive(t, dns.Asked, "a DNS query")
	}
	if l := awsLimit(); l != 4 {
		t.Fatalf("aws limit %d after DNS failures, want 4 (the last good set)", l)
	}
	proxytest.WaitFor(t, "the failures to be counted", func() bool { return e.reg.Site("aws").DiscoveryFailures().Load() > 0 })

	for _, b := range append([]*proxytest.CapBackend{idc}, aws...) {
		for range 5 {
			b.Release <- struct{}{}
		}
	}
	for range 3 {
		if s := proxytest.Receive(t, statuses, "the rest"); s != http.StatusOK {
			t.Errorf("status %d", s)
		}
	}
	for _, b := range append([]*proxytest.CapBackend{idc}, aws...) {
		close(b.Arrived)
	}
	e.checkIdle(t)
}

// R5: every discovery update stops all of the site's health checks and starts new ones
// (SetMembers), so rise/fall counters restart from zero. A pool whose member list changes
// more often than fall × interval (autoscaling churn, a DNS answer that returns a rotating
// subset) never marks a dead member down: it keeps getting traffic.
func TestDiscoveryChurnKeepsHealthChecks(t *testing.T) {
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer live.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer other.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close() // connection refused from now on
	dir := t.TempDir()
	path := filepath.Join(dir, "targets.txt")
	write := func(members ...string) {
		tmp := filepath.Join(dir, "tmp")
		os.WriteFile(tmp, []byte(strings.Join(members, "\n")+"\n"), 0o644)
		os.Rename(tmp, path)
	}
	host := func(u string) string { return strings.TrimPrefix(u, "http://") }
	write(host(live.URL), dead)
	e := startProxy(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - name: aws
    weight: 1
    elastic: true
    max_inflight: 10
    discovery: {file: %q, interval: 10s}
    health: {path: /, interval: 200ms, timeout: 50ms, fall: 3, rise: 1}
`, path))
	e.runTable(t)
	deadID := balancer.BackendID{Site: "aws", Addr: "http://" + dead}
	isDown := func() bool { b, ok := e.reg.Lookup(deadID); return ok && !b.Healthy() }
	// Churn: a third member comes and goes every 150ms, faster than fall × interval. The
	// dead member must still go down while it goes on (bounded by proxytest.Liveness): restarting
	// every member's checks on each change would keep resetting its count of failures.
	deadline := time.Now().Add(proxytest.Liveness)
	for i := 0; !isDown(); i++ {
		if time.Now().After(deadline) {
			t.Fatalf("dead member still up after %v of membership churn (fall 3 × 200ms)", proxytest.Liveness)
		}
		if i%2 == 0 {
			write(host(live.URL), dead, host(other.URL))
		} else {
			write(host(live.URL), dead)
		}
		time.Sleep(150 * time.Millisecond) // the churn's pace, not a synchronisation
	}
}

func TestDiscoveredPoolRampsAtStartup(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer be.Close()
	path := filepath.Join(t.TempDir(), "targets.txt")
	os.WriteFile(path, []byte(strings.TrimPrefix(be.URL, "http://")+"\n"), 0o644)
	e := startProxy(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: aws, weight: 1, elastic: true, max_inflight: 100, slow_start: 1m, discovery: {file: %q, interval: 10s}}
`, path))
	e.runTable(t)
	proxytest.WaitFor(t, "first member", func() bool { return len(e.table.Status()[0].Backends) == 1 })
	if b := e.table.Status()[0].Backends[0]; b.Limit != 100 {
		t.Errorf("first config's discovered member at startup: limit %d ramp %.2f, want 100", b.Limit, b.Ramp)
	}
}
