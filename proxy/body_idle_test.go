package proxy_test

// body_idle on the paths the exchange clock does not watch by itself: a flush to a
// stalled client, the discard of an upload's rest after an early answer.
// The tests came from the review of the edge work (issue 11); each comment describes the
// bug its test caught, as it was.

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/proxytest"
)

// TestBodyIdleCutsStalledClientOfSmallWrites: a client asks for a stream that arrives in
// small pieces (server-sent events, or any download read from a backend in pieces smaller
// than net/http's 2 KiB response buffer) and stops reading. Each piece's Write goes to
// net/http's buffer and returns at once; the proxy then blocks in the Flush that
// FlushInterval -1 makes after every write, which the exchange clock does not watch
// (responseWriter.FlushError has no begin/done). body_idle never cuts the exchange: the
// backend's slot, the handler and both connections are held until the client goes away.
func TestBodyIdleCutsStalledClientOfSmallWrites(t *testing.T) {
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

// TestBodyIdleBoundsSilentUploadAfterEarlyAnswer (regression pin; passes): a backend answers an
// upload before reading its body and closes its connection, and the client goes silent
// mid-upload. net/http's server, about to send the answer, first reads and discards the
// rest of the request body, a read the exchange clock does not watch; what bounds it
// today is that the Transport's write loop is still blocked reading the client's body
// (a watched read), so body_idle fires and its read deadline frees both. Keep it bounded
// if either of those changes.
func TestBodyIdleBoundsSilentUploadAfterEarlyAnswer(t *testing.T) {
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
