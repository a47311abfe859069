package frontend_test

// Response heads as written on the wire from what a handler set: no response splitting,
// invalid names dropped, keys and repeated fields as given, the first status wins.

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// respHead is the raw head of the one answer on a Connection: close request.
func respHead(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	f := start(t, h)
	c := dial(t, f.addr)
	c.send("GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
	raw := c.rest()
	head, _, ok := strings.Cut(raw, "\r\n\r\n")
	if !ok {
		t.Fatalf("no head end in %q", raw)
	}
	return head + "\r\n"
}

func TestFrontResponseHeaderSanitised(t *testing.T) {
	head := respHead(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Crlf", "a\r\nInjected: 1")
		w.Header().Set("X-Lf", "a\nInjected: 2")
		w.Header()["Bad Key"] = []string{"v"}
		w.Header()["X\r\nSplit"] = []string{"v"}
		w.Header()["x-lower"] = []string{"v"}
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		io.WriteString(w, "x")
	})
	for _, want := range []string{
		"\r\nX-Crlf: a  Injected: 1\r\n", // CR and LF become spaces: no header of its own
		"\r\nX-Lf: a Injected: 2\r\n",
		"\r\nx-lower: v\r\n", // keys as given, not canonicalised
		"\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n",
	} {
		if !strings.Contains(head, want) {
			t.Errorf("head has no %q:\n%s", want, head)
		}
	}
	for _, bad := range []string{"\r\nInjected:", "Bad Key", "Split"} {
		if strings.Contains(head, bad) {
			t.Errorf("head has %q:\n%s", bad, head)
		}
	}
}

// RFC 9110 section 5.5: NUL in a field value is as dangerous as CR and LF; it should be
// replaced by a space (or the field dropped), not sent.
func TestFrontResponseHeaderNUL(t *testing.T) {
	head := respHead(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Nul", "a\x00b")
	})
	if strings.Contains(head, "\x00") {
		t.Fatalf("NUL on the wire: %q", head)
	}
}

// The first WriteHeader wins; an unknown code gets a generic reason phrase.
func TestFrontFirstStatusWins(t *testing.T) {
	head := respHead(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(599)
		w.WriteHeader(200)
		io.WriteString(w, "x")
	})
	if !strings.HasPrefix(head, "HTTP/1.1 599 status code 599\r\n") {
		t.Fatalf("head %q", head)
	}
}

// Headers set after the first write are not sent (except as declared trailers).
func TestFrontHeaderAfterWriteIgnored(t *testing.T) {
	head := respHead(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Before", "1")
		io.WriteString(w, strings.Repeat("x", 8192))
		w.Header().Set("X-After", "1")
	})
	if !strings.Contains(head, "\r\nX-Before: 1\r\n") || strings.Contains(head, "X-After") {
		t.Fatalf("head %q", head)
	}
}
