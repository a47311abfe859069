package proxy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/spillway/spillway/proxy/proxytest"
)

// checkErrorResponse checks the proxy's own error answer: status, a short plain-text body,
// and the request's ID.
func checkErrorResponse(t *testing.T, resp *http.Response, body string, wantStatus int, wantID string) {
	t.Helper()
	if resp.StatusCode != wantStatus {
		t.Fatalf("status %d body %q, want %d", resp.StatusCode, body, wantStatus)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	msg, ok := strings.CutSuffix(body, "\nrequest_id: "+wantID+"\n")
	if !ok || msg == "" || len(msg) > 64 || strings.ContainsAny(msg, "<>{\n") {
		t.Errorf("body %q, want a short plain-text message, then the line \"request_id: %s\"", body, wantID)
	}
	if v := resp.Header["X-Request-Id"]; len(v) != 1 || v[0] != wantID {
		t.Errorf("X-Request-Id %q, want [%q]", v, wantID)
	}
}

// TestErrorMapping drives each failure class through the proxy and checks the status the
// client gets, that the body is the proxy's short plain-text error with the request's ID,
// that nothing reached a backend the proxy refused, and that every lease was released.
func TestErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		name string
		// backend scripts the site's one backend; nil means a refused address.
		backend  func(w http.ResponseWriter, r *http.Request, hang *gate)
		extra    string // more config
		down     bool   // mark every backend down in the Registry
		emptyAlt bool   // add a second site with no backends
		zeroAlt  bool   // add a second site of weight 0 whose backend is up
		method   string
		want     int
		reached  bool // whether the backend may see the request
	}{
		{name: "every backend down", down: true, want: http.StatusServiceUnavailable,
			backend: func(w http.ResponseWriter, r *http.Request, _ *gate) { io.WriteString(w, "should not be here") }},
		{name: "down and the other site empty", down: true, emptyAlt: true, want: http.StatusServiceUnavailable,
			backend: func(w http.ResponseWriter, r *http.Request, _ *gate) { io.WriteString(w, "should not be here") }},
		{name: "down and the other site weight 0", down: true, zeroAlt: true, want: http.StatusServiceUnavailable,
			backend: func(w http.ResponseWriter, r *http.Request, _ *gate) { io.WriteString(w, "should not be here") }},
		{name: "connection refused", want: http.StatusBadGateway},
		{name: "connection refused POST", method: "POST", want: http.StatusBadGateway},
		{name: "response headers too slow", extra: "timeouts:\n  response_header: 200ms\n", want: http.StatusGatewayTimeout, reached: true,
			backend: func(w http.ResponseWriter, r *http.Request, hang *gate) {
				if hang.wait(r.Context()) {
					io.WriteString(w, "too late")
				}
			}},
		{name: "reset", want: http.StatusBadGateway, reached: true,
			backend: func(w http.ResponseWriter, r *http.Request, _ *gate) { resetConn(proxytest.Hijack(w)) }},
		{name: "closed without answer", want: http.StatusBadGateway, reached: true,
			backend: func(w http.ResponseWriter, r *http.Request, _ *gate) { proxytest.Hijack(w).Close() }},
		{name: "reset POST", method: "POST", want: http.StatusBadGateway, reached: true,
			backend: func(w http.ResponseWriter, r *http.Request, _ *gate) {
				io.Copy(io.Discard, r.Body)
				resetConn(proxytest.Hijack(w))
			}},
		{name: "garbage", want: http.StatusBadGateway, reached: true,
			backend: func(w http.ResponseWriter, r *http.Request, _ *gate) {
				c := proxytest.Hijack(w)
				io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\nthis is not HTTP\r\n\r\n")
				c.Close()
			}},
		{name: "garbage status line", want: http.StatusBadGateway, reached: true,
			backend: func(w http.ResponseWriter, r *http.Request, _ *gate) {
				c := proxytest.Hijack(w)
				io.WriteString(c, "HTTP/1.1 two hundred OK\r\nContent-Length: 2\r\n\r\nok")
				c.Close()
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hits proxytest.Counter
			hang := newGate(t)
			url := proxytest.RefusedURL(t)
			if tc.backend != nil {
				url = proxytest.CountingBackend(t, &hits, func(w http.ResponseWriter, r *http.Request) { tc.backend(w, r, hang) }).URL
			}
			t.Cleanup(hang.open)
			sites := []proxytest.Site{{Name: "idc1", Weight: 5, Backends: []string{url}}}
			var alt proxytest.Counter
			if tc.emptyAlt {
				sites = append(sites, proxytest.Site{Name: "idc2", Weight: 0, Backends: nil})
			}
			if tc.zeroAlt {
				b := proxytest.CountingBackend(t, &alt, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "weight 0") })
				sites = append(sites, proxytest.Site{Name: "idc2", Weight: 0, Backends: []string{b.URL}})
			}
			e := startProxy(t, proxytest.ConfigYAML(sites, tc.extra))
			if tc.down {
				e.reg.SetUp("idc1", url, false)
			}

			method := tc.method
			if method == "" {
				method = "GET"
			}
			var body io.Reader
			if method == "POST" {
				body = strings.NewReader("amount=100")
			}
			id := "err-" + strings.ReplaceAll(tc.name, " ", "-")
			req, err := http.NewRequest(method, e.url+"/pay", body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Request-Id", id)
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", method, err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			checkErrorResponse(t, resp, string(got), tc.want, id)
			if tc.want == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
				t.Errorf("503 without Retry-After")
			}
			hang.open()
			e.checkIdle(t)
			if n := hits.Get(); !tc.reached && n != 0 {
				t.Errorf("backend saw %d requests, want none", n)
			}
			if n := alt.Get(); n != 0 {
				t.Errorf("weight-0 site saw %d requests, want none", n)
			}
		})
	}
}

// TestConnectRefused checks that CONNECT gets 405 from the proxy and never reaches a backend.
func TestConnectRefused(t *testing.T) {
	var hits proxytest.Counter
	b := proxytest.CountingBackend(t, &hits, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "tunnel") })
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{b.URL}}}, ""))

	resp, body := rawExchange(t, e.addr, "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\nX-Request-Id: connect-1\r\n\r\n")
	checkErrorResponse(t, resp, body, http.StatusMethodNotAllowed, "connect-1")
	e.checkIdle(t)
	if n := hits.Get(); n != 0 {
		t.Errorf("backend saw %d CONNECT requests, want none", n)
	}
}

// TestServerLimits checks what net/http refuses before the Handler: a header block over
// limits.max_header_bytes (plus the 4096 bytes of slack net/http allows) gets 431, and a
// malformed request gets 400; neither reaches a backend. A header within the limit passes.
func TestServerLimits(t *testing.T) {
	const maxHeader = 4096
	var hits proxytest.Counter
	b := proxytest.CountingBackend(t, &hits, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{b.URL}}}, fmt.Sprintf("limits:\n  max_header_bytes: %d\n", maxHeader)))

	for _, tc := range []struct {
		name    string
		req     string
		want    int
		reaches bool
	}{
		{"header within the limit", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("a", maxHeader-200) + "\r\n\r\n", http.StatusOK, true},
		{"header over the limit and slack", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("a", maxHeader+4096+1) + "\r\n\r\n", http.StatusRequestHeaderFieldsTooLarge, false},
		{"many headers over the limit", "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X-Many: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 400) + "\r\n", http.StatusRequestHeaderFieldsTooLarge, false},
		{"not a request line", "this is not http at all\r\n\r\n", http.StatusBadRequest, false},
		{"request line without version", "GET /\r\nHost: a\r\n\r\n", http.StatusBadRequest, false},
		{"bad HTTP version", "GET / HTTP/9.Z\r\nHost: a\r\n\r\n", http.StatusBadRequest, false},
		{"invalid method", "G(E)T / HTTP/1.1\r\nHost: a\r\n\r\n", http.StatusBadRequest, false},
		{"missing Host", "GET / HTTP/1.1\r\n\r\n", http.StatusBadRequest, false},
		{"invalid header name", "GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", http.StatusBadRequest, false},
		{"conflicting Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", http.StatusBadRequest, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Get()
			resp, body, err := rawRoundTrip(t, e.addr, tc.req)
			if err != nil {
				t.Logf("reading the body of the %d response: %v", resp.StatusCode, err)
			}
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d body %q, want %d", resp.StatusCode, body, tc.want)
			}
			if reached := hits.Get() > before; reached != tc.reaches {
				t.Errorf("reached the backend: %v, want %v", reached, tc.reaches)
			}
		})
	}
	e.checkIdle(t)
}

// TestBrokenClientBodyIs400 sends a chunked body that turns malformed midway: the failure
// is the client's, so it gets 400, not the 502 of a backend fault.
func TestBrokenClientBodyIs400(t *testing.T) {
	seen := make(chan error, 1)
	b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		seen <- err
		if err == nil {
			io.WriteString(w, "stored")
		}
	})
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{b.URL}}}, ""))

	resp, body, err := rawRoundTrip(t, e.addr, "POST /upload HTTP/1.1\r\nHost: a\r\nX-Request-Id: broken-body\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n")
	if err != nil {
		t.Logf("reading the body of the %d response: %v", resp.StatusCode, err)
	}
	checkErrorResponse(t, resp, body, http.StatusBadRequest, "broken-body")
	if err := proxytest.Receive(t, seen, "the backend to see the upload end"); err == nil {
		t.Errorf("backend read a complete body from a broken upload")
	}
	e.checkIdle(t)
}

// TestErrorBodiesInJSON: a client that accepts JSON gets the proxy's own errors as
// {"error", "request_id", "retry_after"}; the others get plain text; the request ID is in
// the body either way.
func TestErrorBodiesInJSON(t *testing.T) {
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{proxytest.RefusedURL(t)}}}, "retries: {attempts: 1}\n"))
	e.reg.SetUp("idc1", e.cfg.Sites[0].Backends[0], false) // no backend up: 503, Retry-After 1
	for _, tc := range []struct {
		accept string
		json   bool
	}{
		{"application/json", true},
		{"text/html, application/problem+json;q=0.9", true},
		{"", false},
		{"text/html", false},
	} {
		t.Run(tc.accept, func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.url+"/accounts", nil)
			req.Header.Set("X-Request-Id", "json-1")
			if tc.accept != "" {
				req.Header.Set("Accept", tc.accept)
			}
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
				t.Fatalf("got %d, Retry-After %q; want 503 and 1", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
			if !tc.json {
				checkErrorResponse(t, resp, string(b), http.StatusServiceUnavailable, "json-1")
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			var got map[string]any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("body %q: %v", b, err)
			}
			want := map[string]any{"error": "Service Unavailable", "request_id": "json-1", "retry_after": float64(1)}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("body %v, want %v", got, want)
			}
		})
	}
}
