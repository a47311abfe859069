package proxy_test

// The attacker's and the unusual client's corpus for Expect: 100-continue (issue 11): a
// backend that answers before reading the body must have its answer reach the client at once,
// without the proxy pulling the body from the client (or sending it 100 Continue); a backend
// that reads the body gets it, once the client was told to send it.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/proxytest"
)

// edgeExpectSize is the Content-Length the uploads announce.
const edgeExpectSize = 1000000

// edgeUpload is the body the client sends once it may: it begins with a request, so that a
// proxy that took it for the next request on the connection would forward /smuggled.
var edgeUpload = edgeSmuggled + strings.Repeat("x", edgeExpectSize-len(edgeSmuggled))

// TestEdgeExpectContinueEarlyAnswer has a backend answer an Expect: 100-continue upload
// with 401, 413 or 417 as soon as it has the head, whether it then closes its connection (as
// net/http does) or keeps it. The client sends no body: it must still get the answer within
// proxytest.Liveness, and never 100 Continue. Then it sends the body anyway, and a GET of its own: the
// proxy may close the connection or read the body past, but must never forward what the
// body holds; and the backend must get no body bytes, nor the GET on the connection it
// answered on (which would then be out of step).
func TestEdgeExpectContinueEarlyAnswer(t *testing.T) {
	for _, tc := range []struct {
		status int
		close  bool
	}{
		{http.StatusUnauthorized, true},
		{http.StatusRequestEntityTooLarge, true},
		{http.StatusExpectationFailed, true},
		{http.StatusUnauthorized, false},
		{http.StatusRequestEntityTooLarge, false},
		{http.StatusExpectationFailed, false},
	} {
		name := fmt.Sprintf("%d backend closes", tc.status)
		if !tc.close {
			name = fmt.Sprintf("%d backend keeps the connection", tc.status)
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var after atomic.Int64 // bytes the backend got after the head it answered early
			b := newEdgeRawBackend(t, func(req *http.Request, conn net.Conn, br *bufio.Reader) bool {
				if req.URL.Path == "/upload" {
					closing := ""
					if tc.close {
						closing = "Connection: close\r\n"
					}
					fmt.Fprintf(conn, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\n%s\r\n", tc.status, http.StatusText(tc.status), closing)
					// Whatever comes next on this connection is body, or a request sent
					// while the backend still waits for the body: count it until the
					// proxy (or the end of the test) closes the connection.
					n, _ := io.Copy(io.Discard, br)
					after.Add(n)
					return false
				}
				io.Copy(io.Discard, req.Body)
				fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
				return true
			})
			e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{b.url}}}, ""))
			conn, br := edgeDial(t, e.addr)
			edgeWrite(t, conn, fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: bank.example\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", edgeExpectSize))

			post := &http.Request{Method: "POST"}
			resp, err := http.ReadResponse(br, post)
			if err != nil {
				t.Fatalf("no answer to the upload's head (the backend answered at once): %v", err)
			}
			if resp.StatusCode == http.StatusContinue {
				t.Errorf("client got 100 Continue for an upload the backend refused")
				if resp, err = http.ReadResponse(br, post); err != nil {
					t.Fatalf("no final answer to the upload: %v", err)
				}
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("client got %d, want the backend's %d", resp.StatusCode, tc.status)
			}

			// The body, late and unasked, then a GET. The proxy may have closed: a write
			// error is fine, a write that blocks to the deadline is not.
			_, werr := io.WriteString(conn, edgeUpload+"GET /after HTTP/1.1\r\nHost: bank.example\r\n\r\n")
			if errors.Is(werr, os.ErrDeadlineExceeded) {
				t.Errorf("the proxy neither read the body nor closed the connection")
			}
			if resp, err := http.ReadResponse(br, nil); err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(body) != "/after" {
					t.Errorf("after the body, the client got %d %q, want the connection closed or 200 \"/after\"", resp.StatusCode, body)
				}
			} else if !edgeClosed(err) {
				t.Errorf("after the body: %v, want the connection closed or 200 \"/after\"", err)
			}
			conn.Close()

			e.drain(t)
			b.stop()
			accepts, hits := b.record()
			uploadConn := -1
			for _, h := range hits {
				switch {
				case h.path == "/upload" && uploadConn < 0:
					uploadConn = h.conn
				case h.path == "/after" && h.conn != uploadConn:
				default:
					t.Errorf("backend received %s on connection %d (the upload's: %d)", h.path, h.conn, uploadConn)
				}
			}
			if uploadConn < 0 {
				t.Errorf("backend never received the upload's head")
			}
			if n := after.Load(); n != 0 {
				t.Errorf("backend received %d bytes after the head it answered (of %d accepted connections), want 0", n, accepts)
			}
		})
	}
}

// edgeResponse is one response read from a raw connection, or the error that ended reading.
type edgeResponse struct {
	status int
	body   string
	err    error
}

// TestEdgeExpectContinueRelayed has a backend that reads the body of an Expect:
// 100-continue upload. The client must get 100 Continue once the backend asks for the body
// (not before it holds the head), then 200 for the body it sends, all of which the backend
// receives.
func TestEdgeExpectContinueRelayed(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := newGate(t)
	received := make(chan string, 1)
	b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		if !release.wait(r.Context()) {
			return
		}
		body, err := io.ReadAll(r.Body) // net/http answers 100 Continue here
		if err != nil {
			received <- "read error: " + err.Error()
			return
		}
		received <- string(body)
		fmt.Fprintf(w, "got %d", len(body))
	})
	t.Cleanup(release.open) // before the backend's Close, which waits for its handler
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{b.URL}}}, ""))
	conn, br := edgeDial(t, e.addr)

	responses := make(chan edgeResponse, 4)
	read := make(chan struct{})
	go func() {
		defer close(read)
		for {
			resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
			if err != nil {
				responses <- edgeResponse{err: err}
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			responses <- edgeResponse{status: resp.StatusCode, body: string(body), err: err}
		}
	}()
	defer func() { conn.Close(); <-read }()

	payload := strings.Repeat("p", 64<<10)
	edgeWrite(t, conn, fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: bank.example\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", len(payload)))
	proxytest.Receive(t, arrived, "the upload's head at the backend")
	// Best effort, without waiting: a 100 Continue already here came before the backend asked.
	select {
	case r := <-responses:
		t.Fatalf("client got %d %q (error %v) before the backend asked for the body", r.status, r.body, r.err)
	default:
	}
	release.open()
	if r := proxytest.Receive(t, responses, "100 Continue"); r.status != http.StatusContinue || r.err != nil {
		t.Fatalf("client got %d %q (error %v), want 100 Continue", r.status, r.body, r.err)
	}
	edgeWrite(t, conn, payload)
	if r := proxytest.Receive(t, responses, "the upload's answer"); r.status != http.StatusOK || r.body != fmt.Sprintf("got %d", len(payload)) || r.err != nil {
		t.Errorf("client got %d %q (error %v), want 200 \"got %d\"", r.status, r.body, r.err, len(payload))
	}
	if got := proxytest.Receive(t, received, "the backend's body"); got != payload {
		t.Errorf("backend received %d bytes (%.40q), want the %d sent", len(got), got, len(payload))
	}
}

// edgeSignalBody is a request body that closes read when it is first read.
type edgeSignalBody struct {
	r    io.Reader
	once sync.Once
	read chan struct{}
}

func (b *edgeSignalBody) Read(p []byte) (int, error) {
	b.once.Do(func() { close(b.read) })
	return b.r.Read(p)
}

// TestEdgeExpectContinueHTTP2 sends Expect: 100-continue uploads over HTTP/2 with Go's
// client, which waits up to ExpectContinueTimeout (30s, beyond proxytest.Liveness: a proxy that holds
// the upload fails the test by timing out) for 100 Continue or an answer before it reads the
// body. A backend that answers at once without reading: the answer arrives and the body is
// never read. A backend that reads: 200 with the whole body.
func TestEdgeExpectContinueHTTP2(t *testing.T) {
	type upload struct {
		path string
		body string
		err  error
	}
	seen := make(chan upload, 1)
	b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		var status int
		if _, err := fmt.Sscanf(r.URL.Path, "/refuse/%d", &status); err == nil {
			seen <- upload{path: r.URL.Path}
			w.WriteHeader(status)
			return
		}
		body, err := io.ReadAll(r.Body)
		seen <- upload{path: r.URL.Path, body: string(body), err: err}
		fmt.Fprintf(w, "got %d", len(body))
	})
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{b.URL}}}, ""))
	client := edgeH2Client(t, 30*time.Second)
	payload := strings.Repeat("p", 64<<10)

	for _, tc := range []struct {
		path   string
		status int
		read   bool // the backend reads the body
	}{
		{"/refuse/401", http.StatusUnauthorized, false},
		{"/refuse/413", http.StatusRequestEntityTooLarge, false},
		{"/refuse/417", http.StatusExpectationFailed, false},
		{"/read", http.StatusOK, true},
	} {
		t.Run(strings.TrimPrefix(tc.path, "/"), func(t *testing.T) {
			body := &edgeSignalBody{r: strings.NewReader(payload), read: make(chan struct{})}
			req, err := http.NewRequest("POST", e.url+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = int64(len(payload))
			req.Header.Set("Expect", "100-continue")
			resp, got := edgeDo(t, client, req)
			if resp.ProtoMajor != 2 {
				t.Fatalf("answered over %s, want HTTP/2", resp.Proto)
			}
			wantBody := ""
			if tc.read {
				wantBody = fmt.Sprintf("got %d", len(payload))
			}
			if resp.StatusCode != tc.status || got != wantBody {
				t.Errorf("client got %d %q, want %d %q", resp.StatusCode, got, tc.status, wantBody)
			}
			u := proxytest.Receive(t, seen, "the upload at the backend")
			if tc.read {
				if u.err != nil || u.body != payload {
					t.Errorf("backend received %d bytes (read error %v), want the %d sent", len(u.body), u.err, len(payload))
				}
				return
			}
			select {
			case <-body.read:
				t.Errorf("the client's body was read for an upload the backend refused at once")
			default:
			}
		})
	}
}
