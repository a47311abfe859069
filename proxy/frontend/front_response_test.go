package frontend_test

// Responses: framing of what a handler writes, HEAD and bodiless statuses, 1xx, trailers,
// streaming, aborts and overlong writes.

import (
	"errors"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// big is larger than any response buffer, so that its length is not known before it is sent.
var big = strings.Repeat("0123456789abcdef", 4096)

func TestFrontResponseChunkedHTTP11(t *testing.T) {
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) }))
	c := dial(t, f.addr)
	c.send(get("/") + get("/again"))
	for range 2 {
		resp, body := c.response("GET")
		if !reflect.DeepEqual(resp.TransferEncoding, []string{"chunked"}) || resp.ContentLength != -1 || body != big || resp.Close {
			t.Fatalf("TE %q CL %d close=%v body %d bytes", resp.TransferEncoding, resp.ContentLength, resp.Close, len(body))
		}
	}
}

func TestFrontResponseCloseDelimitedHTTP10(t *testing.T) {
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) }))
	c := dial(t, f.addr)
	c.send("GET / HTTP/1.0\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n")
	resp := c.head("GET")
	if resp.TransferEncoding != nil || resp.ContentLength != -1 || !resp.Close || resp.Header.Get("Connection") == "keep-alive" {
		t.Fatalf("TE %q CL %d close=%v Connection %q, want the body delimited by the close",
			resp.TransferEncoding, resp.ContentLength, resp.Close, resp.Header.Get("Connection"))
	}
	if body := c.rest(); body != big {
		t.Fatalf("body %d bytes", len(body))
	}
}

// A small answer with no explicit length gets a Content-Length (the server saw it whole),
// and a Content-Type sniffed from it.
func TestFrontResponseSmallGetsLength(t *testing.T) {
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>hi</html>") }))
	c := dial(t, f.addr)
	c.send(get("/"))
	resp, body := c.response("GET")
	if resp.ContentLength != 15 || resp.TransferEncoding != nil || body != "<html>hi</html>" {
		t.Fatalf("CL %d TE %q body %q", resp.ContentLength, resp.TransferEncoding, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	if d, err := http.ParseTime(resp.Header.Get("Date")); err != nil || time.Since(d) > time.Minute || time.Until(d) > time.Minute {
		t.Errorf("Date %q: %v", resp.Header.Get("Date"), err)
	}
}

func TestFrontResponseEmptyBody(t *testing.T) {
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	c := dial(t, f.addr)
	c.send(get("/"))
	resp, body := c.response("GET")
	if resp.StatusCode != 200 || resp.ContentLength != 0 || body != "" || resp.Header.Get("Content-Type") != "" {
		t.Fatalf("%d CL %d body %q Content-Type %q", resp.StatusCode, resp.ContentLength, body, resp.Header.Get("Content-Type"))
	}
}

func TestFrontResponseExplicitLength(t *testing.T) {
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(big)))
		w.Header().Set("Content-Type", "application/octet-stream")
		io.WriteString(w, big)
	}))
	c := dial(t, f.addr)
	c.send(get("/"))
	resp, body := c.response("GET")
	if resp.ContentLength != int64(len(big)) || resp.TransferEncoding != nil || body != big {
		t.Fatalf("CL %d TE %q body %d bytes", resp.ContentLength, resp.TransferEncoding, len(body))
	}
}

// HEAD: the headers a GET would have, no body bytes on the wire (the pipelined request's
// answer follows the head directly).
func TestFrontHead(t *testing.T) {
	for name, h := range map[string]http.HandlerFunc{
		"small": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Kept", "yes")
			io.WriteString(w, "hello")
		},
		"explicit length": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Kept", "yes")
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := start(t, h)
			c := dial(t, f.addr)
			c.send("HEAD / HTTP/1.1\r\nHost: example.com\r\n\r\n" + get("/"))
			resp, _ := c.response("HEAD")
			if resp.StatusCode != 200 || resp.Header.Get("X-Kept") != "yes" || resp.ContentLength != 5 {
				t.Fatalf("%d X-Kept %q CL %d", resp.StatusCode, resp.Header.Get("X-Kept"), resp.ContentLength)
			}
			if l := c.line(); l != "HTTP/1.1 200 OK\r\n" {
				t.Fatalf("after the HEAD answer: %q", l)
			}
		})
	}
	t.Run("large", func(t *testing.T) {
		f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) }))
		c := dial(t, f.addr)
		c.send("HEAD / HTTP/1.1\r\nHost: example.com\r\n\r\n" + get("/"))
		resp, _ := c.response("HEAD")
		wantStatus(t, resp, 200)
		if l := c.line(); l != "HTTP/1.1 200 OK\r\n" {
			t.Fatalf("after the HEAD answer: %q", l)
		}
	})
}

// 204 and 304 carry no body: what the handler writes is refused (http.ErrBodyNotAllowed),
// and nothing but the head is sent.
func TestFrontNoBodyStatuses(t *testing.T) {
	for _, code := range []int{http.StatusNoContent, http.StatusNotModified} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			errs := make(chan error, 2)
			f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/next" {
					io.WriteString(w, "next")
					return
				}
				w.Header().Set("ETag", `"x"`)
				w.WriteHeader(code)
				_, err := io.WriteString(w, "body")
				errs <- err
			}))
			c := dial(t, f.addr)
			c.send(get("/") + get("/next"))
			resp := c.head("GET")
			if resp.StatusCode != code || resp.Header.Get("ETag") != `"x"` || resp.Header.Get("Content-Length") != "" ||
				resp.TransferEncoding != nil {
				t.Fatalf("%d ETag %q CL %q TE %q", resp.StatusCode, resp.Header.Get("ETag"), resp.Header.Get("Content-Length"), resp.TransferEncoding)
			}
			if l := c.line(); l != "HTTP/1.1 200 OK\r\n" {
				t.Fatalf("after the %d: %q", code, l)
			}
			if err := recv(t, errs, "the handler"); !errors.Is(err, http.ErrBodyNotAllowed) {
				t.Errorf("Write: %v, want ErrBodyNotAllowed", err)
			}
		})
	}
}

// Informational answers written by the handler arrive before the final one.
func TestFrontEarlyHints(t *testing.T) {
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Link", "</app.js>; rel=preload; as=script")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "final")
	}))
	c := dial(t, f.addr)
	c.send(get("/"))
	for _, link := range [][]string{
		{"</style.css>; rel=preload; as=style"},
		{"</app.js>; rel=preload; as=script"},
	} {
		resp := c.head("GET")
		if resp.StatusCode != 103 || !reflect.DeepEqual(resp.Header["Link"], link) {
			t.Fatalf("%d Link %q, want 103 %q", resp.StatusCode, resp.Header["Link"], link)
		}
	}
	resp, body := c.response("GET")
	if resp.StatusCode != 200 || body != "final" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	// The final answer keeps the headers set by then, the Link too.
	if resp.Header.Get("Link") != "</app.js>; rel=preload; as=script" {
		t.Errorf("final Link %q", resp.Header["Link"])
	}
}

func TestFrontResponseTrailers(t *testing.T) {
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Declared")
		w.WriteHeader(200)
		io.WriteString(w, "body")
		w.Header().Set("X-Declared", "d")
		w.Header().Set(http.TrailerPrefix+"X-Late", "l")
	}))
	c := dial(t, f.addr)
	c.send(get("/") + get("/"))
	for range 2 {
		resp, body := c.response("GET")
		if !reflect.DeepEqual(resp.TransferEncoding, []string{"chunked"}) || body != "body" {
			t.Fatalf("TE %q body %q", resp.TransferEncoding, body)
		}
		if want := (http.Header{"X-Declared": {"d"}, "X-Late": {"l"}}); !reflect.DeepEqual(resp.Trailer, want) {
			t.Fatalf("trailers %q, want %q", resp.Trailer, want)
		}
	}
}

// Flush sends what was written: the client reads it before the handler writes more.
func TestFrontFlushStreams(t *testing.T) {
	next := make(chan struct{})
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		<-next
		io.WriteString(w, "second")
	}))
	c := dial(t, f.addr)
	c.send(get("/"))
	resp := c.head("GET")
	if !reflect.DeepEqual(resp.TransferEncoding, []string{"chunked"}) {
		t.Fatalf("TE %q", resp.TransferEncoding)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("read %q: %v", buf, err)
	}
	close(next)
	if rest, err := io.ReadAll(resp.Body); err != nil || string(rest) != "second" {
		t.Fatalf("then %q: %v", rest, err)
	}
}

// A handler that aborts (panic(http.ErrAbortHandler)) mid-body: the client sees the
// connection cut, never the last chunk of a complete body.
func TestFrontAbortMidBody(t *testing.T) {
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	c := dial(t, f.addr)
	c.send(get("/") + get("/next"))
	resp := c.head("GET")
	b, err := io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) || string(b) != "partial" {
		t.Fatalf("body %q err %v, want the partial body and an unexpected EOF", b, err)
	}
	c.closed()
}

// The same abort with an explicit length: the body is short, then the close.
func TestFrontAbortMidBodyWithLength(t *testing.T) {
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	c := dial(t, f.addr)
	c.send(get("/"))
	resp := c.head("GET")
	b, err := io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) || string(b) != "partial" {
		t.Fatalf("body %q err %v", b, err)
	}
}

// Writes past the declared Content-Length fail (http.ErrContentLength) and are not sent:
// a write within the length goes out, the one that crosses it is refused whole, and the
// connection closes after the answer.
func TestFrontWriteBeyondLength(t *testing.T) {
	errs := make(chan error, 2)
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/next" {
			io.WriteString(w, "next")
			return
		}
		w.Header().Set("Content-Length", "5")
		_, err := io.WriteString(w, "hello")
		errs <- err
		_, err = io.WriteString(w, "EXTRA")
		errs <- err
	}))
	c := dial(t, f.addr)
	c.send(get("/") + get("/next"))
	resp, body := c.response("GET")
	if resp.ContentLength != 5 || body != "hello" {
		t.Fatalf("CL %d body %q", resp.ContentLength, body)
	}
	if err := recv(t, errs, "the handler"); err != nil {
		t.Errorf("first Write: %v", err)
	}
	if err := recv(t, errs, "the handler"); !errors.Is(err, http.ErrContentLength) {
		t.Errorf("second Write: %v, want ErrContentLength", err)
	}
	// Nothing follows: the server closes the connection after such an answer (today,
	// without Connection: close in it).
	c.closed()
}

// One write longer than the declared length is refused whole: the client gets the head,
// none of the body, and the close.
func TestFrontOneWriteBeyondLength(t *testing.T) {
	errs := make(chan error, 1)
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		_, err := io.WriteString(w, "helloEXTRA")
		errs <- err
	}))
	c := dial(t, f.addr)
	c.send(get("/") + get("/next"))
	resp := c.head("GET")
	b, err := io.ReadAll(resp.Body)
	if resp.ContentLength != 5 || !errors.Is(err, io.ErrUnexpectedEOF) || len(b) != 0 {
		t.Fatalf("CL %d body %q err %v", resp.ContentLength, b, err)
	}
	if err := recv(t, errs, "the handler"); !errors.Is(err, http.ErrContentLength) {
		t.Errorf("Write: %v, want ErrContentLength", err)
	}
	c.closed()
}

// A handler that writes less than its declared Content-Length: the client gets the short
// body and then the close.
func TestFrontWriteShortOfLength(t *testing.T) {
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		io.WriteString(w, "short")
	}))
	c := dial(t, f.addr)
	c.send(get("/") + get("/next"))
	resp := c.head("GET")
	b, err := io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) || string(b) != "short" {
		t.Fatalf("body %q err %v", b, err)
	}
	c.closed()
}

// A handler that panics before writing: the client gets no answer, only the close (the
// server recovers; it sends no 500).
func TestFrontPanicBeforeWrite(t *testing.T) {
	for name, v := range map[string]any{"ErrAbortHandler": http.ErrAbortHandler, "other": "boom"} {
		t.Run(name, func(t *testing.T) {
			f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Set", "1")
				panic(v)
			}))
			c := dial(t, f.addr)
			c.send(get("/") + get("/next"))
			c.closed()
		})
	}
}
