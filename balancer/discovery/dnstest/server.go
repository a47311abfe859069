// Package dnstest is an authoritative DNS server on loopback for tests: a test sets its
// records and failure mode while the code under test asks it (discovery's tests, and the
// proxy's end-to-end tests of DNS discovery).
package dnstest

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Server is an authoritative DNS server on loopback, over UDP and TCP on one port, whose
// records and failure mode a test changes while a Discoverer asks it.
type Server struct {
	Addr string // "127.0.0.1:port", for discovery.Options.Resolver

	mu      sync.Mutex
	a       map[string][]netip.Addr // by lower-case FQDN: A and AAAA records
	srv     map[string][]SRV
	mode    Mode
	queries map[string]int // by network, "udp" or "tcp"
	Asked   chan struct{}  // a signal after each query received (capacity 1)

	servers  []*dns.Server
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// SRV is one SRV record: a target name and its port.
type SRV struct {
	Target string
	Port   uint16
}

// Mode is how the server answers every query.
type Mode int

const (
	Answer   Mode = iota // from its records; NXDOMAIN for a name it has none for
	ServFail             // SERVFAIL
	NXDomain             // NXDOMAIN
	Refused              // REFUSED
	Empty                // NOERROR with no records (NODATA)
	Silent               // no answer at all, so the client times out
)

// Start runs a Server on a free 127.0.0.1 port (UDP and TCP) until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		a:       map[string][]netip.Addr{},
		srv:     map[string][]SRV{},
		queries: map[string]int{},
		Asked:   make(chan struct{}, 1),
	}
	// One port for both transports, as a client that retries a truncated answer over TCP
	// expects: take a free UDP port, then the same TCP port if it is free too.
	var pc net.PacketConn
	var ln net.Listener
	for range 50 {
		p, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", p.LocalAddr().String())
		if err == nil {
			pc, ln = p, l
			break
		}
		_ = p.Close()
	}
	if pc == nil {
		t.Fatal("no port free for both UDP and TCP on 127.0.0.1")
	}
	s.Addr = pc.LocalAddr().String()
	s.servers = []*dns.Server{
		{PacketConn: pc, Handler: s},
		{Listener: ln, Handler: s},
	}
	for _, srv := range s.servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		s.wg.Go(func() { _ = srv.ActivateAndServe() })
		<-started
	}
	t.Cleanup(s.Stop)
	return s
}

// Stop shuts the server down and waits for it: afterwards its port refuses every query.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		for _, srv := range s.servers {
			_ = srv.Shutdown()
		}
		s.wg.Wait()
	})
}

// SetA makes ips the A and AAAA records of name; none removes the name.
func (s *Server) SetA(name string, ips ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var addrs []netip.Addr
	for _, ip := range ips {
		addrs = append(addrs, netip.MustParseAddr(ip))
	}
	s.a[dns.CanonicalName(name)] = addrs
	if len(addrs) == 0 {
		delete(s.a, dns.CanonicalName(name))
	}
}

// SetSRV makes records the SRV records of name.
func (s *Server) SetSRV(name string, records ...SRV) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv[dns.CanonicalName(name)] = records
}

// SetMode makes the server answer every query so.
func (s *Server) SetMode(m Mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mode = m
}

// Count is the number of queries received over network, "udp" or "tcp".
func (s *Server) Count(network string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[network]
}

// ServeDNS answers one query; it is the servers' dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	network := w.LocalAddr().Network()
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	select {
	case s.Asked <- struct{}{}:
	default:
	}
	s.mu.Lock()
	s.queries[network]++
	switch s.mode {
	case Answer:
		s.answer(req, m)
	case ServFail:
		m.Rcode = dns.RcodeServerFailure
	case NXDomain:
		m.Rcode = dns.RcodeNameError
	case Refused:
		m.Rcode = dns.RcodeRefused
	case Empty:
	case Silent:
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	if network == "udp" {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size) // sets TC if it had to cut: the client asks again over TCP
	}
	_ = w.WriteMsg(m)
}

// answer fills m from the records; s.mu is held.
func (s *Server) answer(req *dns.Msg, m *dns.Msg) {
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	addrs, hasA := s.a[name]
	records, hasSRV := s.srv[name]
	if !hasA && !hasSRV {
		m.Rcode = dns.RcodeNameError
		return
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: 1}
	}
	switch q.Qtype {
	case dns.TypeA:
		for _, ip := range addrs {
			if ip.Is4() {
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: ip.AsSlice()})
			}
		}
	case dns.TypeAAAA:
		for _, ip := range addrs {
			if ip.Is6() {
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: ip.AsSlice()})
			}
		}
	case dns.TypeSRV:
		for _, r := range records {
			m.Answer = append(m.Answer, &dns.SRV{Hdr: hdr(dns.TypeSRV),
				Priority: 10, Weight: 10, Port: r.Port, Target: dns.Fqdn(r.Target)})
		}
	}
}
