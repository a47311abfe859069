package proxy_test

// backendConn's view of the exchanges on a kept backend connection.
// The tests came from the review of the edge work (issue 11); each comment describes the
// bug its test caught, as it was.

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/proxytest"
)

// TestBackendConnHEADSniffNotPoisonedByBody: backendConn learns whether the request it is
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
func TestBackendConnHEADSniffNotPoisonedByBody(t *testing.T) {
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
