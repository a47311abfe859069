package frontend_test

// Graceful shutdown, and HTTP/2 with prior knowledge (h2c) on the plain listener.

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/proxytest"
)

// Shutdown with a request in flight: new connections are refused, the idle connection is
// closed, the request in flight finishes and its client gets the whole answer (marked
// Connection: close), and Shutdown returns once it is done.
func TestFrontShutdown(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
			io.WriteString(w, big)
			return
		}
		io.WriteString(w, "quick")
	}))
	idle := dial(t, f.addr)
	idle.send(get("/"))
	if _, body := idle.response("GET"); body != "quick" {
		t.Fatalf("idle connection's answer %q", body)
	}
	busy := dial(t, f.addr)
	busy.send(get("/slow"))
	recv(t, started, "the slow request")

	ctx, cancel := context.WithTimeout(context.Background(), proxytest.Liveness)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- f.shutdown(ctx) }()

	idle.closed()
	proxytest.WaitFor(t, "new connections refused", func() bool {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	close(release)
	resp, body := busy.response("GET")
	if resp.StatusCode != 200 || body != big {
		t.Fatalf("in-flight answer: %d, %d bytes", resp.StatusCode, len(body))
	}
	if !resp.Close {
		t.Errorf("the in-flight answer is not marked Connection: close")
	}
	busy.closed()
	if err := recv(t, shut, "Shutdown"); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// A connection with a partial head is closed by Shutdown too (today net/http counts it
// idle only once it is 5s old, so Shutdown returns after about 5s).
func TestFrontShutdownClosesNewConn(t *testing.T) {
	h, ch := recorder(nil)
	f := start(t, h)
	c := dial(t, f.addr)
	c.c.SetDeadline(time.Now().Add(2 * proxytest.Liveness)) // Shutdown takes 5s of it
	c.send("GET / HTTP/1.1\r\n")                            // a partial head
	// Once a request has been served on another connection the server is surely running;
	// the partial one may or may not have been accepted yet: either way it must end.
	other := dial(t, f.addr)
	other.send(get("/"))
	other.response("GET")
	recv(t, ch, "the handler")
	ctx, cancel := context.WithTimeout(context.Background(), 2*proxytest.Liveness)
	defer cancel()
	if err := f.shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	c.rest()
	other.closed()
	noCall(t, ch)
}

// h2c: an HTTP/2 client with prior knowledge is served on the plain listener.
func TestFrontH2CPriorKnowledge(t *testing.T) {
	h, ch := recorder(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-T")
		io.WriteString(w, "h2 "+r.URL.Path)
		w.Header().Set("X-T", "t")
	})
	cfg := frontConfig(t, "")
	if !cfg.Listen.H2C {
		t.Fatal("listen.h2c is not on by default")
	}
	f := startFront(t, cfg, h)
	client := h2cClient(t)
	for _, method := range []string{"GET", "POST"} {
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("payload")
		}
		req, _ := http.NewRequest(method, "http://"+f.addr+"/p?q=1", body)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(b) != "h2 /p" || resp.Trailer.Get("X-T") != "t" {
			t.Fatalf("%s: %s %d %q trailer %q: %v", method, resp.Proto, resp.StatusCode, b, resp.Trailer, err)
		}
		s := recv(t, ch, "the handler")
		if s.ProtoMajor != 2 || s.Method != method || s.RawQuery != "q=1" || s.Host != f.addr {
			t.Fatalf("handler saw %s %s %q host %q", s.Proto, s.Method, s.RawQuery, s.Host)
		}
		if method == "POST" && string(s.Body) != "payload" {
			t.Fatalf("handler read %q", s.Body)
		}
	}
}

// With listen.h2c off, the HTTP/2 preface is refused and the handler never called.
func TestFrontH2COff(t *testing.T) {
	h, ch := recorder(nil)
	cfg := frontConfig(t, "")
	cfg.Listen.H2C = false
	f := startFront(t, cfg, h)
	resp, err := h2cClient(t).Get("http://" + f.addr + "/")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("HTTP/2 with h2c off: %s %d", resp.Proto, resp.StatusCode)
	}
	c := dial(t, f.addr)
	c.send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	got := c.rest()
	if !strings.HasPrefix(got, "HTTP/1.1 400 ") {
		t.Errorf("the preface got %q", got)
	}
	noCall(t, ch)
}

// An "Upgrade: h2c" request is served as HTTP/1.1, not upgraded.
func TestFrontNoH2CUpgrade(t *testing.T) {
	h, ch := recorder(nil)
	f := start(t, h)
	c := dial(t, f.addr)
	c.send("GET / HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
	resp, body := c.response("GET")
	if resp.StatusCode != 200 || resp.Proto != "HTTP/1.1" || body != "ok" {
		t.Fatalf("%s %d %q", resp.Proto, resp.StatusCode, body)
	}
	if s := recv(t, ch, "the handler"); s.ProtoMajor != 1 || s.Header.Get("Upgrade") != "h2c" {
		t.Fatalf("handler saw %s Upgrade %q", s.Proto, s.Header.Get("Upgrade"))
	}
}

// h2cClient speaks HTTP/2 with prior knowledge over plain TCP.
func h2cClient(t *testing.T) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: proxytest.Liveness}
}
