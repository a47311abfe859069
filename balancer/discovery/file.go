package discovery

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"

	"go.uber.org/zap"
)

// maxFileSize bounds a targets file: far more than any pool's list, far less than a
// mistake (a log file pointed at) could cost.
const maxFileSize = 1 << 20

// fileSource reads a targets file. It is used under Discoverer.resolving only.
type fileSource struct {
	path string
	site string
	log  *zap.Logger

	// The content last read and what it parsed to: a re-read that finds the same bytes
	// (every Interval, mostly) neither parses again nor logs its invalid lines again.
	last    []byte
	parsed  []string
	hasLast bool
}

func (s *fileSource) String() string { return s.path }

func (s *fileSource) lookup(context.Context) ([]string, error) {
	b, err := readFile(s.path)
	if err != nil {
		return nil, err
	}
	if !s.hasLast || !bytes.Equal(b, s.last) {
		var bad []lineError
		s.parsed, bad = parseTargets(b)
		s.last, s.hasLast = b, true
		for _, e := range bad {
			s.log.Warn("invalid line in the targets file, skipped",
				zap.String("site", s.site), zap.String("at", fmt.Sprintf("%s:%d", s.path, e.line)),
				zap.String("line", e.text), zap.Error(e.err))
		}
	}
	return slices.Clone(s.parsed), nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("read %s: larger than %d bytes", path, maxFileSize)
	}
	return b, nil
}

// lineError is an invalid line of a targets file.
type lineError struct {
	line int // 1-based
	text string
	err  error
}

// parseTargets returns the members listed in a targets file, in file order and with any
// duplicates, and the lines it could not use.
func parseTargets(b []byte) (members []string, bad []lineError) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, maxFileSize+1)
	for n := 1; sc.Scan(); n++ {
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		m, err := parseMember(text)
		if err != nil {
			bad = append(bad, lineError{line: n, text: text, err: err})
			continue
		}
		members = append(members, m)
	}
	return members, bad
}

// parseMember turns "host:port", "http://host[:port]" or "https://host[:port]" into a
// member "host:port": an IP address in its canonical form (IPv6 in brackets), a host name
// lower-cased, the port without leading zeros.
func parseMember(s string) (string, error) {
	var host, port string
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", err
		}
		switch {
		case u.Scheme != "http" && u.Scheme != "https":
			return "", fmt.Errorf("scheme %q: want http or https", u.Scheme)
		case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
			return "", errors.New("want only scheme, host and port, as in https://10.0.3.7:8443")
		}
		host, port = u.Hostname(), u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
	} else {
		var err error
		if host, port, err = net.SplitHostPort(s); err != nil {
			return "", fmt.Errorf("want host:port or http(s)://host:port: %w", err)
		}
	}
	port, err := parsePort(port)
	if err != nil {
		return "", err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return net.JoinHostPort(ip.Unmap().String(), port), nil
	}
	if !validHostname(host) {
		return "", fmt.Errorf("host %q: want an IP address or a DNS name", host)
	}
	return net.JoinHostPort(strings.ToLower(host), port), nil
}

// validHostname reports whether h is a DNS name: dot-separated labels of letters, digits,
// '-' and '_' (SRV-style names), 1-63 bytes each, 253 in all, an optional final dot.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return false
			}
		}
	}
	return true
}
