package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// dnsSource resolves a "host:port" (A and AAAA records) or an SRV name.
type dnsSource struct {
	name       string // as configured, for logs
	host, port string // A/AAAA: what to look up and the port of every member
	srv        bool   // name is an SRV name; host and port are unused
	resolver   *net.Resolver
	server     string // the DNS server asked, "" for the system's
	timeout    time.Duration
	site       string
	log        *zap.Logger
}

func newDNSSource(name, server string, timeout time.Duration, site string, log *zap.Logger) (*dnsSource, error) {
	s := &dnsSource{name: name, server: server, timeout: timeout, site: site, log: log}
	if strings.HasPrefix(name, "_") {
		if strings.Contains(name, ":") {
			return nil, errors.New("an SRV name takes its ports from its records: drop the :port")
		}
		s.srv = true
	} else {
		host, port, err := net.SplitHostPort(name)
		if err != nil {
			return nil, fmt.Errorf("want host:port or an SRV name starting with _: %w", err)
		}
		if host == "" {
			return nil, errors.New("want host:port, the host is empty")
		}
		if s.port, err = parsePort(port); err != nil {
			return nil, err
		}
		s.host = host
	}
	// PreferGo: the Go resolver, the same on every platform, and the only one that honours
	// Dial, which sends every query to server when it is set.
	s.resolver = &net.Resolver{PreferGo: true, Dial: dialer(server)}
	return s, nil
}

func (s *dnsSource) String() string { return s.name }

func (s *dnsSource) lookup(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if !s.srv {
		return s.addrs(ctx, s.host, s.port, nil)
	}
	_, records, err := s.resolver.LookupSRV(ctx, "", "", s.name)
	if err != nil {
		// LookupSRV may return the valid records with an error about others; a partial
		// answer is not one to shrink the pool to.
		return nil, s.fix(err)
	}
	var members []string
	for _, r := range records {
		if r.Target == "." || r.Port == 0 { // "." means no service here (RFC 2782)
			continue
		}
		port := strconv.Itoa(int(r.Port))
		more, err := s.addrs(ctx, r.Target, port, members)
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound && ctx.Err() == nil {
			// The SRV record names a host that is not there (an instance deregistered
			// between the two answers, or a stale record): it cannot be a member, and the
			// others are good. Any other error may be passing: fail the whole resolution.
			s.log.Warn("SRV target has no address, left out",
				zap.String("site", s.site), zap.String("name", s.name),
				zap.String("target", r.Target), zap.Error(err))
			continue
		}
		if err != nil {
			return nil, err
		}
		members = more
	}
	return members, nil
}

// addrs appends to members each address of host with port.
func (s *dnsSource) addrs(ctx context.Context, host, port string, members []string) ([]string, error) {
	ips, err := s.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, s.fix(err)
	}
	for _, ip := range ips {
		members = append(members, net.JoinHostPort(ip.Unmap().String(), port))
	}
	return members, nil
}

// dialer returns the resolver's Dial: to server if set, else to the server the resolver
// chose from the system's configuration. Either way the connection is closed as soon as
// the query's context ends. The Go resolver only sets a deadline on it, at most its own
// per-query timeout (5s by default), so a lookup abandoned when a Resolve times out or Run
// stops would otherwise leave goroutines blocked reading for that long.
func dialer(server string) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		if server != "" {
			address = server
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		if err != nil {
			return nil, err
		}
		stop := context.AfterFunc(ctx, func() { _ = c.Close() })
		// The resolver tells UDP from TCP by whether the connection is a net.PacketConn:
		// keep that so.
		if pc, ok := c.(*net.UDPConn); ok {
			return &packetConn{UDPConn: pc, stop: stop}, nil
		}
		return &streamConn{Conn: c, stop: stop}, nil
	}
}

// packetConn and streamConn are connections closed when their query's context ends; Close
// forgets that.
type packetConn struct {
	*net.UDPConn
	stop func() bool
}

func (c *packetConn) Close() error { c.stop(); return c.UDPConn.Close() }

type streamConn struct {
	net.Conn
	stop func() bool
}

func (c *streamConn) Close() error { c.stop(); return c.Conn.Close() }

// fix names the server really asked in a DNS error: with Dial set, the resolver still
// reports the server of the system's configuration, which was never asked.
func (s *dnsSource) fix(err error) error {
	var dnsErr *net.DNSError
	if s.server == "" || !errors.As(err, &dnsErr) {
		return err
	}
	fixed := *dnsErr
	fixed.Server = s.server
	return &fixed
}

// parsePort returns port in canonical form if it is a number in 1-65535.
func parsePort(port string) (string, error) {
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return "", fmt.Errorf("port must be a number in 1-65535, got %q", port)
	}
	return strconv.FormatUint(n, 10), nil
}
