package frontend_test

// The connection: a client that goes away, timeouts, hijacking.

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/frontend"
	"github.com/spillway/spillway/proxy/proxytest"
)

// The request's context is cancelled when the client closes the connection while the
// handler waits: for a bodiless GET, and for a POST whose body was read.
func TestFrontClientGoneCancels(t *testing.T) {
	for name, req := range map[string]string{
		"GET":  get("/wait"),
		"POST": "POST /wait HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello",
	} {
		t.Run(name, func(t *testing.T) {
			waiting := make(chan string, 1)
			done := make(chan error, 1)
			f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				waiting <- string(b)
				select {
				case <-r.Context().Done():
					done <- context.Cause(r.Context())
				case <-time.After(proxytest.Liveness):
					done <- nil
				}
			}))
			c := dial(t, f.addr)
			c.send(req)
			body := recv(t, waiting, "the handler")
			if name == "POST" && body != "hello" {
				t.Fatalf("body %q", body)
			}
			c.c.Close()
			if err := recv(t, done, "the handler's end"); err == nil {
				t.Fatal("the context was not cancelled when the client went")
			}
		})
	}
}

// A client that only half-closes (shuts its sending side) after a request still gets the
// answer.
func TestFrontHalfCloseStillAnswered(t *testing.T) {
	release := make(chan struct{})
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "late")
	}))
	c := dial(t, f.addr)
	c.send("GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
	c.c.(interface{ CloseWrite() error }).CloseWrite()
	close(release)
	resp, body := c.response("GET")
	if resp.StatusCode != 200 || body != "late" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

// shortTimeouts: read_header 200ms, idle 300ms.
const shortTimeouts = "timeouts: {read_header: 200ms, idle: 300ms}\n"

// A client sending its head a byte at a time past read_header is closed before the head
// is whole; the handler is never called.
func TestFrontSlowHeadClosed(t *testing.T) {
	h, ch := recorder(nil)
	f := startFront(t, frontConfig(t, shortTimeouts), h)
	c := dial(t, f.addr)
	head := "GET /slow HTTP/1.1\r\nHost: example.com\r\nX-Padding: " + strings.Repeat("p", 100) + "\r\n\r\n"
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond) // the whole head would take 2.6s
		defer tick.Stop()
		for i := range len(head) {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := c.c.Write([]byte{head[i]}); err != nil {
				return
			}
		}
	}()
	begin := time.Now()
	got := c.rest()
	if took := time.Since(begin); took < 150*time.Millisecond {
		t.Errorf("closed after %v, before read_header", took)
	}
	// Today the server closes without a word (net/http sends no 408).
	if got != "" {
		t.Errorf("the server sent %q", got)
	}
	noCall(t, ch)
}

// An idle keep-alive connection is closed after timeouts.idle.
func TestFrontIdleClosed(t *testing.T) {
	h, _ := recorder(nil)
	f := startFront(t, frontConfig(t, shortTimeouts), h)
	c := dial(t, f.addr)
	c.send(get("/"))
	c.response("GET")
	begin := time.Now()
	c.closed()
	if took := time.Since(begin); took < 250*time.Millisecond {
		t.Errorf("closed after %v, before idle", took)
	}
}

// Neither timeout cuts a request once its head is in: a body that pauses longer than
// read_header and idle still arrives, and a handler slower than both still answers.
func TestFrontTimeoutsSpareActiveRequests(t *testing.T) {
	h, ch := recorder(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(700 * time.Millisecond) // longer than read_header and idle
		io.WriteString(w, "slow")
	})
	f := startFront(t, frontConfig(t, shortTimeouts), h)
	c := dial(t, f.addr)
	c.send("POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\nhello")
	time.Sleep(700 * time.Millisecond)
	c.send("world")
	resp, body := c.response("POST")
	if resp.StatusCode != 200 || body != "slow" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if s := recv(t, ch, "the handler"); string(s.Body) != "helloworld" || s.BodyErr != nil {
		t.Fatalf("body %q err %v", s.Body, s.BodyErr)
	}
}

// A handler takes the connection over and talks raw: bytes the client sent after the
// request (in the same write) are read through the returned bufio.Reader.
func TestFrontHijack(t *testing.T) {
	for name, after := range map[string]string{
		"partial line":      "RAW-PIPELINED",
		"raw line":          "RAW-PIPELINED\r\n",
		"binary":            "\x82\x03abc",
		"HTTP request":      get("/pipelined"),
		"bare LF line":      "RAW-PIPELINED\n",
		"complete bad head": "RAW\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			type got struct {
				pipelined, later string
				err              error
			}
			ch := make(chan got, 1)
			f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				conn, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					ch <- got{err: err}
					return
				}
				defer conn.Close()
				// What a handler that tunnels tells the edge: what follows is not HTTP.
				if ec := frontend.ConnOf(r); ec != nil {
					ec.Tunnel()
				}
				conn.SetDeadline(time.Now().Add(proxytest.Liveness))
				brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw\r\nConnection: Upgrade\r\n\r\n")
				brw.Flush()
				var g got
				p := make([]byte, len(after))
				if _, g.err = io.ReadFull(brw, p); g.err == nil {
					g.pipelined = string(p)
					g.later, g.err = brw.ReadString('\n')
					brw.WriteString("echo " + g.later)
					brw.Flush()
				}
				ch <- g
			}))
			c := dial(t, f.addr)
			c.send("GET /up HTTP/1.1\r\nHost: example.com\r\nUpgrade: raw\r\nConnection: Upgrade\r\n\r\n" + after)
			resp := c.head("GET")
			wantStatus(t, resp, http.StatusSwitchingProtocols)
			c.send("later\n")
			if l := c.line(); l != "echo later\n" {
				t.Fatalf("echo %q", l)
			}
			g := recv(t, ch, "the handler")
			if g.err != nil || g.pipelined != after || g.later != "later\n" {
				t.Fatalf("handler read %q then %q: %v", g.pipelined, g.later, g.err)
			}
			c.closed()
		})
	}
}
