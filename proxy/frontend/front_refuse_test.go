package frontend_test

// Refusals: a request the server cannot read safely gets 4xx and the connection closes;
// the handler is never called, not for it and not for a request hidden after it.

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// hidden is the request a smuggler puts behind the refused one.
const hidden = "GET /hidden HTTP/1.1\r\nHost: example.com\r\n\r\n"

func TestFrontRefusals(t *testing.T) {
	const H = "Host: example.com\r\n"
	cases := []struct {
		name, req string
		status    int
	}{
		{"no version", "GET /\r\n\r\n", 400},
		{"extra token", "GET / HTTP/1.1 x\r\n" + H + "\r\n", 400},
		{"two spaces", "GET  / HTTP/1.1\r\n" + H + "\r\n", 400},
		{"no target", "GET HTTP/1.1\r\n" + H + "\r\n", 400},
		{"lowercase version", "GET / http/1.1\r\n" + H + "\r\n", 400},
		{"space in method", "G T / HTTP/1.1\r\n" + H + "\r\n", 400},
		{"bare LF", "GET / HTTP/1.1\n" + H + "\n", 400},
		// Refused, not served as HTTP/1.1 (RFC 9112 would serve 1.2 as 1.1 and answer
		// 505 to other majors; today all get 400).
		{"HTTP/2.0", "GET / HTTP/2.0\r\n" + H + "\r\n", 400},
		{"HTTP/3.0", "GET / HTTP/3.0\r\n" + H + "\r\n", 400},
		{"HTTP/1.2", "GET / HTTP/1.2\r\n" + H + "\r\n", 400},
		{"HTTP/0.9", "GET / HTTP/0.9\r\n" + H + "\r\n", 400},
		{"HTTP/1.10", "GET / HTTP/1.10\r\n" + H + "\r\n", 400},
		{"missing Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"absolute-form without Host", "GET http://t.example/p HTTP/1.1\r\n\r\n", 400},
		{"target without slash", "GET a HTTP/1.1\r\n" + H + "\r\n", 400},
		{"bad percent-encoding", "GET /%zz HTTP/1.1\r\n" + H + "\r\n", 400},
		{"DEL in target", "GET /\x7f HTTP/1.1\r\n" + H + "\r\n", 400},
		{"tab separators", "GET\t/\tHTTP/1.1\r\n" + H + "\r\n", 400},
		{"two Host", "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", 400},
		{"two equal Host", "GET / HTTP/1.1\r\n" + H + H + "\r\n", 400},
		{"Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
		{"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400},
		{"space in field name", "GET / HTTP/1.1\r\n" + H + "Bad Name: x\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\n" + H + "Name : x\r\n\r\n", 400},
		{"paren in field name", "GET / HTTP/1.1\r\n" + H + "X(y): 1\r\n\r\n", 400},
		{"no colon", "GET / HTTP/1.1\r\n" + H + "NoColon\r\n\r\n", 400},
		{"empty field name", "GET / HTTP/1.1\r\n" + H + ": x\r\n\r\n", 400},
		{"CTL in value", "GET / HTTP/1.1\r\n" + H + "X: a\x01b\r\n\r\n", 400},
		{"NUL in value", "GET / HTTP/1.1\r\n" + H + "X: a\x00b\r\n\r\n", 400},
		{"DEL in value", "GET / HTTP/1.1\r\n" + H + "X: a\x7fb\r\n\r\n", 400},
		{"CR in value", "GET / HTTP/1.1\r\n" + H + "X: a\rb\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\n" + H + "X: a\r\n b\r\n\r\n", 400},
		{"obs-fold tab", "GET / HTTP/1.1\r\n" + H + "X: a\r\n\tb\r\n\r\n", 400},
		{"CL and TE", "POST / HTTP/1.1\r\n" + H + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE and CL", "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400},
		{"two differing CL", "POST / HTTP/1.1\r\n" + H + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
		{"two equal CL", "POST / HTTP/1.1\r\n" + H + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400},
		{"CL list", "POST / HTTP/1.1\r\n" + H + "Content-Length: 3, 3\r\n\r\nabc", 400},
		{"negative CL", "POST / HTTP/1.1\r\n" + H + "Content-Length: -1\r\n\r\n", 400},
		{"signed CL", "POST / HTTP/1.1\r\n" + H + "Content-Length: +3\r\n\r\nabc", 400},
		{"CL overflow", "POST / HTTP/1.1\r\n" + H + "Content-Length: 99999999999999999999\r\n\r\n", 400},
		{"hex CL", "POST / HTTP/1.1\r\n" + H + "Content-Length: 0x3\r\n\r\nabc", 400},
		{"TE gzip", "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: gzip\r\n\r\n", 400},
		{"TE gzip, chunked", "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE chunked, chunked", "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE identity", "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: identity\r\n\r\n", 400},
		{"TE xchunked", "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: xchunked\r\n\r\n", 400},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"head too large", "GET / HTTP/1.1\r\n" + H + "X: " + strings.Repeat("a", 8000) + "\r\n\r\n", 431},
		{"request line too large", "GET /" + strings.Repeat("a", 8000) + " HTTP/1.1\r\n" + H + "\r\n", 431},
		{"many fields", "GET / HTTP/1.1\r\n" + H + strings.Repeat("X-A: b\r\n", 1200) + "\r\n", 431},
	}
	h, ch := recorder(nil)
	// Heads are bounded at max_header_bytes plus 4 KiB for the request line (as net/http).
	f := startFront(t, frontConfig(t, "limits: {max_header_bytes: 2048}\n"), h)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, f.addr)
			c.send(tc.req + hidden)
			resp, _ := c.response("GET")
			wantStatus(t, resp, tc.status)
			if !resp.Close {
				t.Errorf("no Connection: close")
			}
			c.closed()
			noCall(t, ch)
		})
	}
}

// A head under the bound passes.
func TestFrontHeadUnderLimit(t *testing.T) {
	h, ch := recorder(nil)
	f := startFront(t, frontConfig(t, "limits: {max_header_bytes: 2048}\n"), h)
	c := dial(t, f.addr)
	c.send("GET / HTTP/1.1\r\nHost: example.com\r\nX: " + strings.Repeat("a", 2000) + "\r\n\r\n")
	resp, _ := c.response("GET")
	wantStatus(t, resp, 200)
	if s := recv(t, ch, "the handler"); len(s.Header.Get("X")) != 2000 {
		t.Fatalf("X has %d bytes", len(s.Header.Get("X")))
	}
}

// A refused request pipelined after a served one: the first is answered, then the
// refusal, and the request hidden behind it is never served.
func TestFrontRefusalAfterServedRequest(t *testing.T) {
	h, ch := recorder(nil)
	f := start(t, h)
	c := dial(t, f.addr)
	c.send(get("/first") +
		"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden)
	resp, body := c.response("GET")
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("first: %d %q", resp.StatusCode, body)
	}
	resp, _ = c.response("POST")
	wantStatus(t, resp, 400)
	c.closed()
	if s := recv(t, ch, "the first request"); s.Path != "/first" {
		t.Fatalf("handler saw %q", s.Path)
	}
	noCall(t, ch)
}

// Classic desync attempts: whatever the server makes of the first request, the hidden
// one never reaches the handler as a request of its own.
func TestFrontSmugglingNeverServesHidden(t *testing.T) {
	for name, req := range map[string]string{
		"CL.TE":             "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
		"TE with space":     "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n5c\r\n",
		"TE obfuscated":     "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nTransfer-encoding: x\r\n\r\n0\r\n\r\n",
		"TE with tab value": "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding:\tchunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
		"CL in trailer":     "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 50\r\n\r\n",
		"chunk ext LF":      "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n2;\nxx\r\n0\r\n\r\n",
		"chunk size LF":     "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n2\nxx\r\n0\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			h, ch := recorder(nil)
			f := start(t, h)
			c := dial(t, f.addr)
			c.send(req + hidden)
			c.c.(interface{ CloseWrite() error }).CloseWrite()
			c.rest()
			for {
				select {
				case s := <-ch:
					if s.Path == "/hidden" {
						t.Fatalf("the hidden request was served")
					}
					continue
				default:
				}
				break
			}
		})
	}
}

// An invalid chunk size is inside the body: the head was good, so the handler is called
// and its body read fails; the answer carries Connection: close, and what follows is not
// served.
func TestFrontInvalidChunkSize(t *testing.T) {
	for name, body := range map[string]string{
		"not hex":        "zz\r\nab\r\n0\r\n\r\n",
		"negative":       "-1\r\nab\r\n0\r\n\r\n",
		"too long":       "2\r\nabc\r\n0\r\n\r\n",
		"overflow":       "fffffffffffffffffff\r\n",
		"space in size":  "1 2\r\nab\r\n0\r\n\r\n",
		"long extension": "3;" + strings.Repeat("e", 10000) + "\r\nabc\r\n0\r\n\r\n",
		"trailer flood":  "0\r\n" + strings.Repeat("X-T: 1\r\n", 10000) + "\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			h, ch := recorder(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusBadRequest)
			})
			f := start(t, h)
			c := dial(t, f.addr)
			c.send("POST /c HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n" + body + hidden)
			resp, _ := c.response("POST")
			wantStatus(t, resp, 400)
			if !resp.Close {
				t.Errorf("no Connection: close")
			}
			c.closed()
			if s := recv(t, ch, "the handler"); s.BodyErr == nil {
				t.Errorf("the body read %q without error", s.Body)
			}
			noCall(t, ch)
		})
	}
}

// A refused head pipelined behind a request still being served: the refusal waits until
// that answer is whole (the two never interleave), then the 400 and the close.
func TestFrontRefusalWaitsForAnswer(t *testing.T) {
	release := make(chan struct{})
	h, ch := recorder(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "part one, ")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, big)
	})
	f := start(t, h)
	c := dial(t, f.addr)
	c.send(get("/slow") + "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + hidden)
	recv(t, ch, "the handler")
	close(release)
	resp, body := c.response("GET")
	if resp.StatusCode != 200 || body != "part one, "+big {
		t.Fatalf("first: %d, %d bytes", resp.StatusCode, len(body))
	}
	resp, _ = c.response("GET")
	wantStatus(t, resp, 400)
	c.closed()
	noCall(t, ch)
}
