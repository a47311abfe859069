package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spillway/spillway/balancer/discovery"
	"go.uber.org/goleak"
)

// interval is the DNS re-resolve interval of the tests that Run: short, so that a change
// is seen at once; each wait is still bounded by the generous wait.
const interval = 50 * time.Millisecond

func TestDNSAddressesGrowAndShrink(t *testing.T) {
	s := startDNS(t)
	s.SetA("app.spillway.test", "127.0.0.2")
	d, u, _ := newDiscoverer(t, discovery.Options{
		DNS: "app.spillway.test:8080", Resolver: s.Addr, Interval: interval,
	})
	if err := d.Resolve(t.Context()); err != nil {
		t.Fatalf("first Resolve: %v", err)
	}
	if got, want := u.next(t), []string{"127.0.0.2:8080"}; !slices.Equal(got, want) {
		t.Fatalf("first Update %q, want %q", got, want)
	}
	run(t, d, u)

	s.SetA("app.spillway.test", "127.0.0.2", "127.0.0.3", "::1")
	u.until(t, "127.0.0.2:8080", "127.0.0.3:8080", "[::1]:8080")
	s.SetA("app.spillway.test", "127.0.0.3")
	u.until(t, "127.0.0.3:8080")

	if got, want := d.Members(), []string{"127.0.0.3:8080"}; !slices.Equal(got, want) {
		t.Errorf("Members() = %q, want %q", got, want)
	}
	if n := d.Failures(); n != 0 {
		t.Errorf("Failures() = %d, want 0", n)
	}
}

func TestDNSSRV(t *testing.T) {
	const name = "_app._tcp.spillway.test"
	s := startDNS(t)
	s.SetA("a.spillway.test", "127.0.0.2")
	s.SetA("b.spillway.test", "127.0.0.3", "::1")
	s.SetA("c.spillway.test", "127.0.0.4")
	s.SetSRV(name, srvRecord{Target: "a.spillway.test", Port: 8080}, srvRecord{Target: "b.spillway.test", Port: 9090})
	d, u, l := newDiscoverer(t, discovery.Options{DNS: name, Resolver: s.Addr, Interval: interval})
	run(t, d, u)
	u.until(t, "127.0.0.2:8080", "127.0.0.3:9090", "[::1]:9090")

	// An instance joins.
	s.SetSRV(name, srvRecord{Target: "a.spillway.test", Port: 8080}, srvRecord{Target: "b.spillway.test", Port: 9090},
		srvRecord{Target: "c.spillway.test", Port: 8081})
	u.until(t, "127.0.0.2:8080", "127.0.0.3:9090", "[::1]:9090", "127.0.0.4:8081")

	// One leaves, one moves to another port.
	s.SetSRV(name, srvRecord{Target: "b.spillway.test", Port: 9091}, srvRecord{Target: "c.spillway.test", Port: 8081})
	u.until(t, "127.0.0.3:9091", "[::1]:9091", "127.0.0.4:8081")

	// Two targets on one address and port are one member.
	s.SetA("d.spillway.test", "127.0.0.4")
	s.SetSRV(name, srvRecord{Target: "c.spillway.test", Port: 8081}, srvRecord{Target: "d.spillway.test", Port: 8081})
	u.until(t, "127.0.0.4:8081")

	// A target with no address is left out with a warning, the others stay: not a failure.
	s.SetSRV(name, srvRecord{Target: "c.spillway.test", Port: 8081}, srvRecord{Target: "gone.spillway.test", Port: 8080},
		srvRecord{Target: "b.spillway.test", Port: 9091})
	u.until(t, "127.0.0.3:9091", "[::1]:9091", "127.0.0.4:8081")
	missing := l.until(t, "SRV target has no address, left out", 1)
	if got := missing[0].ContextMap()["target"]; got != "gone.spillway.test." {
		t.Errorf("missing target logged as %v, want gone.spillway.test.", got)
	}
	if n := d.Failures(); n != 0 {
		t.Errorf("Failures() = %d, want 0", n)
	}
}

// TestDNSFailuresKeepLastSet pins the contract: whatever way DNS fails, the last good set
// stays, no Update is called, and the failure is logged and counted; the next good answer
// is used again.
func TestDNSFailuresKeepLastSet(t *testing.T) {
	tests := []struct {
		name     string
		dns      string
		fail     func(s *dnsServer)
		noMember bool // the failure is ErrNoMembers
		forGood  bool // the server stays down: no healing
	}{
		{name: "SERVFAIL", fail: func(s *dnsServer) { s.SetMode(servfail) }},
		{name: "NXDOMAIN", fail: func(s *dnsServer) { s.SetMode(nxdomain) }},
		{name: "REFUSED", fail: func(s *dnsServer) { s.SetMode(refused) }},
		{name: "empty answer", fail: func(s *dnsServer) { s.SetMode(empty) }},
		{name: "name removed", fail: func(s *dnsServer) { s.SetA("app.spillway.test") }},
		{name: "timeout", fail: func(s *dnsServer) { s.SetMode(silent) }},
		{name: "server stopped", fail: func(s *dnsServer) { s.Stop() }, forGood: true},
		{
			name: "SRV SERVFAIL", dns: "_app._tcp.spillway.test",
			fail: func(s *dnsServer) { s.SetMode(servfail) },
		},
		{
			name: "SRV targets all gone", dns: "_app._tcp.spillway.test", noMember: true,
			fail: func(s *dnsServer) { s.SetA("app.spillway.test") },
		},
		{
			name: "SRV no records", dns: "_app._tcp.spillway.test",
			fail: func(s *dnsServer) { s.SetSRV("_app._tcp.spillway.test") },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := startDNS(t)
			s.SetA("app.spillway.test", "127.0.0.2")
			s.SetSRV("_app._tcp.spillway.test", srvRecord{Target: "app.spillway.test", Port: 8080})
			name := tc.dns
			if name == "" {
				name = "app.spillway.test:8080"
			}
			d, u, l := newDiscoverer(t, discovery.Options{DNS: name, Resolver: s.Addr, Interval: interval})
			if err := d.Resolve(t.Context()); err != nil {
				t.Fatalf("first Resolve: %v", err)
			}
			good := []string{"127.0.0.2:8080"}
			if got := u.next(t); !slices.Equal(got, good) {
				t.Fatalf("first Update %q, want %q", got, good)
			}

			tc.fail(s)
			for i := range uint64(2) {
				err := d.Resolve(t.Context())
				if err == nil {
					t.Fatalf("Resolve after the failure: no error")
				}
				if errors.Is(err, discovery.ErrNoMembers) != tc.noMember {
					t.Errorf("Resolve: %v; want ErrNoMembers: %v", err, tc.noMember)
				}
				if !tc.noMember && !strings.Contains(err.Error(), s.Addr) {
					t.Errorf("Resolve: %v; want the server asked, %s, named", err, s.Addr)
				}
				if n := d.Failures(); n != i+1 {
					t.Errorf("Failures() = %d after %d failures", n, i+1)
				}
				if got := d.Members(); !slices.Equal(got, good) {
					t.Errorf("Members() = %q after a failure, want the last good %q", got, good)
				}
			}
			u.none(t)
			failed := l.all.FilterMessage(failedMsg).All()
			if len(failed) != 2 {
				t.Fatalf("%d %q log lines, want 2", len(failed), failedMsg)
			}
			f := failed[0].ContextMap()
			if f["site"] != "aws" || f["name"] != name || f["error"] == "" || failed[0].Level.String() != "warn" {
				t.Errorf("failure logged as %s %v, want warn with site, name and error", failed[0].Level, f)
			}

			if tc.forGood {
				return
			}
			s.SetMode(answer)
			s.SetA("app.spillway.test", "127.0.0.3")
			s.SetSRV("_app._tcp.spillway.test", srvRecord{Target: "app.spillway.test", Port: 8080})
			if err := d.Resolve(t.Context()); err != nil {
				t.Fatalf("Resolve once healed: %v", err)
			}
			if got, want := u.next(t), []string{"127.0.0.3:8080"}; !slices.Equal(got, want) {
				t.Errorf("Update once healed: %q, want %q", got, want)
			}
			if n := l.count("discovery works again"); n != 1 {
				t.Errorf("%d recovery log lines, want 1", n)
			}
		})
	}
}

// TestDNSRunKeepsLastSetThroughFailures: Run goes on resolving through failures, keeps the
// last set meanwhile, and takes the next good answer.
func TestDNSRunKeepsLastSetThroughFailures(t *testing.T) {
	s := startDNS(t)
	s.SetA("app.spillway.test", "127.0.0.2", "127.0.0.3")
	d, u, l := newDiscoverer(t, discovery.Options{
		DNS: "app.spillway.test:8080", Resolver: s.Addr, Interval: interval,
	})
	run(t, d, u)
	u.until(t, "127.0.0.2:8080", "127.0.0.3:8080")

	s.SetMode(servfail)
	l.until(t, failedMsg, 3)
	s.SetMode(empty)
	l.until(t, failedMsg, 6)
	u.none(t) // the set has not changed, so no Update, and never an empty one
	if got, want := d.Members(), []string{"127.0.0.2:8080", "127.0.0.3:8080"}; !slices.Equal(got, want) {
		t.Errorf("Members() = %q during failures, want %q", got, want)
	}

	s.SetA("app.spillway.test", "127.0.0.4")
	s.SetMode(answer)
	u.until(t, "127.0.0.4:8080")
	if n := d.Failures(); n < 6 {
		t.Errorf("Failures() = %d, want >= 6", n)
	}
}

// TestDNSLargeAnswerOverTCP: an answer too large for UDP comes back truncated and the
// resolver asks again over TCP; every address is a member.
func TestDNSLargeAnswerOverTCP(t *testing.T) {
	s := startDNS(t)
	var ips, want []string
	for i := range 200 {
		ip := fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250)
		ips = append(ips, ip)
		want = append(want, ip+":8080")
	}
	s.SetA("big.spillway.test", ips...)
	d, u, _ := newDiscoverer(t, discovery.Options{
		DNS: "big.spillway.test:8080", Resolver: s.Addr, Interval: interval,
	})
	if err := d.Resolve(t.Context()); err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	slices.Sort(want)
	if got := u.next(t); !slices.Equal(got, want) {
		t.Errorf("Update with %d members, want %d", len(got), len(want))
	}
	if s.Count("tcp") == 0 {
		t.Errorf("no query over TCP: the answer was not truncated, the test proves nothing")
	}
}

// TestResolveCanceled: a resolution cut short by its caller is no failure.
func TestResolveCanceled(t *testing.T) {
	s := startDNS(t)
	s.SetMode(silent)
	d, _, l := newDiscoverer(t, discovery.Options{
		DNS: "app.spillway.test:8080", Resolver: s.Addr, Interval: time.Minute,
	})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := d.Resolve(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Resolve with a canceled context: %v, want context.Canceled", err)
	}
	if n := d.Failures(); n != 0 {
		t.Errorf("Failures() = %d, want 0", n)
	}
	if n := l.count(failedMsg); n != 0 {
		t.Errorf("%d failure log lines, want 0", n)
	}
}

// TestRunStopsMidLookup: Run stopped while a query waits for an answer that never comes
// leaves no goroutine behind. The Go resolver only puts a deadline (5s by default) on its
// connection, so without the connection being closed when the query's context ends, its
// goroutines outlived Run by that long.
func TestRunStopsMidLookup(t *testing.T) {
	s := startDNS(t)
	s.SetMode(silent)
	d, err := discovery.New(discovery.Options{
		DNS: "app.spillway.test:8080", Resolver: s.Addr, Interval: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan struct{})
	go func() { d.Run(ctx); close(stopped) }()
	select {
	case <-s.Asked:
	case <-time.After(wait):
		t.Fatalf("no query within %s", wait)
	}
	cancel()
	select {
	case <-stopped:
	case <-time.After(wait):
		t.Fatalf("Run did not return within %s of its context's end", wait)
	}
	s.Stop()
	goleak.VerifyNone(t) // retries for a while, far less than the resolver's 5s
	if n := d.Failures(); n != 0 {
		t.Errorf("Failures() = %d: a lookup cut short by Run's end counted as failed", n)
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		o    discovery.Options
		want string
	}{
		{"no source", discovery.Options{Interval: time.Second}, "set dns or file"},
		{"two sources", discovery.Options{DNS: "a:1", File: "t.txt", Interval: time.Second}, "not both"},
		{"no interval", discovery.Options{DNS: "a:1"}, "interval"},
		{"negative interval", discovery.Options{DNS: "a:1", Interval: -time.Second}, "interval"},
		{"no port", discovery.Options{DNS: "app.aws.internal", Interval: time.Second}, "host:port"},
		{"port 0", discovery.Options{DNS: "app:0", Interval: time.Second}, "port"},
		{"port too big", discovery.Options{DNS: "app:65536", Interval: time.Second}, "port"},
		{"named port", discovery.Options{DNS: "app:http", Interval: time.Second}, "port"},
		{"no host", discovery.Options{DNS: ":8080", Interval: time.Second}, "host"},
		{"SRV with port", discovery.Options{DNS: "_app._tcp.aws:80", Interval: time.Second}, "SRV"},
		{"resolver no port", discovery.Options{DNS: "a:1", Resolver: "127.0.0.1", Interval: time.Second}, "resolver"},
		{"resolver name", discovery.Options{DNS: "a:1", Resolver: "dns:53", Interval: time.Second}, "resolver"},
		{"resolver with file", discovery.Options{File: "t.txt", Resolver: "127.0.0.1:53", Interval: time.Second}, "resolver"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := discovery.New(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, %v; want an error about %q", d, err, tc.want)
			}
		})
	}
	for _, o := range []discovery.Options{
		{DNS: "app.aws.internal:8080", Interval: time.Second},
		{DNS: "[::1]:8080", Resolver: "[::1]:53", Interval: time.Second},
		{DNS: "_app._tcp.aws.internal", Interval: time.Second},
		{File: "targets.txt", Interval: time.Second},
	} {
		if _, err := discovery.New(o); err != nil {
			t.Errorf("New(%+v): %v", o, err)
		}
	}
}
