package proxy_test

// Regression tests from an independent review of the edge work (issue 11). Each pinned a
// bug the review found, fixed in the same commit; the comments describe the bug as it was,
// so that a reader knows what each guards against. The rest pin behaviour the change's own
// tests left open.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/proxytest"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestReviewRetryHeaderDeadlineCutsSlowUpload: a PUT (idempotent) whose first backend
// resets right after reading the head is retried while the client is still uploading its
// body (60 KiB, within retries.max_body_bytes, sent in 5 pieces over 1.6 s). response_header
// is the client's wait for response headers, which begins once the whole request was sent;
// but the retry's deadline (exchange.headerBy) is computed from exchange.sentAt, which is
// the lease's start while the body has not ended, so the clock cuts the retry with 504
// mid-upload and blames the healthy backend for a timeout. Without the failed first try the
// same upload succeeds (the Transport's own timer starts once the body is written).
func TestReviewRetryHeaderDeadlineCutsSlowUpload(t *testing.T) {
	const piece = 12 << 10
	var arrivals atomic.Int32
	var got atomic.Int64
	script := func(w http.ResponseWriter, r *http.Request) {
		if arrivals.Add(1) == 1 {
			resetConn(proxytest.Hijack(w)) // a crash right after the head
			return
		}
		n, err := io.Copy(io.Discard, r.Body)
		got.Store(n)
		if err != nil {
			return
		}
		io.WriteString(w, "stored")
	}
	a, b := proxytest.NewBackend(t, script), proxytest.NewBackend(t, script)
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{a.URL, b.URL}}},
		"timeouts: {response_header: 1s}\nretries: {attempts: 2, min_per_second: 100}\n"))
	conn, br := edgeDial(t, e.addr)
	edgeWrite(t, conn, fmt.Sprintf("PUT /doc HTTP/1.1\r\nHost: bank.example\r\nContent-Length: %d\r\n\r\n", 5*piece))
	for i := range 5 { // a slow client, never silent for long (body_idle is 60 s)
		if i > 0 {
			time.Sleep(400 * time.Millisecond)
		}
		edgeWrite(t, conn, strings.Repeat("x", piece))
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "stored" {
		t.Errorf("the retried slow upload got %d %q (arrivals %d, the retry's backend read %d of %d bytes), want 200 \"stored\"",
			resp.StatusCode, body, arrivals.Load(), got.Load(), 5*piece)
	}
	e.checkIdle(t)
}

// TestReviewBodyIdleStalledClientSmallWrites: a client asks for a stream that arrives in
// small pieces (server-sent events, or any download read from a backend in pieces smaller
// than net/http's 2 KiB response buffer) and stops reading. Each piece's Write goes to
// net/http's buffer and returns at once; the proxy then blocks in the Flush that
// FlushInterval -1 makes after every write, which the exchange clock does not watch
// (responseWriter.FlushError has no begin/done). body_idle never cuts the exchange: the
// backend's slot, the handler and both connections are held until the client goes away.
func TestReviewBodyIdleStalledClientSmallWrites(t *testing.T) {
	cut := make(chan struct{})
	stop := make(chan struct{})
	b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		event := "data: " + strings.Repeat("x", 500) + "\n\n"
		deadline := time.After(proxytest.Liveness)
		for {
			select {
			case <-r.Context().Done():
				close(cut)
				return
			case <-stop:
				return
			case <-deadline:
				return
			default:
			}
			if _, err := io.WriteString(w, event); err != nil {
				close(cut)
				return
			}
			w.(http.Flusher).Flush()
		}
	})
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{b.URL}}}, "timeouts: {body_idle: 300ms}\n"))
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.(*net.TCPConn).SetReadBuffer(4096)
	io.WriteString(conn, "GET /events HTTP/1.1\r\nHost: bank.example\r\n\r\n")
	// The client reads nothing. Socket buffers hold at most a few MiB: at ~2.5 MB/s the
	// proxy is blocked on the client within a second or two, then body_idle (300 ms).
	select {
	case <-cut:
	case <-time.After(6 * time.Second):
		t.Error("a client that stopped reading a stream of small writes was never cut off (body_idle: 300ms)")
	}
	close(stop)
	conn.Close()
	e.checkIdle(t)
}

// rawBackend is a backend written against the socket: serve handles each request read
// from a connection, writing its answer on w itself. It records the connection of each
// request. Everything it starts ends at cleanup.
func rawBackend(t *testing.T, serve func(w io.Writer, r *http.Request)) (url string, conns func() []string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	addr := serveConns(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			mu.Lock()
			seen = append(seen, r.URL.Path+" on "+c.RemoteAddr().String())
			mu.Unlock()
			serve(c, r)
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return
			}
		}
	})
	return "http://" + addr, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

// serveConns listens on 127.0.0.1 and runs handle on each connection accepted (which it
// closes after) until the test ends; then it closes the listener and every connection and
// waits for every handle to return. It returns the listener's address.
func serveConns(t *testing.T, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var open []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestReviewBackendConnHEADSniffPoisoned: backendConn learns whether the request it is
// answering is a HEAD by looking at the first Write after a final response was read
// ("idle"). A backend may answer before it has read the whole request body (RFC 9112
// allows it; here a 200 to an upload it does not need); the Transport then writes the rest
// of the body after the response was read and, when that write ends within 50 ms, keeps the
// connection. The body's last write is then taken for the start of a new request: a body
// that begins with "HEAD " marks the connection as answering a HEAD, and the next,
// unrelated request on that connection (another client's GET) has its response's body
// taken for the next response's head: the GET hangs until body_idle cuts it. One client
// can thus break other clients' requests; and a body that does not begin with "HEAD "
// leaves isHEAD stale for a real HEAD later, with the same effect the other way round.
func TestReviewBackendConnHEADSniffPoisoned(t *testing.T) {
	answered := make(chan struct{}, 1)
	url, conns := rawBackend(t, func(w io.Writer, r *http.Request) {
		if r.URL.Path == "/upload" {
			io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			answered <- struct{}{}
			return // then reads the rest of the body, and the next request
		}
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nvictim")
	})
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{url}}},
		"timeouts: {body_idle: 1s}\nretries: {attempts: 1}\n"))

	conn, br := edgeDial(t, e.addr)
	edgeWrite(t, conn, "POST /upload HTTP/1.1\r\nHost: bank.example\r\nContent-Length: 10\r\n\r\n")
	proxytest.Receive(t, answered, "the backend's early answer")
	time.Sleep(5 * time.Millisecond) // the proxy has read the response whole
	edgeWrite(t, conn, "HEAD /x HT") // the body, which the Transport writes now
	edgeExpect(t, br, "POST", http.StatusOK, "ok")

	// Another client, on the kept backend connection.
	resp, err := e.client.Get(e.url + "/account")
	if err != nil {
		t.Fatalf("a GET after the poisoned connection was kept: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != "victim" {
		t.Errorf("the next GET got %d %q (read error %v), want 200 \"victim\"; backend saw %q",
			resp.StatusCode, body, err, conns())
	}
	e.checkIdle(t)
}

// h2RefusingBackend is an HTTP/2 (h2c) backend written with the frame layer: it refuses the
// first stream it is sent with RST_STREAM REFUSED_STREAM (RFC 9113 section 8.7: the request
// was not processed, so any client may retry it) and answers every later one 200 "ok". It
// returns its URL and the number of streams it answered.
func h2RefusingBackend(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	var answered atomic.Int32
	var refused atomic.Bool
	addr := serveConns(t, func(c net.Conn) {
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, preface); err != nil {
			return
		}
		fr := http2.NewFramer(c, c)
		fr.WriteSettings()
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck()
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					fr.WritePing(true, f.Data)
				}
			case *http2.HeadersFrame:
				id := f.StreamID
				if refused.CompareAndSwap(false, true) {
					fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
					continue
				}
				hb.Reset()
				enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
				enc.WriteField(hpack.HeaderField{Name: "content-length", Value: "2"})
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true})
				fr.WriteData(id, true, []byte("ok"))
				answered.Add(1)
			}
		}
	})
	return "http://" + addr, &answered
}

// TestReviewH2RefusedStreamNotRetried: fenceTransportReplay now gives every GET, HEAD,
// OPTIONS and TRACE a non-nil empty body so that net/http's Transport never resends it.
// To an HTTP/2 site this also turns off the Transport's retry of a stream the backend
// refused (REFUSED_STREAM, or streams above a GOAWAY's last stream ID: what a backend
// sends on every graceful restart), which RFC 9113 guarantees was never processed, and
// which the Transport used to retry at once. With retries.attempts 1 (or once the retry
// budget is spent, as in a rolling deploy) such GETs now fail with 502.
func TestReviewH2RefusedStreamNotRetried(t *testing.T) {
	url, answered := h2RefusingBackend(t)
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{url}}}, "")+"    protocol: h2\nretries: {attempts: 1}\n")
	status, body := e.get(t, "/balance")
	if status != http.StatusOK || body != "ok" {
		t.Errorf("GET to an h2 backend that refused the stream (never processed it): %d %q, want 200 \"ok\" (answered %d)",
			status, body, answered.Load())
	}
	e.checkIdle(t)
}

// TestReviewCRLFAfterPOSTBody: some old clients send an extra CRLF after a POST body.
// RFC 9112 section 2.2 says a server SHOULD ignore at least one empty line before a
// request-line, and net/http does (after a POST it discards up to 4 CR/LF bytes). The
// edge refuses it as "empty line before the start line": the client's next request on the
// connection gets 400 and the connection is closed. Safe (both parsers agree on where the
// POST ends), but a compatibility regression for such clients; a lone CRLF (not bare
// CR/LF) at a message boundary could be skipped by the edge and by net/http alike.
func TestReviewCRLFAfterPOSTBody(t *testing.T) {
	rec := newEdgeRecorder(t)
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{rec.srv.URL}}}, ""))
	conn, br := edgeDial(t, e.addr)
	edgeWrite(t, conn, "POST /pay HTTP/1.1\r\nHost: bank.example\r\nContent-Length: 2\r\n\r\nhi\r\n")
	edgeExpect(t, br, "POST", http.StatusOK, "POST /pay hi")
	edgeWrite(t, conn, "GET /next HTTP/1.1\r\nHost: bank.example\r\n\r\n")
	edgeExpect(t, br, "GET", http.StatusOK, "GET /next ")
	rec.settle(t, e)
}

// TestReviewUnderscoreTrailer: headers.underscores (default drop) removes request header
// names with "_", because CGI-style backends read X_Forwarded_For as X-Forwarded-For. A
// chunked request can carry the same field as a trailer: the edge accepts the name (a
// token), net/http collects it into Request.Trailer, and the forwarder shares that map with
// the backend request, so the field reaches the backend untouched.
func TestReviewUnderscoreTrailer(t *testing.T) {
	got := make(chan http.Header, 1)
	b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got <- r.Trailer.Clone()
	})
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{b.URL}}}, ""))
	resp, _ := rawExchange(t, e.addr, "POST /pay HTTP/1.1\r\nHost: bank.example\r\nTransfer-Encoding: chunked\r\n"+
		"Trailer: X_Forwarded_For\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\nX_Forwarded_For: 10.0.0.1\r\n\r\n")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if tr := proxytest.Receive(t, got, "the backend's trailers"); len(tr) > 0 {
		t.Errorf("the backend received trailers %v: a \"_\" name that headers.underscores: drop removes from the head", tr)
	}
	e.checkIdle(t)
}

// TestReviewBodyIdleSilentUploadEarlyAnswer (regression pin; passes): a backend answers an
// upload before reading its body and closes its connection, and the client goes silent
// mid-upload. net/http's server, about to send the answer, first reads and discards the
// rest of the request body, a read the exchange clock does not watch; what bounds it
// today is that the Transport's write loop is still blocked reading the client's body
// (a watched read), so body_idle fires and its read deadline frees both. Keep it bounded
// if either of those changes.
func TestReviewBodyIdleSilentUploadEarlyAnswer(t *testing.T) {
	url, _ := rawBackend(t, func(w io.Writer, r *http.Request) {
		io.WriteString(w, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\nConnection: close\r\n\r\nlogin")
		w.(net.Conn).Close()
	})
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{url}}}, "timeouts: {body_idle: 300ms}\n"))
	conn, br := edgeDial(t, e.addr)
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	edgeWrite(t, conn, "POST /transfer HTTP/1.1\r\nHost: bank.example\r\nContent-Length: 100\r\n\r\n{\"amount\":")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Errorf("no answer within 3 s (body_idle: 300ms) to a client silent mid-upload whose backend answered at once: %v", err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	conn.Close()
	e.checkIdle(t)
}

// TestReviewRetryCutBlamesHealthyBackend: the first try's backend holds the request for
// most of response_header and resets; the retry goes to a healthy backend that answers in
// 300 ms, but only 100 ms of the client's response_header is left, so the clock cuts it.
// That 504 is the budget's, spent by the first backend; yet the retry's backend is
// charged a timeout for it (reasonTimeout counts for passive health, and the balancer is
// told it is overloaded). In an incident where one backend fails slowly, every retry
// moves the blame onto healthy backends and can eject them.
func TestReviewRetryCutBlamesHealthyBackend(t *testing.T) {
	var arrivals atomic.Int32
	released := make(chan struct{})
	var mu sync.Mutex
	second := ""
	mk := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if arrivals.Add(1) == 1 {
				select {
				case <-time.After(900 * time.Millisecond):
				case <-released:
				}
				resetConn(proxytest.Hijack(w))
				return
			}
			mu.Lock()
			second = name
			mu.Unlock()
			select {
			case <-time.After(300 * time.Millisecond): // healthy: well within response_header
				io.WriteString(w, "ok")
			case <-r.Context().Done():
			case <-released:
			}
		}
	}
	a := proxytest.NewBackend(t, mk("a"))
	b := proxytest.NewBackend(t, mk("b"))
	defer close(released)
	e := startOutlierProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{a.URL, b.URL}}},
		"timeouts: {response_header: 1s}\nretries: {attempts: 2, min_per_second: 100}\n"+
			"outlier: {consecutive_failures: 1, max_ejection_percent: 100}\n"))
	status, _ := e.get(t, "/statement")
	if status != http.StatusGatewayTimeout {
		t.Logf("status %d (want the 504 this scenario is about)", status)
	}
	mu.Lock()
	name := second
	mu.Unlock()
	urls := map[string]string{"a": a.URL, "b": b.URL}
	if name == "" {
		t.Fatal("the request was not retried")
	}
	if e.backend("idc1", urls[name]).Ejected() {
		t.Errorf("backend %s, which would have answered in 300 ms, was ejected for the 504 of a retry that inherited 100 ms", name)
	}
	e.checkIdle(t)
}
