package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestKeepAliveReuse(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}))
	defer s.Close()
	tr := newTransport(t)
	var tc traced
	for i, path := range []string{"/one", "/two", "/three"} {
		res, body := do(t, tr, tc.request(t, context.Background(), "GET", s.URL+path, nil))
		if res.StatusCode != 200 || body != path {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, body)
		}
	}
	if len(tc.conns) != 3 || tc.conns[0].Reused || !tc.conns[1].Reused || !tc.conns[1].WasIdle || !tc.conns[2].Reused {
		t.Fatalf("GotConn: %+v, want a new connection, then it reused twice", tc.conns)
	}
	if tc.conns[0].Conn != tc.conns[2].Conn {
		t.Fatalf("the third request went on another connection")
	}
}

// trailerBody is a request body that fills its request's trailers when it ends, as
// net/http's server does for a proxied request.
type trailerBody struct {
	r       io.Reader
	trailer http.Header
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.trailer.Set("X-Sum", "abc123")
	}
	return n, err
}

func TestChunkedBothWaysWithTrailers(t *testing.T) {
	type seen struct {
		te      []string
		body    string
		trailer string
	}
	got := make(chan seen, 1)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.TransferEncoding, string(b), r.Trailer.Get("X-Sum")}
		w.Header().Set("Trailer", "X-Resp")
		io.WriteString(w, "part one,")
		w.(http.Flusher).Flush()
		io.WriteString(w, "part two")
		w.Header().Set("X-Resp", "done")
	}))
	defer s.Close()
	tr := newTransport(t)
	var tc traced
	trailer := http.Header{"X-Sum": nil}
	req := tc.request(t, context.Background(), "POST", s.URL, &trailerBody{r: strings.NewReader("streamed body"), trailer: trailer})
	req.ContentLength = -1
	req.Trailer = trailer
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, announced := res.Trailer["X-Resp"]; !announced || res.ContentLength != -1 {
		t.Fatalf("before the body: trailer %v, ContentLength %d; want X-Resp announced, -1", res.Trailer, res.ContentLength)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || string(b) != "part one,part two" || res.Trailer.Get("X-Resp") != "done" {
		t.Fatalf("response: %q %v, trailer %v", b, err, res.Trailer)
	}
	sn := await(t, got, "the backend's request")
	if len(sn.te) != 1 || sn.te[0] != "chunked" || sn.body != "streamed body" || sn.trailer != "abc123" {
		t.Fatalf("backend saw %+v", sn)
	}
}

func TestEarlyHintsForwarded(t *testing.T) {
	b := newRawBackend(t, func(b *rawBackend, c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := b.readRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr := newTransport(t)
	var tc traced
	res, body := do(t, tr, tc.request(t, context.Background(), "GET", b.url(), nil))
	if res.StatusCode != 200 || body != "ok" {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
	if len(tc.infos) != 1 || tc.infos[0] != 103 || tc.infoHdrs[0].Get("Link") != "</a.css>; rel=preload" {
		t.Fatalf("Got1xxResponse: %v %v", tc.infos, tc.infoHdrs)
	}
}

func TestExpectContinue(t *testing.T) {
	const upload = "the upload"
	for _, tc := range []struct {
		name     string
		answer   string // what the backend answers the head with, before any body
		wantCode int
		wantBody bool // the backend must get the body
	}{
		{"100 then the body", "HTTP/1.1 100 Continue\r\n\r\n", 200, true},
		{"final answer without 100", "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n", 417, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bodies := make(chan string, 2)
			b := newRawBackend(t, func(b *rawBackend, c net.Conn, br *bufio.Reader) {
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					b.requests.Add(1)
					io.WriteString(c, tc.answer)
					if !strings.HasPrefix(tc.answer, "HTTP/1.1 100") {
						// Whatever comes now is body the client should not have sent.
						rest, _ := io.ReadAll(br)
						bodies <- string(rest)
						return
					}
					got, _ := io.ReadAll(req.Body)
					bodies <- string(got)
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
				}
			})
			tr := newTransport(t)
			tr.ExpectContinueTimeout = liveness // only the backend's answer may end the wait
			var trc traced
			closed := make(chan struct{})
			req := trc.request(t, context.Background(), "PUT", b.url(), &closeSignal{Reader: strings.NewReader(upload), closed: closed})
			req.ContentLength = int64(len(upload))
			req.Header.Set("Expect", "100-continue")
			res, _ := do(t, tr, req)
			await(t, closed, "the request body's Close")
			if res.StatusCode != tc.wantCode {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.wantCode)
			}
			if tc.wantBody {
				if got := await(t, bodies, "the body"); got != upload || trc.got100 != 1 || trc.waited != 1 {
					t.Fatalf("backend got %q; Got100Continue %d, Wait100Continue %d", got, trc.got100, trc.waited)
				}
				return
			}
			// The connection must have closed without the body: the backend's read ends.
			if got := await(t, bodies, "the connection to close"); got != "" {
				t.Fatalf("backend got %q after answering, want nothing", got)
			}
		})
	}
}

type closeSignal struct {
	io.Reader
	closed chan struct{}
}

func (c *closeSignal) Close() error {
	close(c.closed)
	return nil
}

// TestNoBodyResponses has a backend answer HEAD, 204 and 304 with headers that announce a
// body it does not send; the next request on the same connection must be read correctly.
func TestNoBodyResponses(t *testing.T) {
	b := newRawBackend(t, func(b *rawBackend, c net.Conn, br *bufio.Reader) {
		for {
			req, _, err := b.readRequest(br)
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/head":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
			case "/204":
				io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
			case "/304":
				io.WriteString(c, "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n")
			default:
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
			}
		}
	})
	tr := newTransport(t)
	var tc traced
	for _, step := range []struct{ method, path, body string }{
		{"HEAD", "/head", ""}, {"GET", "/next", "next"}, {"GET", "/204", ""}, {"GET", "/next", "next"},
		{"GET", "/304", ""}, {"GET", "/next", "next"},
	} {
		res, body := do(t, tr, tc.request(t, context.Background(), step.method, b.url()+step.path, nil))
		if body != step.body || res.Body == nil {
			t.Fatalf("%s %s: body %q, want %q", step.method, step.path, body, step.body)
		}
	}
	if n := b.accepts.Load(); n != 1 {
		t.Fatalf("%d connections, want all on one", n)
	}
}

func TestCloseDelimitedBody(t *testing.T) {
	b := newRawBackend(t, func(b *rawBackend, c net.Conn, br *bufio.Reader) {
		if _, _, err := b.readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
	})
	tr := newTransport(t)
	var tc traced
	for i := range 2 {
		res, body := do(t, tr, tc.request(t, context.Background(), "GET", b.url(), nil))
		if body != "until the end" || res.ContentLength != -1 || !res.Close {
			t.Fatalf("request %d: %q, ContentLength %d, Close %v", i, body, res.ContentLength, res.Close)
		}
	}
	if n := b.accepts.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (a close-delimited body ends its connection)", n)
	}
}

func TestUpgradeEcho(t *testing.T) {
	b := newRawBackend(t, func(b *rawBackend, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhello ")
		io.Copy(c, br) // echo
	})
	tr := newTransport(t)
	var tc traced
	req := tc.request(t, context.Background(), "GET", b.url(), nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	rwc, ok := res.Body.(io.ReadWriteCloser)
	if res.StatusCode != 101 || !ok {
		t.Fatalf("status %d, body %T", res.StatusCode, res.Body)
	}
	defer rwc.Close()
	if _, err := io.WriteString(rwc, "ping"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("hello ping"))
	if _, err := io.ReadFull(rwc, got); err != nil || string(got) != "hello ping" {
		t.Fatalf("tunnel: %q %v", got, err)
	}
}

// TestFailedReuseNotResent pins the bank rule: a request that fails on a kept-alive
// connection after it was written is the caller's to retry; the Transport returns the
// error and the backend sees the request once.
func TestFailedReuseNotResent(t *testing.T) {
	b := newRawBackend(t, func(b *rawBackend, c net.Conn, br *bufio.Reader) {
		if _, _, err := b.readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		b.readRequest(br) // the second: read, never answered
	})
	tr := newTransport(t)
	var tc traced
	do(t, tr, tc.request(t, context.Background(), "GET", b.url(), nil))
	_, err := tr.RoundTrip(tc.request(t, context.Background(), "POST", b.url(), strings.NewReader("pay 100")))
	if err == nil {
		t.Fatal("the second request succeeded on a connection the backend closed")
	}
	if !tc.conns[1].Reused {
		t.Fatalf("second GotConn %+v, want Reused", tc.conns[1])
	}
	b.stop()
	if a, r := b.accepts.Load(), b.requests.Load(); a != 1 || r != 2 {
		t.Fatalf("backend: %d connections, %d requests; want 1 and 2 (nothing resent)", a, r)
	}
}

// TestIdleClosedByBackendFoundOnReuse: a pooled connection the backend closed while idle is
// not used: the request goes on a new connection and the backend gets it once. Also when
// the dial hook wraps the connection (as the proxy's backendConn does), if the wrapper
// gives the connection it wraps (NetConn).
func TestIdleClosedByBackendFoundOnReuse(t *testing.T) {
	for _, wrap := range []bool{false, true} {
		t.Run(fmt.Sprintf("wrapped=%v", wrap), func(t *testing.T) {
			closed := make(chan struct{}, 1)
			b := newRawBackend(t, func(b *rawBackend, c net.Conn, br *bufio.Reader) {
				for first := true; ; first = false {
					if _, _, err := b.readRequest(br); err != nil {
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
					if first && b.accepts.Load() == 1 {
						c.Close() // as a backend whose idle timeout is shorter than ours
						closed <- struct{}{}
						return
					}
				}
			})
			tr := newTransport(t)
			if wrap {
				tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
					var d net.Dialer
					c, err := d.DialContext(ctx, network, addr)
					if err != nil {
						return nil, err
					}
					return wrappedConn{c}, nil
				}
			}
			var tc traced
			do(t, tr, tc.request(t, context.Background(), "GET", b.url(), nil))
			await(t, closed, "the backend's close")
			time.Sleep(10 * time.Millisecond) // for the FIN to arrive: the race it avoids is real, not the test's
			_, body := do(t, tr, tc.request(t, context.Background(), "POST", b.url(), strings.NewReader("pay 100")))
			if body != "ok" || tc.conns[1].Reused {
				t.Fatalf("second request: %q on %+v, want ok on a new connection", body, tc.conns[1])
			}
			if r := b.requests.Load(); r != 2 {
				t.Fatalf("backend saw %d requests, want 2", r)
			}
		})
	}
}

// wrappedConn hides the connection's methods beyond net.Conn, as the proxy's backendConn.
type wrappedConn struct{ net.Conn }

func (w wrappedConn) NetConn() net.Conn { return w.Conn }

func TestResetMidBody(t *testing.T) {
	b := newRawBackend(t, func(b *rawBackend, c net.Conn, br *bufio.Reader) {
		if _, _, err := b.readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly ten b")
		c.(*net.TCPConn).SetLinger(0) // close with a reset
	})
	tr := newTransport(t)
	var tc traced
	res, err := tr.RoundTrip(tc.request(t, context.Background(), "GET", b.url(), nil))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err == nil || !strings.HasPrefix("only ten b", string(got)) {
		t.Fatalf("read %q, %v; want a prefix of the ten bytes and an error", got, err)
	}
	if len(tr.pool.idle[key{"http", b.addr}]) != 0 {
		t.Fatal("a broken connection went back to the pool")
	}
}

func TestResponseHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	b := newRawBackend(t, func(b *rawBackend, c net.Conn, br *bufio.Reader) {
		b.readRequest(br)
		<-release
	})
	defer close(release)
	tr := newTransport(t)
	tr.ResponseHeaderTimeout = 50 * time.Millisecond
	var tc traced
	_, err := tr.RoundTrip(tc.request(t, context.Background(), "GET", b.url(), nil))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want a timeout", err)
	}
}

func TestCancel(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inBody bool
		cause  error
	}{
		{"waiting for headers", false, context.Canceled},
		{"mid-body", true, context.Canceled},
		{"mid-body with a cause", true, errors.New("the client went away")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gone := make(chan struct{})
			started := make(chan struct{})
			s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.inBody {
					io.WriteString(w, "first part")
					w.(http.Flusher).Flush()
				}
				close(started)
				<-r.Context().Done() // the connection closed
				close(gone)
			}))
			defer s.Close()
			tr := newTransport(t)
			ctx, cancel := context.WithCancelCause(context.Background())
			var trc traced
			req := trc.request(t, ctx, "GET", s.URL, nil)
			var res *http.Response
			var err error
			if tc.inBody {
				if res, err = tr.RoundTrip(req); err != nil {
					t.Fatal(err)
				}
				await(t, started, "the backend")
				cancel(tc.cause)
				_, err = io.ReadAll(res.Body)
				res.Body.Close()
			} else {
				go func() { <-started; cancel(tc.cause) }()
				_, err = tr.RoundTrip(req)
			}
			if !errors.Is(err, tc.cause) {
				t.Fatalf("err %v, want %v", err, tc.cause)
			}
			await(t, gone, "the backend to see its connection close")
			if len(tr.pool.idle) != 0 {
				t.Fatal("a cancelled request's connection went back to the pool")
			}
		})
	}
}

func TestIdleConnTimeout(t *testing.T) {
	closed := make(chan struct{})
	b := newRawBackend(t, func(b *rawBackend, c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := b.readRequest(br); err != nil {
				close(closed) // the Transport closed the idle connection
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr := newTransport(t)
	tr.IdleConnTimeout = 20 * time.Millisecond
	var tc traced
	do(t, tr, tc.request(t, context.Background(), "GET", b.url(), nil))
	await(t, closed, "the idle connection to close")
	tr.pool.mu.Lock()
	defer tr.pool.mu.Unlock()
	if len(tr.pool.idle) != 0 || tr.pool.armed {
		t.Fatalf("pool after the timeout: %v, timer armed %v", tr.pool.idle, tr.pool.armed)
	}
}

// TestCloseBeforeEndDoesNotDrain: closing a large body early closes the connection; it
// does not read the rest.
func TestCloseBeforeEndDoesNotDrain(t *testing.T) {
	const size = 1 << 30
	wrote := make(chan int64, 1)
	b := newRawBackend(t, func(b *rawBackend, c net.Conn, br *bufio.Reader) {
		if _, _, err := b.readRequest(br); err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
		n, _ := io.Copy(c, io.LimitReader(zeros{}, size))
		wrote <- n
	})
	tr := newTransport(t)
	var tc traced
	res, err := tr.RoundTrip(tc.request(t, context.Background(), "GET", b.url(), nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.Body.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if n := await(t, wrote, "the backend's write to fail"); n >= size/2 {
		t.Fatalf("backend wrote %d bytes: the body was drained", n)
	}
	if _, err := res.Body.Read(make([]byte, 10)); err == nil {
		t.Fatal("read after Close succeeded")
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// emptyBody is the proxy's bodyless-request marker (proxy.fenceTransportReplay).
type emptyBody struct{}

func (emptyBody) Read([]byte) (int, error) { return 0, io.EOF }
func (emptyBody) Close() error             { return nil }

func TestRequestFraming(t *testing.T) {
	heads := make(chan *http.Request, 1)
	b := newRawBackend(t, func(b *rawBackend, c net.Conn, br *bufio.Reader) {
		for {
			req, body, err := b.readRequest(br)
			if err != nil {
				return
			}
			req.Body = io.NopCloser(strings.NewReader(string(body)))
			heads <- req
			conn := ""
			if req.Close {
				conn = "Connection: close\r\n"
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n%s\r\n", conn)
		}
	})
	tr := newTransport(t)
	for _, tc := range []struct {
		name     string
		method   string
		body     io.ReadCloser
		length   int64
		te       []string
		close    bool
		wantCL   string // the Content-Length header, "" for none
		wantTE   bool   // chunked
		wantBody string
	}{
		{name: "GET", method: "GET"},
		{name: "GET identity", method: "GET", body: emptyBody{}, te: []string{"identity"}},
		{name: "OPTIONS identity", method: "OPTIONS", body: emptyBody{}, te: []string{"identity"}},
		{name: "POST without body", method: "POST", wantCL: "0"},
		{name: "POST known length", method: "POST", body: io.NopCloser(strings.NewReader("12345")), length: 5, wantCL: "5", wantBody: "12345"},
		{name: "POST unknown length", method: "POST", body: io.NopCloser(strings.NewReader("123")), length: -1, wantTE: true, wantBody: "123"},
		{name: "close", method: "GET", close: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, b.url()+"/x?q=1", nil)
			req.Body, req.ContentLength, req.TransferEncoding, req.Close = tc.body, tc.length, tc.te, tc.close
			req.Host = "bank.example"
			if _, err := tr.RoundTrip(req); err != nil {
				t.Fatal(err)
			}
			got := await(t, heads, "the request")
			body, _ := io.ReadAll(got.Body)
			chunked := len(got.TransferEncoding) > 0
			if got.Header.Get("Content-Length") != tc.wantCL || chunked != tc.wantTE || string(body) != tc.wantBody ||
				got.Host != "bank.example" || got.URL.String() != "/x?q=1" || got.Close != tc.close {
				t.Fatalf("backend got Content-Length %q, chunked %v, body %q, host %q, URL %s, close %v",
					got.Header.Get("Content-Length"), chunked, body, got.Host, got.URL, got.Close)
			}
		})
	}
}

func TestInvalidHeaderRefusedBeforeConnecting(t *testing.T) {
	tr := newTransport(t)
	req, _ := http.NewRequest("GET", "http://127.0.0.1:1/", nil)
	req.Header.Set("X-Evil", "a\r\nX-Smuggled: 1")
	var tc traced
	req = req.WithContext(tc.request(t, context.Background(), "GET", "http://127.0.0.1:1/", nil).Context())
	if _, err := tr.RoundTrip(req); err == nil || len(tc.conns) != 0 {
		t.Fatalf("err %v after %d connections, want refused before any", err, len(tc.conns))
	}
}

// TestCloseIdleClosesConnectionsInUse: a connection in use when CloseIdleConnections is
// called closes when its request ends, unless a request asked for a connection since
// (net/http's rule, which the proxy's Table.Close relies on).
func TestCloseIdleClosesConnectionsInUse(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer s.Close()
	tr := newTransport(t)
	var tc traced
	res, err := tr.RoundTrip(tc.request(t, context.Background(), "GET", s.URL, nil))
	if err != nil {
		t.Fatal(err)
	}
	tr.CloseIdleConnections()
	io.ReadAll(res.Body)
	res.Body.Close()
	if len(tr.pool.idle) != 0 {
		t.Fatal("a connection went idle after CloseIdleConnections")
	}
	do(t, tr, tc.request(t, context.Background(), "GET", s.URL, nil))
	if len(tr.pool.idle) != 1 {
		t.Fatal("after a new request, its connection was not kept")
	}
}

func TestObsFoldRefused(t *testing.T) {
	b := newRawBackend(t, func(b *rawBackend, c net.Conn, br *bufio.Reader) {
		if _, _, err := b.readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok")
	})
	tr := newTransport(t)
	var tc traced
	if res, err := tr.RoundTrip(tc.request(t, context.Background(), "GET", b.url(), nil)); err == nil {
		res.Body.Close()
		t.Fatalf("a folded header was accepted: %q", res.Header.Get("X-Folded"))
	}
}

// TestExpectContinueTimeoutSendsBody: a backend that ignores "Expect: 100-continue" and
// waits for the body gets it once ExpectContinueTimeout has passed.
func TestExpectContinueTimeoutSendsBody(t *testing.T) {
	b := newRawBackend(t, func(b *rawBackend, c net.Conn, br *bufio.Reader) {
		_, body, err := b.readRequest(br)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	})
	tr := newTransport(t)
	tr.ExpectContinueTimeout = 20 * time.Millisecond
	var tc traced
	req := tc.request(t, context.Background(), "POST", b.url(), strings.NewReader("late body"))
	req.Header.Set("Expect", "100-continue")
	if res, body := do(t, tr, req); res.StatusCode != 200 || body != "late body" || tc.waited != 1 || tc.got100 != 0 {
		t.Fatalf("%d %q, Wait100Continue %d, Got100Continue %d", res.StatusCode, body, tc.waited, tc.got100)
	}
}

// TestTLSReuse: an https backend's connection is kept and reused (what the TLS 1.3 server
// sends after the handshake must not make the idle probe take it for closed).
func TestTLSReuse(t *testing.T) {
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secure")
	}))
	defer s.Close()
	tr := newTransport(t)
	tr.TLSClientConfig = s.Client().Transport.(*http.Transport).TLSClientConfig
	var tc traced
	for range 3 {
		if _, body := do(t, tr, tc.request(t, context.Background(), "GET", s.URL, nil)); body != "secure" {
			t.Fatalf("body %q", body)
		}
	}
	if !tc.conns[1].Reused || !tc.conns[2].Reused {
		t.Fatalf("GotConn %+v, want the connection reused", tc.conns)
	}
}

// TestEarlyAnswerToUpload: a backend that refuses a large upload from its head alone and
// stops reading gets its answer through: once writing the body fails, the answer already
// sent is read and returned (the connection then closes).
func TestEarlyAnswerToUpload(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	defer s.Close()
	tr := newTransport(t)
	var tc traced
	const size = 64 << 20
	req := tc.request(t, context.Background(), "POST", s.URL, io.LimitReader(zeros{}, size))
	req.ContentLength = size
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("err %v, want the backend's 413", err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", res.StatusCode)
	}
}
