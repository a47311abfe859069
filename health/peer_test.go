package health

import (
	"sync"
	"sync/atomic"
	"testing"
)

// testPeer is a Peer as the balancer's Backend is one: a site, an address and a count of
// failures in a row kept with the backend.
type testPeer struct {
	site, addr string
	run        atomic.Int64
}

func (p *testPeer) SiteAddr() (site, addr string) { return p.site, p.addr }
func (p *testPeer) FailuresInARow() *atomic.Int64 { return &p.run }

// peerSet hands out one Peer per site and address, as the balancer's Registry does.
type peerSet struct {
	mu sync.Mutex
	m  map[backendKey]*testPeer
}

func (s *peerSet) get(site, addr string) *testPeer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[backendKey]*testPeer{}
	}
	k := backendKey{site, addr}
	p := s.m[k]
	if p == nil {
		p = &testPeer{site: site, addr: addr}
		s.m[k] = p
	}
	return p
}

// members lists the Peers of site → addrs, for Outliers.SetMembers.
func (s *peerSet) members(m map[string][]string) []Peer {
	var out []Peer
	for site, addrs := range m {
		for _, addr := range addrs {
			out = append(out, s.get(site, addr))
		}
	}
	return out
}

// A backend listed anew starts its run of failures from zero, whatever its Peer counted
// while it was not a member; a backend listed again under a new Peer (its long-lived state
// made afresh) carries its run on.
func TestOutliersRunStartsWithMembership(t *testing.T) {
	t.Parallel()
	f := newFixture(t, OutlierOptions{ConsecutiveFailures: 3}, map[string][]string{"idc1": {"a", "b"}})
	c := f.peers.get("idc1", "c")
	f.o.Observe(c, true)
	f.o.Observe(c, true) // not a member: ejects nothing
	f.o.SetMembers(f.peers.members(map[string][]string{"idc1": {"a", "b", "c"}}))
	f.o.Observe(c, true)
	f.expectCalls(t) // 1 failure since it joined, not 3

	a := f.peers.get("idc1", "a")
	f.o.Observe(a, true)
	f.o.Observe(a, true)
	fresh := &testPeer{site: "idc1", addr: "a"}
	f.o.SetMembers([]Peer{fresh, f.peers.get("idc1", "b"), c})
	f.o.Observe(a, true) // the Peer it replaced: ignored
	f.expectCalls(t)
	f.o.Observe(fresh, true)
	f.expectCalls(t, eject("idc1", "a"))
}
