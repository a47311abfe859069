package frontend_test

// Request bodies: lengths, chunks and trailers, bodies left unread, Expect: 100-continue,
// bodies cut short.

import (
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/proxytest"
)

func TestFrontChunkedTrailers(t *testing.T) {
	type got struct {
		before, after http.Header
		body          string
		err           error
	}
	ch := make(chan got, 1)
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		before := r.Trailer.Clone()
		b, err := io.ReadAll(r.Body)
		ch <- got{before, r.Trailer.Clone(), string(b), err}
	}))
	c := dial(t, f.addr)
	c.send("POST / HTTP/1.1\r\nHost: example.com\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5\r\nhello\r\n0\r\nX-Sum: 42\r\nX-Undeclared: u\r\n\r\n")
	resp, _ := c.response("POST")
	wantStatus(t, resp, 200)
	g := recv(t, ch, "the handler")
	if g.err != nil || g.body != "hello" {
		t.Fatalf("body %q err %v", g.body, g.err)
	}
	// Declared trailers are known, without values, before the body is read.
	if !reflect.DeepEqual(g.before, http.Header{"X-Sum": nil}) {
		t.Errorf("Trailer before EOF %q, want the declared key only", g.before)
	}
	// After EOF they have their values; an undeclared trailer is there too.
	if want := (http.Header{"X-Sum": {"42"}, "X-Undeclared": {"u"}}); !reflect.DeepEqual(g.after, want) {
		t.Errorf("Trailer after EOF %q, want %q", g.after, want)
	}
	c.send(get("/next"))
	resp, _ = c.response("GET")
	wantStatus(t, resp, 200)
}

// unread answers without reading the body.
func unread() (http.Handler, chan string) {
	ch := make(chan string, 4)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ch <- r.URL.Path
		io.WriteString(w, "answer "+r.URL.Path)
	}), ch
}

// A small body the handler leaves unread is discarded by the server, and the connection
// serves the next request.
func TestFrontSmallBodyUnread(t *testing.T) {
	for name, req := range map[string]string{
		"length":  "POST /u HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10000\r\n\r\n" + strings.Repeat("b", 10000),
		"chunked": "POST /u HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n2710\r\n" + strings.Repeat("b", 10000) + "\r\n0\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			h, ch := unread()
			f := start(t, h)
			c := dial(t, f.addr)
			c.send(req + get("/next"))
			resp, body := c.response("POST")
			if body != "answer /u" || resp.Close {
				t.Fatalf("body %q close=%v", body, resp.Close)
			}
			resp, body = c.response("GET")
			if body != "answer /next" {
				t.Fatalf("next: %d %q", resp.StatusCode, body)
			}
			if p := recv(t, ch, "first"); p != "/u" {
				t.Fatal(p)
			}
			if p := recv(t, ch, "next"); p != "/next" {
				t.Fatal(p)
			}
		})
	}
}

// A large body the handler leaves unread (net/http discards at most 256 KiB): the answer
// arrives whole, with Connection: close, and the connection closes.
func TestFrontLargeBodyUnread(t *testing.T) {
	h, ch := unread()
	f := start(t, h)
	c := dial(t, f.addr)
	const size = 4 << 20
	c.send("POST /big HTTP/1.1\r\nHost: example.com\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n")
	wrote := make(chan error, 1)
	go func() {
		_, err := c.c.Write([]byte(strings.Repeat("b", size)))
		wrote <- err
	}()
	resp, body := c.response("POST")
	if resp.StatusCode != 200 || body != "answer /big" || !resp.Close {
		t.Fatalf("%d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	c.rest()
	recv(t, wrote, "the client's write") // cut short or not: it ends
	recv(t, ch, "the handler")
}

func TestFrontExpectContinueRead(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	h, ch := recorder(nil)
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		h.ServeHTTP(w, r)
	}))
	c := dial(t, f.addr)
	c.send("POST /e HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	recv(t, entered, "the handler")
	// Not before the handler reads (a check that can only miss, never fail wrongly).
	c.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if b, err := c.br.Peek(1); err == nil {
		t.Fatalf("the server sent %q before the handler read the body", b)
	}
	c.c.SetReadDeadline(time.Now().Add(proxytest.Liveness))
	close(release)
	// The 100 comes when the handler reads, before the client sends the body.
	if l := c.line(); l != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("first line %q", l)
	}
	if l := c.line(); l != "\r\n" {
		t.Fatalf("after 100: %q, want the end of its head", l)
	}
	c.send("hello")
	resp, body := c.response("POST")
	if resp.StatusCode != 200 || body != "ok" || resp.Close {
		t.Fatalf("%d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	s := recv(t, ch, "the handler")
	if string(s.Body) != "hello" || s.Header.Get("Expect") != "100-continue" {
		t.Fatalf("body %q Expect %q", s.Body, s.Header.Get("Expect"))
	}
	c.send(get("/next"))
	resp, _ = c.response("GET")
	wantStatus(t, resp, 200)
}

// A handler that answers without reading: no 100, the final answer with Connection:
// close. Today the server then still reads (to discard) the declared body before it
// closes: a client that sends it sees the close; one that does not keeps the connection
// until it gives up (no read timeout covers it).
func TestFrontExpectContinueUnread(t *testing.T) {
	h, paths := unread()
	f := start(t, h)
	c := dial(t, f.addr)
	c.send("POST /no HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	resp, body := c.response("POST")
	if resp.StatusCode != 200 || body != "answer /no" || !resp.Close {
		t.Fatalf("%d %q close=%v (a 100 would show as status 100)", resp.StatusCode, body, resp.Close)
	}
	recv(t, paths, "the handler")
	c.c.Write([]byte("hello" + get("/after"))) // may fail if the server closed already
	c.closed()
	select {
	case p := <-paths:
		t.Fatalf("served %q after Connection: close", p)
	default:
	}
}

// An Expect other than 100-continue gets 417, and the handler is not called.
func TestFrontExpectUnknown(t *testing.T) {
	h, ch := recorder(nil)
	f := start(t, h)
	c := dial(t, f.addr)
	c.send("POST / HTTP/1.1\r\nHost: example.com\r\nExpect: 200-ok\r\nContent-Length: 5\r\n\r\nhello")
	resp, _ := c.response("POST")
	wantStatus(t, resp, http.StatusExpectationFailed)
	if !resp.Close {
		t.Errorf("no Connection: close")
	}
	c.closed()
	noCall(t, ch)
}

// A client that stops mid-body: the handler's read fails.
func TestFrontBodyCut(t *testing.T) {
	for name, req := range map[string]string{
		"length":        "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\nhello",
		"chunked data":  "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhello",
		"chunked size":  "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
		"before last":   "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n",
		"trailer field": "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			h, ch := recorder(nil)
			f := start(t, h)
			c := dial(t, f.addr)
			c.send(req)
			c.c.(*net.TCPConn).CloseWrite()
			s := recv(t, ch, "the handler")
			if s.BodyErr == nil {
				t.Fatalf("the cut body read %q without error", s.Body)
			}
			if !errors.Is(s.BodyErr, io.ErrUnexpectedEOF) {
				t.Logf("body error: %v", s.BodyErr)
			}
			c.rest()
		})
	}
}
