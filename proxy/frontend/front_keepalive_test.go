package frontend_test

// Keep-alive and pipelining.

import (
	"io"
	"net/http"
	"testing"
)

// pathEcho answers each request with its path, with an explicit length.
func pathEcho() (http.Handler, chan seen) {
	return recorder(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	})
}

func TestFrontKeepAliveSequential(t *testing.T) {
	h, ch := pathEcho()
	f := start(t, h)
	c := dial(t, f.addr)
	for _, p := range []string{"/one", "/two", "/three"} {
		c.send(get(p))
		resp, body := c.response("GET")
		wantStatus(t, resp, 200)
		if body != p || resp.Close {
			t.Fatalf("%s: body %q close=%v, want %q kept alive", p, body, resp.Close, p)
		}
		if s := recv(t, ch, "the handler"); s.Path != p {
			t.Fatalf("handler saw %q, want %q", s.Path, p)
		}
	}
}

func TestFrontPipelinedInOrder(t *testing.T) {
	h, ch := pathEcho()
	f := start(t, h)
	c := dial(t, f.addr)
	c.send(get("/a") + get("/b") + "POST /c HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nxyz" + get("/d"))
	for _, p := range []string{"/a", "/b", "/c", "/d"} {
		resp, body := c.response("GET")
		if resp.StatusCode != 200 || body != p {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, p)
		}
		if s := recv(t, ch, "the handler"); s.Path != p {
			t.Fatalf("handler saw %q, want %q", s.Path, p)
		}
	}
}

func TestFrontHTTP10ClosesByDefault(t *testing.T) {
	h, ch := pathEcho()
	f := start(t, h)
	c := dial(t, f.addr)
	c.send("GET /old HTTP/1.0\r\n\r\n")
	resp, body := c.response("GET")
	wantStatus(t, resp, 200)
	if body != "/old" || resp.Proto != "HTTP/1.0" {
		t.Fatalf("body %q proto %q", body, resp.Proto)
	}
	// net/http's response to a 1.0 client without keep-alive has no Connection header, but
	// the connection is closed after it.
	if !resp.Close {
		t.Errorf("response not marked close (Connection %q)", resp.Header.Get("Connection"))
	}
	c.closed()
	if s := recv(t, ch, "the handler"); s.Proto != "HTTP/1.0" || s.Host != "" {
		t.Fatalf("handler saw proto %q host %q", s.Proto, s.Host)
	}
}

func TestFrontHTTP10KeepAlive(t *testing.T) {
	h, _ := pathEcho()
	f := start(t, h)
	c := dial(t, f.addr)
	for _, p := range []string{"/x", "/y"} {
		c.send("GET " + p + " HTTP/1.0\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n")
		resp, body := c.response("GET")
		if body != p || resp.Close || resp.Header.Get("Connection") != "keep-alive" {
			t.Fatalf("body %q close=%v Connection %q, want %q kept alive (Connection: keep-alive)",
				body, resp.Close, resp.Header.Get("Connection"), p)
		}
		if resp.ContentLength != int64(len(p)) {
			t.Fatalf("Content-Length %d", resp.ContentLength)
		}
	}
}

func TestFrontClientConnectionClose(t *testing.T) {
	h, ch := pathEcho()
	f := start(t, h)
	c := dial(t, f.addr)
	// What follows the Connection: close request is never served.
	c.send("GET /last HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n" + get("/after"))
	resp, body := c.response("GET")
	// resp.Close: "Connection: close" was on the wire (http.ReadResponse removes the header).
	if body != "/last" || !resp.Close {
		t.Fatalf("body %q close=%v, want /last with Connection: close", body, resp.Close)
	}
	c.closed()
	if s := recv(t, ch, "the handler"); s.Path != "/last" {
		t.Fatalf("handler saw %q", s.Path)
	}
	noCall(t, ch)
}

func TestFrontHandlerConnectionClose(t *testing.T) {
	h, ch := recorder(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	f := start(t, h)
	c := dial(t, f.addr)
	c.send(get("/first") + get("/second"))
	resp, body := c.response("GET")
	if body != "bye" || !resp.Close {
		t.Fatalf("body %q close=%v, want Connection: close", body, resp.Close)
	}
	c.closed()
	recv(t, ch, "the handler")
	// The pipelined second request may or may not have reached the handler: net/http
	// reads it only after the first answer. Today it never does.
	noCall(t, ch)
}

// After a Connection: close request, nothing more is read or answered, even what would be
// refused: the client gets exactly one answer.
func TestFrontConnectionCloseThenGarbage(t *testing.T) {
	for name, after := range map[string]string{
		"refusable head": "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"bare LF":        "junk\n",
	} {
		t.Run(name, func(t *testing.T) {
			release := make(chan struct{})
			h, ch := recorder(func(w http.ResponseWriter, r *http.Request) {
				<-release // the rest has surely been read by the server meanwhile, or not: either way
				io.WriteString(w, "only")
			})
			f := start(t, h)
			c := dial(t, f.addr)
			c.send("GET /c HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n" + after)
			recv(t, ch, "the handler")
			close(release)
			resp, body := c.response("GET")
			if body != "only" || !resp.Close {
				t.Fatalf("body %q close=%v", body, resp.Close)
			}
			c.closed()
			noCall(t, ch)
		})
	}
}
