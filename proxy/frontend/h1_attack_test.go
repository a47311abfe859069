package frontend_test

// Attacks on the HTTP/1.1 engine through real sockets, from an attacker's review: each
// test says what it pins; the eight that found bugs (chunk-extension amplification, in the
// body and in its drain, a 100 Continue to HTTP/1.0, a writer used after its handler
// returned, framing fields as trailers and in 1xx heads, accept's EMFILE, linger after
// Close) pass since their fixes.

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// bodyRead is what a handler got from reading its whole body.
type bodyRead struct {
	n   int
	err error
}

// readAll is a handler that reads its whole body and reports it.
func readAll() (http.Handler, chan bodyRead) {
	ch := make(chan bodyRead, 4)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		ch <- bodyRead{len(b), err}
	}), ch
}

// A chunked body whose chunks carry a byte of data each behind a 4000-byte extension
// makes the server read 4000 times the body from the network. net/http refuses such a
// body after 16 KiB of overhead ("chunked encoding contains too much non-data",
// CVE-2023-39326); the engine must not read megabytes for a few hundred bytes of body.
func TestAttackChunkExtensionAmplification(t *testing.T) {
	h, ch := readAll()
	f := start(t, h)
	c := dial(t, f.addr)
	const chunks = 1000
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		io.WriteString(c.c, "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n")
		chunk := "1;" + strings.Repeat("x", 4000) + "\r\na\r\n"
		for range chunks {
			if _, err := io.WriteString(c.c, chunk); err != nil {
				return // the server gave up: what is wanted
			}
		}
		io.WriteString(c.c, "0\r\n\r\n")
	}()
	got := recv(t, ch, "the handler")
	if got.err == nil || got.n >= chunks/10 {
		t.Errorf("the handler read %d bytes of body (err %v) from %d MB of chunk extensions", got.n, got.err, chunks*4000>>20)
	}
	c.c.Close()
	<-sent
}

// A handler that leaves the same body unread: the drain must not read megabytes of
// extensions either (it counts only data toward its 256 KiB).
func TestAttackChunkExtensionDrain(t *testing.T) {
	h, paths := unread()
	f := start(t, h)
	c := dial(t, f.addr)
	const chunks = 2000
	wrote := make(chan int, 1)
	go func() {
		io.WriteString(c.c, "POST /x HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n")
		chunk := "1;" + strings.Repeat("x", 4000) + "\r\na\r\n"
		n := 0
		for ; n < chunks; n++ {
			if _, err := io.WriteString(c.c, chunk); err != nil {
				break
			}
		}
		io.WriteString(c.c, "0\r\n\r\n"+get("/next"))
		wrote <- n
	}()
	resp, _ := c.response("POST")
	recv(t, paths, "the handler")
	n := recv(t, wrote, "the client's writes")
	// 2000 chunks are 8 MB; a server that bounds the framing it drains closes after a
	// few of them, and the client's writes fail (the kernel buffers some).
	if n == chunks {
		t.Errorf("the server drained %d MB of chunk extensions for %d bytes of body (close=%v)", chunks*4000>>20, chunks, resp.Close)
	}
}

// A client that speaks HTTP/1.0 does not know 1xx answers (RFC 9110 section 15.2: a
// server must not send one to it): "Expect: 100-continue" from it gets no 100, or the
// client takes the 100 for its answer and every later answer for the request before.
func TestAttackExpectContinueHTTP10(t *testing.T) {
	h, ch := recorder(nil)
	f := start(t, h)
	c := dial(t, f.addr)
	c.send("POST /e HTTP/1.0\r\nHost: example.com\r\nConnection: keep-alive\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello")
	resp, body := c.response("POST")
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("first answer %d %q, want 200 \"ok\"", resp.StatusCode, body)
	}
	if s := recv(t, ch, "the handler"); string(s.Body) != "hello" {
		t.Fatalf("handler read %q", s.Body)
	}
}

// lateCall runs f, as a goroutine that outlived its handler would, and reports its error
// or its panic.
func lateCall(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return f()
}

// A ResponseWriter used after its handler returned (net/http forbids it, but handlers
// that leak one to a goroutine exist) must fail, not crash the process, and never write
// into another answer. Request /1 leaks its writer; request /2, on the same connection,
// lets the leaked writer be used while it is served: before its head is out (the
// connection holds no write buffer then) or after (it holds /2's).
func TestAttackWriterUsedAfterReturn(t *testing.T) {
	for _, flushed := range []bool{false, true} {
		for _, late := range []string{"Write", "Flush"} {
			t.Run(fmt.Sprintf("%s/flushed=%v", late, flushed), func(t *testing.T) {
				leaked := make(chan http.ResponseWriter, 1)
				poke, poked := make(chan struct{}), make(chan error, 1)
				f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/1" {
						w.(http.Flusher).Flush() // chunked: a late write would be a chunk
						io.WriteString(w, "one")
						leaked <- w
						return
					}
					if flushed {
						w.(http.Flusher).Flush()
					}
					poke <- struct{}{}
					if err := <-poked; err == nil || strings.HasPrefix(err.Error(), "panic:") {
						t.Errorf("the leaked writer's %s: %v (want an error)", late, err)
					}
					io.WriteString(w, "two")
				}))
				go func() {
					w := <-leaked
					<-poke
					poked <- lateCall(func() error {
						if late == "Flush" {
							return http.NewResponseController(w).Flush()
						}
						_, err := io.WriteString(w, "EVIL")
						return err
					})
				}()
				c := dial(t, f.addr)
				c.send(get("/1"))
				if _, body := c.response("GET"); body != "one" {
					t.Fatalf("/1: %q", body)
				}
				c.send(get("/2"))
				if _, body := c.response("GET"); body != "two" {
					t.Fatalf("/2: %q, want \"two\"", body)
				}
			})
		}
	}
}
