package configs

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// MaxQuoted is how many characters of a value an error message quotes: a value pasted by
// mistake (a certificate, a whole file) must not bury the message.
const MaxQuoted = 100

// Quote is s in double quotes for an error message, cut to MaxQuoted characters; a cut
// value ends in "..." and says how long it was. Every message that quotes what the user
// wrote goes through Quote.
func Quote(s string) string {
	c := cut(s)
	if len(c) == len(s) {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q... (%d characters)", c, utf8.RuneCountInString(s))
}

// cut is s cut to MaxQuoted characters (runes, so a cut never splits one).
func cut(s string) string {
	n := 0
	for i := range s {
		if n == MaxQuoted {
			return s[:i]
		}
		n++
	}
	return s
}

// hostProblem says what is wrong with host, a host name or an IP address, or "". A name
// must be a DNS name per RFC 1123: dot-separated labels of letters, digits and '-' (not
// first or last), each 1-63 long, 253 in all, and not all digits in the last label (so
// "10.0.0.256" is neither an address nor a name). SRV names may have labels that begin
// with '_' (srv).
func hostProblem(host string, srv bool) string {
	if host == "" {
		return "no host"
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	if strings.Contains(host, ":") {
		return fmt.Sprintf("%s is not an IP address", Quote(host))
	}
	name := strings.TrimSuffix(host, ".")
	bad := fmt.Sprintf("%s is neither an IP address nor a DNS name", Quote(host))
	if name == "" || len(name) > 253 {
		return bad
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if srv && strings.HasPrefix(l, "_") {
			l = l[1:]
		}
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return bad
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return bad
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return bad // looks like an IPv4 address, but is not one
	}
	return ""
}

// portProblem says what is wrong with port, or "": it must be a number from min (0 or 1)
// to 65535, in plain digits.
func portProblem(port string, min int) string {
	n := 0
	for _, c := range port {
		if c < '0' || c > '9' || n > 65535 {
			n = -1
			break
		}
		n = n*10 + int(c-'0')
	}
	if port == "" || n < min || n > 65535 {
		return fmt.Sprintf("port must be a number %d-65535, got %s", min, Quote(port))
	}
	return ""
}

// hostPortProblem says what is wrong with addr, "host:port", or "". An empty host (every
// interface) is allowed only where emptyHost.
func hostPortProblem(addr string, minPort int, emptyHost bool) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if msg := portProblem(port, minPort); msg != "" {
		return msg
	}
	if host == "" && emptyHost {
		return ""
	}
	return hostProblem(host, false)
}
