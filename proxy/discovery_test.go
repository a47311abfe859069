package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/balancer/discovery/dnstest"
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
	idc := newCapBackend(t, "idc1", true)
	aws := []*capBackend{newCapBackend(t, "aws", true), newCapBackend(t, "aws", true), newCapBackend(t, "aws", true)}
	const srvName = "_app._tcp.aws.spillway.test."
	records := make([]dnstest.SRV, len(aws))
	for i, b := range aws {
		u, _ := url.Parse(b.url)
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
`, idc.url, srvName, dns.Addr))
	e.runTable(t)
	awsLimit := func() int64 { return e.table.Status()[1].Limit }
	waitFor(t, "the first member", func() bool { return awsLimit() == 2 })

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
	await(t, idc.arrived, "idc1's request")
	await(t, aws[0].arrived, "aws b0's first")
	await(t, aws[0].arrived, "aws b0's second")
	send()
	if s := await(t, statuses, "the shed request"); s != http.StatusServiceUnavailable {
		t.Fatalf("status %d with every slot taken and no queue, want 503", s)
	}
	if n := e.reg.Sheds()[balancer.ShedQueueFull]; n != 1 {
		t.Fatalf("sheds %d, want 1", n)
	}

	// Two instances join: the limit grows to 6 and four more requests all find room.
	dns.SetSRV(srvName, records...)
	waitFor(t, "the pool to grow", func() bool { return awsLimit() == 6 })
	for range 4 {
		send()
	}
	for _, b := range aws[1:] {
		await(t, b.arrived, "a request at a new member")
		await(t, b.arrived, "a request at a new member")
	}
	if n := e.reg.Sheds()[balancer.ShedQueueFull]; n != 1 {
		t.Fatalf("sheds %d after the pool grew, want still 1", n)
	}

	// b0 leaves DNS with two requests in flight: they finish; it gets nothing new.
	dns.SetSRV(srvName, records[1:]...)
	waitFor(t, "b0 to leave", func() bool { return awsLimit() == 4 })
	aws[0].release <- struct{}{}
	aws[0].release <- struct{}{}
	for range 2 {
		if s := await(t, statuses, "a draining member's answer"); s != http.StatusOK {
			t.Fatalf("a request on a member that left DNS got %d, want 200 (drain, not cut)", s)
		}
	}
	for _, b := range aws[1:] {
		b.release <- struct{}{}
	}
	for range 2 {
		if s := await(t, statuses, "an answer"); s != http.StatusOK {
			t.Fatalf("status %d", s)
		}
	}
	send()
	send() // b1 and b2 each have one free slot now, b0 is gone
	for range 2 {
		select {
		case <-aws[1].arrived:
		case <-aws[2].arrived:
		case <-aws[0].arrived:
			t.Fatal("a member that left DNS got a new request")
		case <-time.After(liveness):
			t.Fatal("timed out waiting for the requests to reach b1 and b2")
		}
	}

	// DNS fails: the pool stays as it was.
	dns.SetMode(dnstest.ServFail)
	for range 3 {
		await(t, dns.Asked, "a DNS query")
	}
	if l := awsLimit(); l != 4 {
		t.Fatalf("aws limit %d after DNS failures, want 4 (the last good set)", l)
	}
	waitFor(t, "the failures to be counted", func() bool { return e.reg.Site("aws").DiscoveryFailures().Load() > 0 })

	for _, b := range append([]*capBackend{idc}, aws...) {
		for range 5 {
			b.release <- struct{}{}
		}
	}
	for range 3 {
		if s := await(t, statuses, "the rest"); s != http.StatusOK {
			t.Errorf("status %d", s)
		}
	}
	for _, b := range append([]*capBackend{idc}, aws...) {
		close(b.arrived)
	}
	e.checkIdle(t)
}
