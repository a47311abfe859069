package frontend_test

// Attacks on connections: the h2c preface, clients that go, stall or never read, and
// Shutdown and Close with connections in every state.

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/frontend"
	"github.com/spillway/spillway/proxy/proxytest"
)

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// dribbleConn writes its first n bytes one at a time (so that the server's reads see
// the HTTP/2 preface in pieces, as far as the network keeps them apart).
type dribbleConn struct {
	net.Conn
	n int
}

func (c *dribbleConn) Write(p []byte) (int, error) {
	written := 0
	for c.n > 0 && len(p) > 0 {
		if _, err := c.Conn.Write(p[:1]); err != nil {
			return written, err
		}
		p, c.n, written = p[1:], c.n-1, written+1
	}
	n, err := c.Conn.Write(p)
	return written + n, err
}

// The HTTP/2 preface split across writes is recognised and handed to net/http whole.
func TestAttackH2CPrefaceSplit(t *testing.T) {
	h, ch := recorder(nil)
	f := start(t, h)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		c.(*net.TCPConn).SetNoDelay(true)
		return &dribbleConn{Conn: c, n: len(h2Preface)}, nil
	}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: proxytest.Liveness}
	resp, err := client.Get("http://" + f.addr + "/split")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(b) != "ok" {
		t.Fatalf("%s %q", resp.Proto, b)
	}
	if s := recv(t, ch, "the handler"); s.ProtoMajor != 2 || s.Path != "/split" {
		t.Fatalf("handler saw %s %s", s.Proto, s.Path)
	}
}

// What only looks like the preface is HTTP/1 (and refused), never handed to net/http:
// the preface cut short, differing in its last byte, or sent after a first request.
func TestAttackH2CNearPreface(t *testing.T) {
	for name, tc := range map[string]struct {
		send   string
		answer string // what the client gets first: "" (a close), or the start of a 400
	}{
		"cut short":       {h2Preface[:20], ""},
		"last byte":       {h2Preface[:23] + "X", "HTTP/1.1 400 "},
		"lower case":      {strings.ToLower(h2Preface), "HTTP/1.1 400 "},
		"as a second":     {get("/first") + h2Preface, "HTTP/1.1 200 OK"},
		"with CRLF first": {"\r\n" + h2Preface[:16] + "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400 "},
	} {
		t.Run(name, func(t *testing.T) {
			h, ch := recorder(nil)
			f := start(t, h)
			c := dial(t, f.addr)
			c.send(tc.send)
			c.c.(*net.TCPConn).CloseWrite()
			got := c.rest()
			if !strings.HasPrefix(got, tc.answer) {
				t.Fatalf("got %q, want it to start with %q", got, tc.answer)
			}
			if name == "as a second" {
				if s := recv(t, ch, "the first request"); s.Path != "/first" {
					t.Fatalf("served %q", s.Path)
				}
				if strings.Count(got, "HTTP/1.1 ") != 2 || !strings.Contains(got, "HTTP/1.1 400 ") {
					t.Fatalf("after the first answer: %q", got)
				}
			}
			noCall(t, ch)
		})
	}
}

// A GET whose client sends part of another request and then closes: the handler still
// runs to its end (net/http stops watching once a pipelined byte comes, and so does the
// engine), nothing more is served, and nothing is left running.
func TestAttackClientGoneAfterExtraBytes(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	ended := make(chan error, 1)
	served := make(chan string, 4)
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served <- r.URL.Path
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		_, err := io.WriteString(w, strings.Repeat("x", 1<<20))
		ended <- err
	}))
	c := dial(t, f.addr)
	c.send(get("/wait") + "GET /partial HTTP/1.1\r\nHo")
	recv(t, entered, "the handler")
	c.c.Close()
	close(release)
	recv(t, ended, "the handler's end")
	if p := recv(t, served, "the handler"); p != "/wait" {
		t.Fatalf("served %q", p)
	}
	noCall(t, served)
}

// newServer serves h on a loopback listener, and returns the server, its address and a
// channel with Serve's result; the test closes it.
func newServer(t *testing.T, h http.Handler) (*frontend.Server, string, chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, served := serveOn(t, ln, h)
	return srv, ln.Addr().String(), served
}

// serveOn serves h on ln, and returns the server and a channel with Serve's result; the
// test closes the server (and ln is closed when the test ends, whatever happens).
func serveOn(t *testing.T, ln net.Listener, h http.Handler) (*frontend.Server, chan error) {
	t.Helper()
	t.Cleanup(func() { ln.Close() })
	srv := frontend.NewServer(frontConfig(t, ""), h, nil)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	return srv, served
}

// A client that never reads a large answer blocks its handler's writes (no write timeout
// is set); Shutdown gives up at its context, and Close ends the write with an error and
// Serve with http.ErrServerClosed.
func TestAttackClientNeverReads(t *testing.T) {
	wrote := make(chan error, 1)
	entered := make(chan struct{}, 1)
	srv, addr, served := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		chunk := []byte(strings.Repeat("x", 64<<10))
		for {
			if _, err := w.Write(chunk); err != nil {
				wrote <- err
				return
			}
		}
	}))
	c := dial(t, addr)
	c.send(get("/flood"))
	recv(t, entered, "the handler")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with a blocked write: %v, want its context's deadline", err)
	}
	srv.Close()
	if err := recv(t, wrote, "the blocked write"); err == nil {
		t.Fatal("no error")
	}
	if err := recv(t, served, "Serve"); !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
}

// A client that stops reading a large answer is gone after timeouts.idle: the engine's
// writes to it wait no longer (a handler that writes on gets the error; the buffered tail
// and the last chunk, written after the handler returns, have the same bound), and the
// connection ends. The client finds the answer cut: fewer bytes than were written, then
// the end of the stream or a reset.
func TestAttackClientStopsReadingIsGoneAfterIdle(t *testing.T) {
	wrote := make(chan error, 1)
	var tried atomic.Int64
	f := startFront(t, frontConfig(t, "timeouts: {idle: 200ms}\n"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("x", 64<<10))
		for range 4096 { // 256 MiB at most: far more than the socket buffers hold
			n, err := w.Write(chunk)
			tried.Add(int64(n))
			if err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}))
	c := dial(t, f.addr)
	c.send(get("/flood"))
	err := recv(t, wrote, "the handler's blocked write to end")
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("the handler's write to a client that stopped reading: %v; want a timeout", err)
	}
	c.c.SetReadDeadline(time.Now().Add(proxytest.Liveness))
	res := c.head("GET")
	wantStatus(t, res, http.StatusOK)
	got, err := io.Copy(io.Discard, res.Body) // (chunked: the answer's end is its last chunk)
	if err != io.ErrUnexpectedEOF && !isReset(err) {
		t.Fatalf("reading the answer after %d of %d bytes: %v; want it cut (the connection ended)", got, tried.Load(), err)
	}
}

// Shutdown leaves a hijacked connection to its handler (it neither waits for it nor
// closes it), and closes many connections that never sent a byte at once.
func TestAttackShutdownHijackedAndSilent(t *testing.T) {
	hijacked := make(chan net.Conn, 1)
	srv, addr, served := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		hijacked <- conn
	}))
	var silent []*rawConn
	for range 100 {
		silent = append(silent, dial(t, addr))
	}
	c := dial(t, addr)
	c.send("GET /up HTTP/1.1\r\nHost: example.com\r\nUpgrade: raw\r\nConnection: Upgrade\r\n\r\n")
	wantStatus(t, c.head("GET"), http.StatusSwitchingProtocols)
	conn := recv(t, hijacked, "the hijack")
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), proxytest.Liveness)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := recv(t, served, "Serve"); !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	for _, s := range silent {
		s.closed()
	}
	// The tunnel still works both ways.
	c.send("ping")
	conn.SetDeadline(time.Now().Add(proxytest.Liveness))
	p := make([]byte, 4)
	if _, err := io.ReadFull(conn, p); err != nil || string(p) != "ping" {
		t.Fatalf("tunnel read %q: %v", p, err)
	}
	conn.Write([]byte("pong"))
	if got := make([]byte, 4); func() bool { _, err := io.ReadFull(c.br, got); return err != nil || string(got) != "pong" }() {
		t.Fatalf("tunnel back: %q", got)
	}
	srv.Close()
}

// A head that grows a few bytes at a time is served at exactly the limit
// (max_header_bytes plus 4 KiB for the request line, as net/http) and gets 431 one byte
// past it, however it arrives.
func TestAttackHeadGrowsToLimit(t *testing.T) {
	const limit = 1024 + 4096
	for name, size := range map[string]int{"at the limit": limit, "one past": limit + 1, "far past": 3 * limit} {
		t.Run(name, func(t *testing.T) {
			h, ch := recorder(nil)
			f := startFront(t, frontConfig(t, "limits: {max_header_bytes: 1024}\n"), h)
			c := dial(t, f.addr)
			start := "GET / HTTP/1.1\r\nHost: example.com\r\nX-Pad: "
			head := start + strings.Repeat("p", size-len(start)-4) + "\r\n\r\n"
			go func() {
				for i := 0; i < len(head); i += 7 {
					if _, err := c.c.Write([]byte(head[i:min(i+7, len(head))])); err != nil {
						return
					}
				}
			}()
			resp, _ := c.response("GET")
			if size <= limit {
				wantStatus(t, resp, 200)
				if s := recv(t, ch, "the handler"); len(s.Header.Get("X-Pad")) != size-len(start)-4 {
					t.Fatalf("X-Pad has %d bytes", len(s.Header.Get("X-Pad")))
				}
				return
			}
			wantStatus(t, resp, http.StatusRequestHeaderFieldsTooLarge)
			c.rest()
			noCall(t, ch)
		})
	}
}

// A client that pipelines requests without ever reading an answer: the engine stops
// reading once its answers back up (the client's writes then stall), instead of serving
// and buffering without bound; the connection ends when the client goes.
func TestAttackPipelineNeverRead(t *testing.T) {
	var calls atomic.Int64
	f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		io.WriteString(w, strings.Repeat("a", 1024))
	}))
	c := dial(t, f.addr)
	const n = 200000
	reqs := strings.Repeat(get("/x"), n)
	c.c.SetWriteDeadline(time.Now().Add(time.Second))
	written, err := io.WriteString(c.c, reqs)
	if err == nil {
		t.Fatalf("all %d pipelined requests (%d bytes) were taken in with no answer read", n, written)
	}
	if got := calls.Load(); got >= n {
		t.Fatalf("served %d requests", got)
	}
	t.Logf("the client's writes stalled after %d KB; %d requests served", written>>10, calls.Load())
	c.c.Close()
}
