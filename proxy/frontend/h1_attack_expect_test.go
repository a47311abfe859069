package frontend_test

// Expect: 100-continue from clients that do not wait for the 100, with pipelining.

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// finalResponse reads answers until a final (non-1xx) one, and returns it with its body
// and the 1xx statuses before it.
func (c *rawConn) finalResponse(method string) (*http.Response, string, []int) {
	c.t.Helper()
	var early []int
	for {
		resp, body := c.response(method)
		if resp.StatusCode >= 200 {
			return resp, body, early
		}
		early = append(early, resp.StatusCode)
	}
}

// A client that sends its body with the head, without waiting for the 100, and pipelines
// a GET after it: the handler that reads gets the body whole (the 100, if sent, comes
// before the final answer), and the GET is served next with its own answer.
func TestAttackExpectContinueNoWait(t *testing.T) {
	for name, body := range map[string]string{
		"length":  "Content-Length: 11\r\n\r\nhello world",
		"chunked": "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			h, ch := recorder(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "answer "+r.URL.Path)
			})
			f := start(t, h)
			c := dial(t, f.addr)
			c.send("POST /up HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\n" + body + get("/next"))
			resp, got, early := c.finalResponse("POST")
			if resp.StatusCode != 200 || got != "answer /up" {
				t.Fatalf("%d %q", resp.StatusCode, got)
			}
			if len(early) > 1 || len(early) == 1 && early[0] != 100 {
				t.Fatalf("1xx before the answer: %v", early)
			}
			if s := recv(t, ch, "the upload"); string(s.Body) != "hello world" || s.BodyErr != nil {
				t.Fatalf("body %q %v", s.Body, s.BodyErr)
			}
			resp, got, early = c.finalResponse("GET")
			if resp.StatusCode != 200 || got != "answer /next" || len(early) != 0 {
				t.Fatalf("next: %d %q after %v", resp.StatusCode, got, early)
			}
			if s := recv(t, ch, "the GET"); s.Path != "/next" {
				t.Fatalf("served %q", s.Path)
			}
		})
	}
}

// The same client, with a handler that answers without reading: no 100, the answer says
// Connection: close, and neither the body (which holds a request) nor the GET after it is
// served.
func TestAttackExpectContinueNoWaitUnread(t *testing.T) {
	h, paths := unread()
	f := start(t, h)
	c := dial(t, f.addr)
	hidden := get("/hidden")
	c.send("POST /up HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\nContent-Length: " +
		strconv.Itoa(len(hidden)) + "\r\n\r\n" + hidden + get("/next"))
	resp, body, early := c.finalResponse("POST")
	if resp.StatusCode != 200 || body != "answer /up" || !resp.Close || len(early) != 0 {
		t.Fatalf("%d %q close=%v after %v", resp.StatusCode, body, resp.Close, early)
	}
	if rest := c.rest(); strings.Contains(rest, "HTTP/1.1") {
		t.Fatalf("more after the close: %q", rest)
	}
	recv(t, paths, "the handler")
	noCall(t, paths)
}

// A POST whose handler hijacks without reading its body: the unread body and what follows
// come first through the hijacked connection, in order.
func TestAttackHijackUnreadBody(t *testing.T) {
	got := make(chan string, 1)
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			got <- err.Error()
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		p := make([]byte, len("hello world!"))
		io.ReadFull(brw, p)
		got <- string(p)
	}))
	c := dial(t, f.addr)
	c.send("POST /up HTTP/1.1\r\nHost: example.com\r\nUpgrade: raw\r\nConnection: Upgrade\r\nContent-Length: 5\r\n\r\nhel")
	wantStatus(t, c.head("POST"), http.StatusSwitchingProtocols)
	c.send("lo world!")
	if g := recv(t, got, "the hijacker"); g != "hello world!" {
		t.Fatalf("the hijacker read %q", g)
	}
}

// Shutdown while a body is still arriving: the request is let finish (its body whole),
// its answer says Connection: close, and Shutdown returns once it is answered.
func TestAttackShutdownMidBody(t *testing.T) {
	entered := make(chan string, 2)
	h, ch := recorder(nil)
	srv, addr, served := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- r.URL.Path
		h.ServeHTTP(w, r)
	}))
	other := dial(t, addr)
	other.send(get("/other"))
	other.response("GET")
	recv(t, entered, "the other request")
	if s := recv(t, ch, "the other request"); s.Path != "/other" {
		t.Fatalf("served %q first", s.Path)
	}
	c := dial(t, addr)
	c.send("POST /up HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	recv(t, entered, "the upload's handler") // it now waits for the rest of the body
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	other.closed() // idle: closed by Shutdown, which has begun
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a body still arriving", err)
	default:
	}
	c.send("6\r\n world\r\n0\r\n\r\n")
	resp, body := c.response("POST")
	if resp.StatusCode != 200 || body != "ok" || !resp.Close {
		t.Fatalf("%d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	if s := recv(t, ch, "the upload"); string(s.Body) != "hello world" || s.BodyErr != nil {
		t.Fatalf("body %q %v", s.Body, s.BodyErr)
	}
	c.closed()
	if err := recv(t, shut, "Shutdown"); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := recv(t, served, "Serve"); !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
}
