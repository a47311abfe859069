package frontend_test

// Conformance corpus for the client-facing HTTP/1.1 server (front_*_test.go): what a client
// sees on the wire and what a handler receives, through real loopback sockets, pinned on
// today's server (net/http's http.Server behind the edge) so that a replacement can be
// checked against it. Only startFront knows how the server is made and served.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy/frontend"
	"github.com/spillway/spillway/proxy/proxytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// front is a client-facing server under test.
type front struct {
	addr     string
	shutdown func(context.Context) error // graceful shutdown (http.Server.Shutdown today)
}

// startFront serves h with the client-facing server for cfg on a new 127.0.0.1 listener
// until the test ends. It is the one place that knows how the server is made.
func startFront(t *testing.T, cfg *configs.Config, h http.Handler) *front {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := frontend.NewServer(cfg, h, nil)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return &front{addr: ln.Addr().String(), shutdown: srv.Shutdown}
}

// frontConfig is a config with one (never used) site and the extra top-level YAML.
func frontConfig(t *testing.T, extra string) *configs.Config {
	t.Helper()
	return proxytest.MustConfig(t, proxytest.ConfigYAML(
		[]proxytest.Site{{Name: "a", Weight: 1, Backends: []string{"http://127.0.0.1:1"}}}, extra))
}

// start serves h on a default config.
func start(t *testing.T, h http.Handler) *front {
	t.Helper()
	return startFront(t, frontConfig(t, ""), h)
}

// seen is what a handler received.
type seen struct {
	Method, RequestURI, Path, RawQuery, Host, Proto string
	ProtoMajor, ProtoMinor                          int
	Header                                          http.Header
	RemoteAddr                                      string
	ContentLength                                   int64
	TransferEncoding                                []string
	Body                                            []byte
	BodyErr                                         error
	Trailer                                         http.Header
}

// recorder is a handler that reads the whole body, sends what it saw on the returned
// channel, then answers with answer (nil: 200 "ok" with no explicit length).
func recorder(answer func(http.ResponseWriter, *http.Request)) (http.Handler, chan seen) {
	ch := make(chan seen, 16)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := seen{Method: r.Method, RequestURI: r.RequestURI, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
			Host: r.Host, Proto: r.Proto, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor,
			Header: r.Header.Clone(), RemoteAddr: r.RemoteAddr, ContentLength: r.ContentLength,
			TransferEncoding: r.TransferEncoding}
		s.Body, s.BodyErr = io.ReadAll(r.Body)
		s.Trailer = r.Trailer.Clone()
		ch <- s
		if answer != nil {
			answer(w, r)
			return
		}
		io.WriteString(w, "ok")
	}), ch
}

// noCall fails the test if the handler was called.
func noCall[T any](t *testing.T, ch <-chan T) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("the handler was called: %+v", v)
	default:
	}
}

// recv receives from ch within proxytest.Liveness.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	return proxytest.Receive(t, ch, what)
}

// rawConn is a client connection written and read as bytes.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

// dial opens a raw client connection, with every read and write bounded by
// proxytest.Liveness, closed when the test ends.
func dial(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(proxytest.Liveness))
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (c *rawConn) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// response reads one response to a request of the given method, with its whole body
// read into body.
func (c *rawConn) response(method string) (*http.Response, string) {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("reading the response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("reading the response body: %v (read %q)", err, b)
	}
	return resp, string(b)
}

// head reads one response's head, leaving its body unread.
func (c *rawConn) head(method string) *http.Response {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("reading the response: %v", err)
	}
	return resp
}

// line reads one line as sent (CRLF included).
func (c *rawConn) line() string {
	c.t.Helper()
	s, err := c.br.ReadString('\n')
	if err != nil {
		c.t.Fatalf("reading a line: %v (read %q)", err, s)
	}
	return s
}

// rest reads what the server sends until it closes the connection, and fails the test
// if it does not close it (within the liveness bound).
func (c *rawConn) rest() string {
	c.t.Helper()
	b, err := io.ReadAll(c.br)
	if err != nil && !isReset(err) {
		c.t.Fatalf("the server did not close the connection: %v (read %q)", err, b)
	}
	return string(b)
}

// closed fails the test unless the server closes the connection without sending more.
func (c *rawConn) closed() {
	c.t.Helper()
	if b := c.rest(); b != "" {
		c.t.Fatalf("before closing, the server sent %q", b)
	}
}

// isReset: a connection reset counts as the server's close (it closed with our bytes unread).
func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout() && strings.Contains(err.Error(), "reset")
}

// get is a minimal HTTP/1.1 GET of path.
func get(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: example.com\r\n\r\n" }

// wantStatus fails the test unless resp has the status code.
func wantStatus(t *testing.T, resp *http.Response, code int) {
	t.Helper()
	if resp.StatusCode != code {
		t.Fatalf("status %q, want %d", resp.Status, code)
	}
}
