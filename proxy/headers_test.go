package proxy_test

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/proxy/proxytest"
)

// recorded is what a backend saw of one request.
type recorded struct {
	header http.Header
	host   string
	body   string
}

// recordingBackend sends what it saw of each request on seen and answers "ok".
func recordingBackend(t *testing.T, seen chan<- recorded) string {
	return proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen <- recorded{header: r.Header.Clone(), host: r.Host, body: string(body)}
		w.Header().Set("X-Request-Id", "backend-own")
		io.WriteString(w, "ok")
	}).URL
}

// TestHopByHopRequestHeaders sends each hop-by-hop request header on the wire and checks that
// the backend does not get it, while an end-to-end header passes.
func TestHopByHopRequestHeaders(t *testing.T) {
	seen := make(chan recorded, 1)
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{recordingBackend(t, seen)}}}, ""))

	for _, tc := range []struct {
		name   string
		method string
		lines  string // request header lines, each ending in \r\n
		body   string // raw body bytes as framed on the wire
		absent []string
		want   map[string]string // headers the backend must see, with their value
	}{
		{name: "Connection and a header it names", lines: "Connection: X-Foo\r\nX-Foo: secret\r\n",
			absent: []string{"Connection", "X-Foo"}},
		{name: "Connection close and a header it names", lines: "Connection: close, X-Foo\r\nX-Foo: secret\r\n",
			absent: []string{"Connection", "X-Foo"}},
		{name: "Connection names several", lines: "Connection: keep-alive, X-Foo , X-Bar\r\nX-Foo: a\r\nX-Bar: b\r\n",
			absent: []string{"Connection", "X-Foo", "X-Bar"}},
		{name: "Keep-Alive", lines: "Keep-Alive: timeout=5, max=100\r\n", absent: []string{"Keep-Alive"}},
		{name: "Proxy-Connection", lines: "Proxy-Connection: keep-alive\r\n", absent: []string{"Proxy-Connection"}},
		{name: "Proxy-Authorization", lines: "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n", absent: []string{"Proxy-Authorization"}},
		{name: "TE without trailers", lines: "TE: gzip, deflate\r\n", absent: []string{"Te"}},
		{name: "TE trailers kept", lines: "TE: trailers\r\n", want: map[string]string{"Te": "trailers"}},
		{name: "TE trailers among others", lines: "TE: deflate, trailers\r\n", want: map[string]string{"Te": "trailers"}},
		{name: "Trailer", lines: "Trailer: X-Checksum\r\n", absent: []string{"Trailer"}},
		{name: "Transfer-Encoding", method: "POST", lines: "Transfer-Encoding: chunked\r\n",
			body: "5\r\nhello\r\n0\r\n\r\n", absent: []string{"Transfer-Encoding"}},
		{name: "Upgrade h2c", lines: "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
			absent: []string{"Connection", "Upgrade", "Http2-Settings"}},
		{name: "Upgrade other protocol", lines: "Connection: upgrade\r\nUpgrade: foo/2\r\n",
			absent: []string{"Connection", "Upgrade"}},
		{name: "Upgrade websocket without Connection upgrade", lines: "Upgrade: websocket\r\n",
			absent: []string{"Upgrade"}},
		// Bug pinned: X-Forwarded-For named in Connection is hop-by-hop like any other, so
		// the backend gets only the address the proxy appends; Rewrite copied the inbound
		// value back after ReverseProxy had removed it.
		{name: "Connection names X-Forwarded-For", lines: "Connection: X-Forwarded-For\r\nX-Forwarded-For: 6.6.6.6\r\n",
			absent: []string{"Connection"}, want: map[string]string{"X-Forwarded-For": "127.0.0.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "GET"
			}
			req := method + " /hop HTTP/1.1\r\nHost: app.bank.example\r\nX-Kept: yes\r\n" + tc.lines + "\r\n" + tc.body
			resp, body := rawExchange(t, e.addr, req)
			if resp.StatusCode != http.StatusOK || body != "ok" {
				t.Fatalf("status %d body %q, want 200 \"ok\"", resp.StatusCode, body)
			}
			got := proxytest.Receive(t, seen, "the backend's record")
			if v := got.header.Get("X-Kept"); v != "yes" {
				t.Errorf("end-to-end X-Kept = %q at the backend, want \"yes\"", v)
			}
			for _, k := range tc.absent {
				if v, ok := got.header[k]; ok {
					t.Errorf("backend got hop-by-hop %s: %q", k, v)
				}
			}
			for k, want := range tc.want {
				if v := strings.Join(got.header[k], ", "); v != want {
					t.Errorf("backend got %s: %q, want %q", k, v, want)
				}
			}
			if tc.method == "POST" && got.body != "hello" {
				t.Errorf("backend got body %q, want \"hello\"", got.body)
			}
		})
	}
}

// TestHopByHopResponseHeaders has a backend put each hop-by-hop header on the wire in its
// response and checks that the client does not get it.
func TestHopByHopResponseHeaders(t *testing.T) {
	cases := []struct {
		name   string
		lines  string
		absent []string
	}{
		{"Connection and a header it names", "Connection: X-Bar\r\nX-Bar: secret\r\n", []string{"Connection", "X-Bar"}},
		{"Connection names several", "Connection: keep-alive, X-Bar, X-Baz\r\nX-Bar: a\r\nX-Baz: b\r\n", []string{"Connection", "X-Bar", "X-Baz"}},
		// Known limit of net/http, not fixed here: with "close" among the tokens, the
		// transport's response parser (transfer.go, shouldClose with removeCloseHeader)
		// deletes the whole Connection header before ReverseProxy reads which headers it
		// names, so X-Bar reaches the client. README, "Known limitations".
		{"Connection close and a header it names (net/http limit)", "Connection: close, X-Bar\r\nX-Bar: secret\r\n", []string{"Connection", "X-Bar"}},
		{"Keep-Alive", "Keep-Alive: timeout=5\r\n", []string{"Keep-Alive"}},
		{"Proxy-Connection", "Proxy-Connection: keep-alive\r\n", []string{"Proxy-Connection"}},
		{"Proxy-Authenticate", "Proxy-Authenticate: Basic realm=\"x\"\r\n", []string{"Proxy-Authenticate"}},
		{"TE", "TE: trailers\r\n", []string{"Te"}},
		{"Trailer", "Trailer: X-Checksum\r\n", []string{"Trailer"}},
		{"Upgrade", "Upgrade: foo/2\r\n", []string{"Upgrade"}},
	}
	b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		var i int
		fmt.Sscanf(r.URL.Path, "/resp/%d", &i)
		conn := proxytest.Hijack(w)
		defer conn.Close()
		// The connection closes after one response: the proxy's transport notices before
		// reusing it, or retries the idempotent GET on a new one.
		fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Kept: yes\r\n%s\r\nok", cases[i].lines)
	})
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{b.URL}}}, ""))

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if strings.HasSuffix(tc.name, "(net/http limit)") {
				t.Skip("net/http drops a response's Connection header when it says close, before the proxy can read the headers it names")
			}
			resp, body := rawExchange(t, e.addr, fmt.Sprintf("GET /resp/%d HTTP/1.1\r\nHost: app.bank.example\r\n\r\n", i))
			if resp.StatusCode != http.StatusOK || body != "ok" {
				t.Fatalf("status %d body %q, want 200 \"ok\"", resp.StatusCode, body)
			}
			if v := resp.Header.Get("X-Kept"); v != "yes" {
				t.Errorf("end-to-end X-Kept = %q at the client, want \"yes\"", v)
			}
			for _, k := range tc.absent {
				if v, ok := resp.Header[k]; ok {
					t.Errorf("client got hop-by-hop %s: %q", k, v)
				}
			}
		})
	}
}

// TestForwardingHeaders checks X-Forwarded-For (appended, never replaced), -Proto and -Host
// (set by the proxy whatever the client sent) and that Host reaches the backend unchanged.
func TestForwardingHeaders(t *testing.T) {
	seen := make(chan recorded, 1)
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{recordingBackend(t, seen)}}}, ""))

	for _, tc := range []struct {
		name    string
		in      http.Header
		wantXFF string
	}{
		{"no X-Forwarded-For", http.Header{}, "127.0.0.1"},
		{"appended to one", http.Header{"X-Forwarded-For": {"1.2.3.4"}}, "1.2.3.4, 127.0.0.1"},
		{"appended to a list", http.Header{"X-Forwarded-For": {"1.2.3.4, 10.0.0.1"}}, "1.2.3.4, 10.0.0.1, 127.0.0.1"},
		{"appended to repeated headers", http.Header{"X-Forwarded-For": {"1.2.3.4", "5.6.7.8"}}, "1.2.3.4, 5.6.7.8, 127.0.0.1"},
		{"spoofed proto and host overridden", http.Header{
			"X-Forwarded-For":   {"1.2.3.4"},
			"X-Forwarded-Proto": {"https"},
			"X-Forwarded-Host":  {"evil.example"},
		}, "1.2.3.4, 127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest("GET", e.url+"/fwd", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "app.bank.example:8080"
			for k, v := range tc.in {
				req.Header[k] = v
			}
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			got := proxytest.Receive(t, seen, "the backend's record")
			if got.host != "app.bank.example:8080" {
				t.Errorf("backend Host %q, want the client's \"app.bank.example:8080\"", got.host)
			}
			if v := got.header["X-Forwarded-For"]; len(v) != 1 || v[0] != tc.wantXFF {
				t.Errorf("X-Forwarded-For %q, want [%q]", v, tc.wantXFF)
			}
			if v := got.header["X-Forwarded-Proto"]; len(v) != 1 || v[0] != "http" {
				t.Errorf("X-Forwarded-Proto %q, want [\"http\"]", v)
			}
			if v := got.header["X-Forwarded-Host"]; len(v) != 1 || v[0] != "app.bank.example:8080" {
				t.Errorf("X-Forwarded-Host %q, want [\"app.bank.example:8080\"]", v)
			}
		})
	}
}

// TestRequestID checks that X-Request-Id is propagated when valid, generated when missing or
// invalid, the same on the backend's request and the client's response, and never the
// backend's own.
func TestRequestID(t *testing.T) {
	seen := make(chan recorded, 1)
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{recordingBackend(t, seen)}}}, ""))

	generated := map[string]string{} // id → case that got it
	for _, tc := range []struct {
		name      string
		in        []string // nil: no header
		extra     http.Header
		propagate bool
		either    bool // propagated or generated, as long as backend and client agree
	}{
		{name: "valid propagated", in: []string{"abc-123.XYZ_:9"}, propagate: true},
		{name: "128 characters propagated", in: []string{strings.Repeat("a", 128)}, propagate: true},
		{name: "missing generated"},
		{name: "missing generated again"},
		{name: "empty replaced", in: []string{""}},
		{name: "invalid characters replaced", in: []string{"bad id!"}},
		{name: "injection replaced", in: []string{"x\",\"admin\":true"}},
		{name: "129 characters replaced", in: []string{strings.Repeat("a", 129)}},
		{name: "repeated header replaced", in: []string{"one", "two"}},
		// Bug pinned: a client that lists X-Request-Id in Connection must not strip the
		// proxy's ID from the backend's request, nor let the backend's own ID through.
		{name: "listed in Connection", in: []string{"conn-listed-1"}, extra: http.Header{"Connection": {"X-Request-Id"}}, either: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest("GET", e.url+"/id", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.in != nil {
				req.Header["X-Request-Id"] = tc.in
			}
			for k, v := range tc.extra {
				req.Header[k] = v
			}
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			got := proxytest.Receive(t, seen, "the backend's record")

			atBackend := got.header["X-Request-Id"]
			atClient := resp.Header["X-Request-Id"]
			if len(atBackend) != 1 || len(atClient) != 1 || atBackend[0] != atClient[0] {
				t.Fatalf("X-Request-Id at backend %q, at client %q: want one, the same", atBackend, atClient)
			}
			id := atClient[0]
			if id == "backend-own" {
				t.Fatalf("client got the backend's own X-Request-Id")
			}
			switch {
			case tc.propagate:
				if id != tc.in[0] {
					t.Errorf("X-Request-Id %q, want the client's %q propagated", id, tc.in[0])
				}
			case tc.either && id == tc.in[0]:
			default:
				for _, in := range tc.in {
					if id == in {
						t.Errorf("X-Request-Id %q was propagated, want a new one", id)
					}
				}
				if !plausibleID(id) {
					t.Errorf("generated X-Request-Id %q is not a plausible ID", id)
				}
				if prev, dup := generated[id]; dup {
					t.Errorf("generated X-Request-Id %q twice (also in %q)", id, prev)
				}
				generated[id] = tc.name
			}
		})
	}
}

func plausibleID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._:-", c) >= 0) {
			return false
		}
	}
	return true
}

// TestWebSocketUpgradePasses does a raw WebSocket handshake through the proxy: the backend
// hijacks and answers 101, then bytes flow both ways over the tunnel.
func TestWebSocketUpgradePasses(t *testing.T) {
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	seen := make(chan http.Header, 1)
	backendDone := make(chan error, 1)
	b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			backendDone <- err
			return
		}
		defer conn.Close()
		// Hop-by-hop headers on the 101 too: ReverseProxy does not strip them there.
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Internal\r\n"+
			"X-Internal: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nSec-WebSocket-Accept: %s\r\nX-Request-Id: backend-own\r\n\r\n",
			wsAccept(r.Header.Get("Sec-WebSocket-Key")))
		brw.WriteString("hello from backend")
		if err := brw.Flush(); err != nil {
			backendDone <- err
			return
		}
		// Echo until the proxy closes its side.
		_, err = io.Copy(conn, brw.Reader)
		backendDone <- err
	})
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{b.URL}}}, ""))

	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(proxytest.Liveness))
	fmt.Fprintf(conn, "GET /chat HTTP/1.1\r\nHost: app.bank.example\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nX-Request-Id: ws-1\r\n\r\n", key)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read handshake response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("handshake status %d body %q, want 101", resp.StatusCode, body)
	}
	if v := resp.Header.Get("Sec-WebSocket-Accept"); v != wsAccept(key) {
		t.Errorf("Sec-WebSocket-Accept %q, want %q", v, wsAccept(key))
	}
	if v := resp.Header.Get("Upgrade"); !strings.EqualFold(v, "websocket") {
		t.Errorf("response Upgrade %q, want websocket", v)
	}
	if v := resp.Header["X-Request-Id"]; len(v) != 1 || v[0] != "ws-1" {
		t.Errorf("response X-Request-Id %q, want [ws-1]", v)
	}
	for _, k := range []string{"X-Internal", "Keep-Alive", "Proxy-Authenticate"} {
		if v, ok := resp.Header[k]; ok {
			t.Errorf("101 response carries hop-by-hop %s: %q", k, v)
		}
	}
	if v := resp.Header.Get("Connection"); !strings.EqualFold(v, "Upgrade") {
		t.Errorf("101 response Connection %q, want Upgrade", v)
	}

	h := proxytest.Receive(t, seen, "the backend's handshake request")
	if h.Get("Upgrade") != "websocket" || !strings.Contains(strings.ToLower(h.Get("Connection")), "upgrade") {
		t.Errorf("backend got Upgrade %q Connection %q, want a WebSocket upgrade", h.Get("Upgrade"), h.Get("Connection"))
	}
	if h.Get("Sec-WebSocket-Key") != key || h.Get("Sec-WebSocket-Version") != "13" {
		t.Errorf("backend got Sec-WebSocket-Key %q Version %q", h.Get("Sec-WebSocket-Key"), h.Get("Sec-WebSocket-Version"))
	}

	readN := func(n int) string {
		t.Helper()
		buf := make([]byte, n)
		if _, err := io.ReadFull(br, buf); err != nil {
			t.Fatalf("read %d bytes over the tunnel: %v", n, err)
		}
		return string(buf)
	}
	if got := readN(len("hello from backend")); got != "hello from backend" {
		t.Fatalf("backend → client: %q", got)
	}
	for _, msg := range []string{"ping-1", strings.Repeat("x", 100<<10), "ping-3"} {
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatalf("client → backend: %v", err)
		}
		if got := readN(len(msg)); got != msg {
			t.Fatalf("echo of %d bytes came back different", len(msg))
		}
	}
	// The tunnel holds its lease while it is open.
	if in := e.reg.Backend(balancer.BackendID{Site: "idc1", Addr: b.URL}).Inflight(); in != 1 {
		t.Errorf("backend in-flight %d while the tunnel is open, want 1", in)
	}
	conn.(*net.TCPConn).CloseWrite()
	if err := proxytest.Receive(t, backendDone, "the backend to see the tunnel close"); err != nil {
		t.Errorf("backend echo: %v", err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the backend closed, client read %v, want EOF", err)
	}
}

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}
