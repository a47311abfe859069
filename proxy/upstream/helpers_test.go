package upstream

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// liveness bounds every wait in these tests: far longer than anything should take.
const liveness = 10 * time.Second

// rawBackend is a scripted HTTP/1.1 backend on a raw listener: serve runs for each accepted
// connection, on its own goroutine, and answers as the test wants (it may break the rules).
type rawBackend struct {
	ln       net.Listener
	addr     string
	accepts  atomic.Int32
	requests atomic.Int32 // counted by readRequest
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func newRawBackend(t *testing.T, serve func(b *rawBackend, c net.Conn, br *bufio.Reader)) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &rawBackend{ln: ln, addr: ln.Addr().String()}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepts.Add(1)
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				serve(b, c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(b.stop)
	return b
}

func (b *rawBackend) url() string { return "http://" + b.addr }

func (b *rawBackend) stop() {
	b.ln.Close()
	b.mu.Lock()
	for _, c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// readRequest reads one request head and its body, counting it.
func (b *rawBackend) readRequest(br *bufio.Reader) (*http.Request, []byte, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, err
	}
	b.requests.Add(1)
	body, err := io.ReadAll(req.Body)
	return req, body, err
}

// newTransport is a Transport for tests; t's cleanup closes its idle connections.
func newTransport(t testing.TB) *Transport {
	tr := &Transport{ResponseHeaderTimeout: liveness, ExpectContinueTimeout: time.Second, IdleConnTimeout: time.Minute}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// traced is a request with a trace that records what the Transport reported.
type traced struct {
	mu       sync.Mutex
	conns    []httptrace.GotConnInfo
	got100   int
	waited   int
	infos    []int
	infoHdrs []http.Header
}

func (tr *traced) request(t *testing.T, ctx context.Context, method, url string, body io.Reader) *http.Request {
	t.Helper()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) {
			tr.mu.Lock()
			defer tr.mu.Unlock()
			tr.conns = append(tr.conns, i)
		},
		Got100Continue:  func() { tr.mu.Lock(); tr.got100++; tr.mu.Unlock() },
		Wait100Continue: func() { tr.mu.Lock(); tr.waited++; tr.mu.Unlock() },
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			tr.mu.Lock()
			defer tr.mu.Unlock()
			tr.infos = append(tr.infos, code)
			tr.infoHdrs = append(tr.infoHdrs, http.Header(h))
			return nil
		},
	})
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// do sends req and reads the whole answer.
func do(t *testing.T, tr http.RoundTripper, req *http.Request) (*http.Response, string) {
	t.Helper()
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	return res, string(b)
}

// await waits for a value on ch, within liveness.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(liveness):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}
