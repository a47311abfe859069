package discovery_test

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// dnsServer is an authoritative DNS server on loopback, over UDP and TCP on one port, whose
// records and failure mode a test changes while a Discoverer asks it.
type dnsServer struct {
	addr string // "127.0.0.1:port", for Options.Resolver

	mu      sync.Mutex
	a       map[string][]netip.Addr // by lower-case FQDN: A and AAAA records
	srv     map[string][]srvRecord
	mode    mode
	queries map[string]int // by network, "udp" or "tcp"
	asked   chan struct{}  // a signal after each query received

	servers  []*dns.Server
	wg       sync.WaitGroup
	stopOnce sync.Once
}

type srvRecord struct {
	target string
	port   uint16
}

// mode is how the server answers every query.
type mode int

const (
	answer   mode = iota // from its records; NXDOMAIN for a name it has none for
	servfail             // SERVFAIL
	nxdomain             // NXDOMAIN
	refused              // REFUSED
	empty                // NOERROR with no records (NODATA)
	silent               // no answer at all, so the client times out
)

func startDNS(t *testing.T) *dnsServer {
	t.Helper()
	s := &dnsServer{
		a:       map[string][]netip.Addr{},
		srv:     map[string][]srvRecord{},
		queries: map[string]int{},
		asked:   make(chan struct{}, 1),
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
	s.addr = pc.LocalAddr().String()
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
	t.Cleanup(s.stop)
	return s
}

// stop shuts the server down and waits for it: afterwards its port refuses every query.
func (s *dnsServer) stop() {
	s.stopOnce.Do(func() {
		for _, srv := range s.servers {
			_ = srv.Shutdown()
		}
		s.wg.Wait()
	})
}

// setA makes ips the A and AAAA records of name; none removes the name.
func (s *dnsServer) setA(name string, ips ...string) {
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

// setSRV makes records the SRV records of name.
func (s *dnsServer) setSRV(name string, records ...srvRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv[dns.CanonicalName(name)] = records
}

func (s *dnsServer) setMode(m mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mode = m
}

func (s *dnsServer) count(network string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[network]
}

func (s *dnsServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	network := w.LocalAddr().Network()
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	select {
	case s.asked <- struct{}{}:
	default:
	}
	s.mu.Lock()
	s.queries[network]++
	switch s.mode {
	case answer:
		s.answer(req, m)
	case servfail:
		m.Rcode = dns.RcodeServerFailure
	case nxdomain:
		m.Rcode = dns.RcodeNameError
	case refused:
		m.Rcode = dns.RcodeRefused
	case empty:
	case silent:
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
func (s *dnsServer) answer(req *dns.Msg, m *dns.Msg) {
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
				Priority: 10, Weight: 10, Port: r.port, Target: dns.Fqdn(r.target)})
		}
	}
}
