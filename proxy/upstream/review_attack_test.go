package upstream

// Review of proxy/upstream (branch review-upstream): attacks from a backend's side.
// Tests marked "// FAILS: <bug>" fail on the code as reviewed, because of the bug named;
// the others pass and are kept as hardening.

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// coalescer is a backend's socket whose writes can be held and sent as one: two TLS records
// (two tls.Conn Writes) then reach the client in one TCP segment.
type coalescer struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  []byte
}

func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *coalescer) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// tlsRawBackend is a TLS backend scripted per request: answer writes the response as the
// test wants on the TLS connection (each Write one record), and everything it wrote goes
// out in one TCP write. It returns the URL and the client TLS config.
func tlsRawBackend(t *testing.T, answer func(n int, path string, w io.Writer)) (string, *tls.Config) {
	t.Helper()
	s := httptest.NewUnstartedServer(http.NotFoundHandler())
	s.StartTLS()
	srvCfg := s.TLS.Clone()
	cliCfg := s.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	s.Close()
	b := newRawBackend(t, func(b *rawBackend, c net.Conn, _ *bufio.Reader) {
		co := &coalescer{Conn: c}
		tc := tls.Server(co, srvCfg)
		if err := tc.Handshake(); err != nil {
			return
		}
		co.mu.Lock()
		co.hold = true
		co.mu.Unlock()
		br := bufio.NewReader(tc)
		for {
			req, _, err := b.readRequest(br)
			if err != nil {
				return
			}
			answer(int(b.requests.Load()), req.URL.Path, tc)
			if co.flush() != nil {
				return
			}
		}
	})
	return "https://" + b.addr, cliCfg
}

// FAILS: a stray response from an https backend, sent right after the answer in a TLS record
// of its own, is held in crypto/tls's input buffer, which neither conn.finish
// (c.br.Buffered(), conn.go:81) nor the idle probe (a raw read of the TCP socket,
// probe_unix.go:184-217, which looks beneath the tls.Conn) can see. The connection goes back
// to the pool, and the next request, another client's, gets the stray response as its
// answer: a response desync (cross-user data leak), exactly what the probe is meant to stop.
func TestAttackTLSStrayRecordNotTakenForNextAnswer(t *testing.T) {
	url, cfg := tlsRawBackend(t, func(n int, path string, w io.Writer) {
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"+strings.TrimPrefix(path, "/")) // record 1
		if n == 1 {
			// record 2: an answer nobody asked for (another user's data, from a buggy backend)
			io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nSTALE!!")
		}
	})
	tr := newTransport(t)
	tr.TLSClientConfig = cfg
	var tc traced
	if _, body := do(t, tr, tc.request(t, context.Background(), "GET", url+"/alice01", nil)); body != "alice01" {
		t.Fatalf("first answer %q, want alice01", body)
	}
	_, body := do(t, tr, tc.request(t, context.Background(), "GET", url+"/bobbb02", nil))
	if body != "bobbb02" {
		t.Errorf("bob's GET got %q, want \"bobbb02\" (reused %v): the stray response went to the next request", body, tc.conns[len(tc.conns)-1].Reused)
	}
}
