package frontend_test

// Attacks on request bodies: bodies read on another goroutine after the handler returned,
// requests hidden in bodies and trailers, oversized framing.

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// bodyChunk is one Read of a body on a goroutine the handler left behind.
type bodyChunk struct {
	b   string
	err error
}

// readOn reads body on a goroutine of its own, reporting every Read, until an error.
func readOn(body io.Reader, ch chan<- bodyChunk) {
	go func() {
		for {
			p := make([]byte, 64)
			n, err := body.Read(p)
			ch <- bodyChunk{string(p[:n]), err}
			if err != nil {
				return
			}
		}
	}()
}

// A handler passes its body to a goroutine and returns while that goroutine waits in a
// Read for the rest of the body: the read is cut (it fails), never fed with what the
// client sends afterwards (the rest, then another request), and the connection closes
// without serving that request.
func TestAttackBodyReaderOutlivesHandler(t *testing.T) {
	chunks := make(chan bodyChunk, 16)
	served := make(chan string, 4)
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served <- r.URL.Path
		if r.URL.Path != "/1" {
			return
		}
		readOn(r.Body, chunks)
		if c := <-chunks; c.b != "hello" || c.err != nil {
			t.Errorf("first read %q %v", c.b, c.err)
		}
		io.WriteString(w, "one") // the goroutine now waits for more of the body
	}))
	c := dial(t, f.addr)
	c.send("POST /1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\nhello")
	if _, body := c.response("POST"); body != "one" {
		t.Fatalf("answer %q", body)
	}
	recv(t, served, "the handler")
	last := recv(t, chunks, "the cut read")
	if last.err == nil || last.b != "" {
		t.Fatalf("the left-behind read got %q, %v; want it cut", last.b, last.err)
	}
	c.c.Write([]byte("world" + get("/2"))) // (may fail: the server closes)
	c.rest()
	noCall(t, served)
	select {
	case c := <-chunks:
		t.Fatalf("a read after the cut: %q %v", c.b, c.err)
	default:
	}
}

// A body left unread and read on another goroutine once the connection serves the next,
// pipelined, request: the read fails, takes nothing of the next request's body, and that
// body reaches its handler whole.
func TestAttackBodyReadDuringNextRequest(t *testing.T) {
	leaked := make(chan io.Reader, 1)
	type got struct {
		late       bodyChunk
		own        string
		ownErr     error
		afterClose error
	}
	ch := make(chan got, 1)
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/1" {
			leaked <- r.Body
			io.WriteString(w, "one")
			return
		}
		var g got
		late := make(chan bodyChunk, 1)
		body1 := <-leaked
		go func() {
			p := make([]byte, 64)
			n, err := body1.Read(p)
			late <- bodyChunk{string(p[:n]), err}
		}()
		g.late = <-late
		b, err := io.ReadAll(r.Body)
		g.own, g.ownErr = string(b), err
		_, g.afterClose = body1.Read(make([]byte, 8))
		ch <- g
		io.WriteString(w, "two")
	}))
	c := dial(t, f.addr)
	c.send("POST /1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello" +
		"POST /2 HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nworld\r\n0\r\n\r\n")
	if _, body := c.response("POST"); body != "one" {
		t.Fatalf("first answer %q", body)
	}
	if _, body := c.response("POST"); body != "two" {
		t.Fatalf("second answer %q", body)
	}
	g := recv(t, ch, "the second handler")
	if g.late.b != "" || !errors.Is(g.late.err, http.ErrBodyReadAfterClose) {
		t.Errorf("the first body, read late: %q %v", g.late.b, g.late.err)
	}
	if g.own != "world" || g.ownErr != nil {
		t.Errorf("the second body: %q %v", g.own, g.ownErr)
	}
	if g.afterClose == nil {
		t.Errorf("a read of the first body after the second's succeeded")
	}
}

// Requests hidden in framing the engine refuses (a trailer line, a chunk extension, a
// chunk-size line) never reach the handler: the body read fails and the connection
// closes.
func TestAttackRequestHiddenInBody(t *testing.T) {
	const hidden = "GET /hidden HTTP/1.1\r\nHost: example.com\r\n\r\n"
	for name, body := range map[string]string{
		"trailer line":      "5\r\nhello\r\n0\r\n" + hidden,
		"trailer bare LF":   "5\r\nhello\r\n0\r\nX-A: 1\n\r\n" + hidden,
		"extension with LF": "5;a=\nb\r\nhello\r\n0\r\n\r\n" + hidden,
		"size then request": "5 " + hidden + "hello\r\n0\r\n\r\n",
		"data overrun":      "3\r\nhello\r\n0\r\n\r\n" + hidden,
		"bad last chunk":    "5\r\nhello\r\n0x\r\n\r\n" + hidden,
		"negative size":     "-5\r\nhello\r\n0\r\n\r\n" + hidden,
		"size overflow":     "10000000000000005\r\nhello\r\n0\r\n\r\n" + hidden,
	} {
		t.Run(name, func(t *testing.T) {
			h, ch := recorder(nil)
			f := start(t, h)
			c := dial(t, f.addr)
			c.send("POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
			s := recv(t, ch, "the handler")
			if s.BodyErr == nil {
				t.Errorf("the body read %q without error", s.Body)
			}
			out := c.rest() // the answer, if any, then the close
			if strings.Count(out, "HTTP/1.1 ") > 1 {
				t.Errorf("more than one answer: %q", out)
			}
			noCall(t, ch)
		})
	}
}

// A trailer section larger than max_header_bytes, and a chunk-size line longer than
// 4 KiB, fail the body read instead of being buffered.
func TestAttackOversizedFraming(t *testing.T) {
	for name, body := range map[string]string{
		"trailer section": "0\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 1000)+"\r\n", 80) + "\r\n",
		"one trailer":     "0\r\nX-Pad: " + strings.Repeat("p", 70<<10) + "\r\n\r\n",
		"chunk extension": "5;" + strings.Repeat("e", 8<<10) + "\r\nhello\r\n0\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			h, ch := readAll()
			f := start(t, h)
			c := dial(t, f.addr)
			go c.c.Write([]byte("POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n" + body))
			if got := recv(t, ch, "the handler"); got.err == nil {
				t.Errorf("read %d bytes without error", got.n)
			}
			c.rest()
		})
	}
}

// An endless body of one-byte chunks that the handler leaves unread: the engine drains at
// most 256 KiB of it, then closes; the request after it is never served.
func TestAttackEndlessTinyChunksUnread(t *testing.T) {
	h, paths := unread()
	f := start(t, h)
	c := dial(t, f.addr)
	stop := make(chan struct{})
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		io.WriteString(c.c, "POST /x HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n")
		block := strings.Repeat("1\r\na\r\n", 1024)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := io.WriteString(c.c, block); err != nil {
				return
			}
		}
	}()
	resp, body := c.response("POST")
	if resp.StatusCode != 200 || body != "answer /x" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	recv(t, paths, "the handler")
	c.rest()
	close(stop)
	<-wrote
	noCall(t, paths)
}
