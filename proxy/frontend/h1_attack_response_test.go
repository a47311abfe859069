package frontend_test

// Attacks through the ResponseWriter: answers that could frame differently from what
// their head says, so that a pipelined request's answer would be misread.

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// pipelinedAfter sends req then a GET of /next in one write, and returns the first
// answer; the second's body must be "next" (so the first answer framed exactly as its
// head said).
func pipelinedAfter(t *testing.T, f *front, req, method string) *http.Response {
	t.Helper()
	c := dial(t, f.addr)
	c.send(req + get("/next"))
	resp, _ := c.response(method)
	if _, body := c.response("GET"); body != "next" {
		t.Fatalf("the pipelined answer's body %q: the first answer was misframed", body)
	}
	return resp
}

// nextOr answers /next with "next", and the rest with h.
func nextOr(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/next" {
			io.WriteString(w, "next")
			return
		}
		h(w, r)
	})
}

// Answers without a body (HEAD, 204, 304) whose handler writes one anyway, large or
// small, with or without a Flush first: no body byte reaches the wire, and the pipelined
// answer after it is read intact.
func TestAttackNoBodyAnswersWithWrites(t *testing.T) {
	big := strings.Repeat("B", 10000)
	for _, tc := range []struct {
		name, method string
		status       int
		flush        bool
		body         string
	}{
		{"HEAD small", "HEAD", 200, false, "small"},
		{"HEAD big", "HEAD", 200, false, big},
		{"HEAD flushed big", "HEAD", 200, true, big},
		{"204 small", "GET", 204, false, "small"},
		{"204 flushed big", "GET", 204, true, big},
		{"304 big", "GET", 304, false, big},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := make(chan error, 1)
			f := start(t, nextOr(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				if tc.flush {
					w.(http.Flusher).Flush()
				}
				_, err := io.WriteString(w, tc.body)
				errs <- err
			}))
			pipelinedAfter(t, f, tc.method+" / HTTP/1.1\r\nHost: example.com\r\n\r\n", tc.method)
			err := recv(t, errs, "the handler")
			if tc.status != 200 && !errors.Is(err, http.ErrBodyNotAllowed) {
				t.Errorf("the write to a %d: %v, want ErrBodyNotAllowed", tc.status, err)
			}
		})
	}
}

// Headers the handler changes after the head went (Content-Length, Transfer-Encoding,
// Connection) change nothing on the wire: the body stays chunked, and the next answer is
// read intact.
func TestAttackHeaderChangesAfterFlush(t *testing.T) {
	f := start(t, nextOr(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "abc")
		w.(http.Flusher).Flush()
		w.Header().Set("Content-Length", "1")
		w.Header().Set("Transfer-Encoding", "identity")
		w.WriteHeader(500)
		io.WriteString(w, "defgh")
	}))
	resp := pipelinedAfter(t, f, get("/"), "GET")
	wantStatus(t, resp, 200)
}

// Content-Length values a handler sets that net/http would not frame by: invalid ones
// are dropped (the body is chunked or measured), and the answer frames as its head says.
func TestAttackHandlerContentLength(t *testing.T) {
	for name, cl := range map[string][]string{
		"negative":   {"-1"},
		"not digits": {"1x"},
		"spaces":     {" 3 "},
		"huge":       {"99999999999999999999"},
		"empty":      {""},
	} {
		t.Run(name, func(t *testing.T) {
			f := start(t, nextOr(func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Content-Length"] = cl
				io.WriteString(w, "abc")
			}))
			pipelinedAfter(t, f, get("/"), "GET")
		})
	}
}

// Trailer fields that frame a message (Content-Length, Transfer-Encoding, Trailer) or
// route it (Host) must not be sent as trailers: the edge's own framing refuses them in a
// backend's answer (framing.go, endLine), and net/http drops declared ones
// (httpguts.ValidTrailerHeader). A trailer CR or LF must not split a field.
func TestAttackResponseTrailerFields(t *testing.T) {
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum, Content-Length, Transfer-Encoding, Host")
		w.(http.Flusher).Flush()
		io.WriteString(w, "ok")
		w.Header().Set("X-Sum", "1\r\nX-Split: 2")
		w.Header().Set("Content-Length", "99")
		w.Header().Set("Transfer-Encoding", "gzip")
		w.Header().Set("Host", "evil.example")
		w.Header().Set(http.TrailerPrefix+"Content-Length", "98")
		w.Header().Set(http.TrailerPrefix+"Host", "evil.example")
	}))
	c := dial(t, f.addr)
	c.send("GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
	out := c.rest()
	_, trailer, ok := strings.Cut(out, "\r\n0\r\n")
	if !ok {
		t.Fatalf("no last chunk in %q", out)
	}
	for _, bad := range []string{"\r\nContent-Length:", "\r\nTransfer-Encoding:", "\r\nHost:", "\r\nX-Split:"} {
		if strings.Contains("\r\n"+trailer, bad) {
			t.Errorf("trailer section %q has %q", trailer, strings.TrimPrefix(bad, "\r\n"))
		}
	}
	if !strings.Contains(trailer, "X-Sum: 1  X-Split: 2\r\n") {
		t.Errorf("trailer section %q lacks X-Sum", trailer)
	}
}

// 1xx answers a handler sends (103 twice, then 100, then the final one) come before the
// final answer, and the pipelined answer after it is read intact.
func TestAttackInformationalThenFinal(t *testing.T) {
	f := start(t, nextOr(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusContinue)
		w.WriteHeader(http.StatusAccepted)
		w.WriteHeader(http.StatusEarlyHints) // after the final status: ignored
		io.WriteString(w, "final")
	}))
	c := dial(t, f.addr)
	c.send(get("/") + get("/next"))
	for _, want := range []string{"103", "103", "100"} {
		if resp := c.head("GET"); resp.Status[:3] != want {
			t.Fatalf("status %q, want %s", resp.Status, want)
		}
	}
	resp, body := c.response("GET")
	if resp.StatusCode != http.StatusAccepted || body != "final" {
		t.Fatalf("final %d %q", resp.StatusCode, body)
	}
	if _, body := c.response("GET"); body != "next" {
		t.Fatalf("next %q", body)
	}
}

// A handler that panics after writing part of a chunked answer: the client sees the
// answer cut (no last chunk), and the pipelined request after it is not served.
func TestAttackPanicMidAnswerPipelined(t *testing.T) {
	served := make(chan string, 2)
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served <- r.URL.Path
		if r.URL.Path == "/next" {
			return
		}
		io.WriteString(w, strings.Repeat("x", 5000))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	c := dial(t, f.addr)
	c.send(get("/") + get("/next"))
	resp := c.head("GET")
	if b, err := io.ReadAll(resp.Body); err == nil {
		t.Fatalf("the cut answer read whole (%d bytes)", len(b))
	}
	recv(t, served, "the handler")
	noCall(t, served)
}

// A 1xx answer ends with its head; a Content-Length or Transfer-Encoding in it (the
// handler's header as it is when it sends the 103) would make a lenient client or proxy
// read the final answer as the 103's body. net/http leaves both out of 1xx heads.
func TestAttackInformationalFramingFields(t *testing.T) {
	f := start(t, nextOr(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		w.Header().Set("Transfer-Encoding", "chunked")
		w.Header().Set("Link", "</a>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Transfer-Encoding")
		io.WriteString(w, "final")
	}))
	c := dial(t, f.addr)
	c.send(get("/") + get("/next"))
	var head []string
	for l := c.line(); l != "\r\n"; l = c.line() {
		head = append(head, l)
	}
	if len(head) == 0 || !strings.HasPrefix(head[0], "HTTP/1.1 103 ") {
		t.Fatalf("first head %q", head)
	}
	for _, l := range head[1:] {
		if k, _, _ := strings.Cut(l, ":"); http.CanonicalHeaderKey(k) == "Content-Length" || http.CanonicalHeaderKey(k) == "Transfer-Encoding" {
			t.Errorf("the 103 has %q", l)
		}
	}
	if resp, body := c.response("GET"); resp.StatusCode != 200 || body != "final" {
		t.Fatalf("final %d %q", resp.StatusCode, body)
	}
	if _, body := c.response("GET"); body != "next" {
		t.Fatalf("next %q", body)
	}
}
