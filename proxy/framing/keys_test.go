package framing

import (
	"net/textproto"
	"strings"
	"testing"
)

// CanonicalKey agrees with textproto on every field name, and allocates nothing for a
// name in canonical form or a common one in any case.
func TestCanonicalKey(t *testing.T) {
	names := []string{"content-length", "CONTENT-TYPE", "X-Request-Id", "x-request-id", "te",
		"x-custom-thing", "A", "a-b-c", "Www-authenticate", "accept-", "-x", "x--y",
		strings.Repeat("long-name", 8)}
	for k := range commonKeys {
		names = append(names, k, strings.ToLower(k), strings.ToUpper(k))
	}
	for _, n := range names {
		if got, want := CanonicalKey(n), textproto.CanonicalMIMEHeaderKey(n); got != want {
			t.Errorf("CanonicalKey(%q) = %q, want %q", n, got, want)
		}
	}
	for _, n := range []string{"Content-Length", "content-length", "x-forwarded-for", "SET-COOKIE", "X-Own-Header"} {
		if a := testing.AllocsPerRun(100, func() { CanonicalKey(n) }); a != 0 {
			t.Errorf("CanonicalKey(%q) allocates %v times", n, a)
		}
	}
}
