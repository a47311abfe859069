package proxy_test

// The attacker's corpus for the edge's header hygiene (issue 11): header names with an
// underscore, which CGI-style backends map onto their dashed twin (X_Forwarded_For onto
// X-Forwarded-For) and would trust as a client address; and Via (RFC 9110 section 7.6.3).

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy/proxytest"
)

// edgeH2Client is a client that speaks HTTP/2 with prior knowledge (h2c) only, with the
// given expect-continue timeout; its connections close when the test ends.
func edgeH2Client(t *testing.T, expectContinue time.Duration) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p, ExpectContinueTimeout: expectContinue}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: proxytest.Liveness}
}

// edgeDo sends req with client and returns the response with its body read.
func edgeDo(t *testing.T, client *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	return resp, string(body)
}

// edgeHeaderValue returns the values of the header named name in any case, joined.
func edgeHeaderValue(h http.Header, name string) (string, bool) {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return strings.Join(v, ", "), true
		}
	}
	return "", false
}

// TestEdgeUnderscoreHeaders sends spoofing headers whose names have an underscore, over
// HTTP/1.1 and HTTP/2, under each headers.underscores policy.
func TestEdgeUnderscoreHeaders(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config string // the headers block, "" for the defaults
		h2     bool
		policy string // what must happen: drop, reject or allow
	}{
		{name: "default drops", policy: "drop"},
		{name: "drop", config: "headers: {underscores: drop}\n", policy: "drop"},
		{name: "reject", config: "headers: {underscores: reject}\n", policy: "reject"},
		{name: "allow", config: "headers: {underscores: allow}\n", policy: "allow"},
		{name: "HTTP/2 default drops", h2: true, policy: "drop"},
		{name: "HTTP/2 drop", config: "headers: {underscores: drop}\n", h2: true, policy: "drop"},
		{name: "HTTP/2 reject", config: "headers: {underscores: reject}\n", h2: true, policy: "reject"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newEdgeRecorder(t)
			e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{rec.srv.URL}}}, tc.config))
			client := e.client
			if tc.h2 {
				client = edgeH2Client(t, 0)
			}
			req, err := http.NewRequest("GET", e.url+"/underscore", nil)
			if err != nil {
				t.Fatal(err)
			}
			// Set as written: the map keys go on the wire unchanged.
			req.Header["X_Forwarded_For"] = []string{"6.6.6.6"}
			req.Header["X-Real_IP"] = []string{"x"}
			req.Header["X-Kept"] = []string{"yes"}
			resp, body := edgeDo(t, client, req)
			if tc.h2 && resp.ProtoMajor != 2 {
				t.Fatalf("answered over %s, want HTTP/2", resp.Proto)
			}
			want := http.StatusOK
			if tc.policy == "reject" {
				want = http.StatusBadRequest
			}
			if resp.StatusCode != want {
				t.Errorf("client got %d %q, want %d", resp.StatusCode, body, want)
			}

			client.CloseIdleConnections() // else draining waits for the HTTP/2 GOAWAY to be read
			hits := rec.settle(t, e)
			if tc.policy == "reject" {
				if len(hits) != 0 {
					t.Errorf("backend received %d requests, want none: %+v", len(hits), hits)
				}
				return
			}
			if len(hits) != 1 {
				t.Fatalf("backend received %d requests, want 1", len(hits))
			}
			h := hits[0].header
			if v := h.Get("X-Kept"); v != "yes" {
				t.Errorf("backend got X-Kept %q, want \"yes\"", v)
			}
			if v := strings.Join(h.Values("X-Forwarded-For"), ", "); v != "127.0.0.1" {
				t.Errorf("backend got X-Forwarded-For %q, want only the proxy's \"127.0.0.1\"", v)
			}
			switch tc.policy {
			case "drop":
				for k, v := range h {
					if strings.Contains(k, "_") {
						t.Errorf("backend got %s: %q, want no header with an underscore", k, v)
					}
				}
			case "allow":
				for name, want := range map[string]string{"X_Forwarded_For": "6.6.6.6", "X-Real_IP": "x"} {
					if v, ok := edgeHeaderValue(h, name); !ok || v != want {
						t.Errorf("backend got %s %q (present %v), want %q", name, v, ok, want)
					}
				}
			}
		})
	}
}

// TestEdgeVia checks the Via the proxy appends to requests (with the protocol it received
// them over) and to responses, after any Via already there, and that headers.via names the
// proxy or, when "", turns it off.
func TestEdgeVia(t *testing.T) {
	type seenVia struct {
		via   string
		lines int
	}
	seen := make(chan seenVia, 1)
	b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		seen <- seenVia{strings.Join(r.Header.Values("Via"), ", "), len(r.Header.Values("Via"))}
		if v := r.Header.Get("X-Backend-Via"); v != "" {
			w.Header().Set("Via", v)
		}
		io.WriteString(w, "ok")
	})

	for _, tc := range []struct {
		name       string
		config     string
		h2         bool
		inVia      string // the client's Via, if any
		backendVia string // the backend's response Via, if any
		wantReq    string // Via at the backend
		wantResp   string // Via at the client
	}{
		{name: "default", wantReq: "1.1 spillway", wantResp: "1.1 spillway"},
		{name: "default after existing", inVia: "1.0 fred", backendVia: "1.1 backend",
			wantReq: "1.0 fred, 1.1 spillway", wantResp: "1.1 backend, 1.1 spillway"},
		// The request came over HTTP/2; the response came from an HTTP/1.1 backend.
		{name: "HTTP/2", h2: true, wantReq: "2 spillway", wantResp: "1.1 spillway"},
		{name: "HTTP/2 after existing", h2: true, inVia: "1.0 fred", backendVia: "1.1 backend",
			wantReq: "1.0 fred, 2 spillway", wantResp: "1.1 backend, 1.1 spillway"},
		{name: "named", config: "headers: {via: \"edge-7\"}\n", inVia: "1.0 fred", backendVia: "1.1 backend",
			wantReq: "1.0 fred, 1.1 edge-7", wantResp: "1.1 backend, 1.1 edge-7"},
		{name: "off", config: "headers: {via: \"\"}\n"},
		{name: "off after existing", config: "headers: {via: \"\"}\n", inVia: "1.0 fred", backendVia: "1.1 backend",
			wantReq: "1.0 fred", wantResp: "1.1 backend"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{b.URL}}}, tc.config))
			client := e.client
			if tc.h2 {
				client = edgeH2Client(t, 0)
			}
			req, err := http.NewRequest("GET", e.url+"/via", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.inVia != "" {
				req.Header.Set("Via", tc.inVia)
			}
			if tc.backendVia != "" {
				req.Header.Set("X-Backend-Via", tc.backendVia)
			}
			resp, body := edgeDo(t, client, req)
			if resp.StatusCode != http.StatusOK || body != "ok" {
				t.Fatalf("client got %s %d %q, want 200 \"ok\"", resp.Proto, resp.StatusCode, body)
			}
			if tc.h2 && resp.ProtoMajor != 2 {
				t.Fatalf("answered over %s, want HTTP/2", resp.Proto)
			}
			got := proxytest.Receive(t, seen, "the backend's Via")
			if got.via != tc.wantReq {
				t.Errorf("backend got Via %q (%d lines), want %q", got.via, got.lines, tc.wantReq)
			}
			if v := strings.Join(resp.Header.Values("Via"), ", "); v != tc.wantResp {
				t.Errorf("client got Via %q, want %q", v, tc.wantResp)
			}
		})
	}
}

// TestEdgeHeadersConfig checks that configs.Parse takes the headers block's values and
// refuses an unknown underscores policy, naming the key.
func TestEdgeHeadersConfig(t *testing.T) {
	base := proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{"http://127.0.0.1:1"}}}, "")
	for _, tc := range []struct {
		headers string
		refused bool
	}{
		{"headers: {underscores: drop}\n", false},
		{"headers: {underscores: reject}\n", false},
		{"headers: {underscores: allow}\n", false},
		{"headers: {via: \"edge-7\"}\n", false},
		{"headers: {via: \"\"}\n", false},
		{"headers: {underscores: maybe}\n", true},
	} {
		t.Run(strings.TrimSpace(tc.headers), func(t *testing.T) {
			_, err := configs.Parse("test.yaml", []byte(base+tc.headers))
			switch {
			case !tc.refused && err != nil:
				t.Errorf("refused: %v", err)
			case tc.refused && err == nil:
				t.Errorf("accepted, want refused naming headers.underscores")
			case tc.refused && !strings.Contains(err.Error(), "headers.underscores"):
				t.Errorf("refused with %q, want a message naming headers.underscores", err)
			}
		})
	}
}

// TestUnderscoreTrailerIsDropped: headers.underscores (default drop) removes request header
// names with "_", because CGI-style backends read X_Forwarded_For as X-Forwarded-For. A
// chunked request can carry the same field as a trailer: the edge accepts the name (a
// token), net/http collects it into Request.Trailer, and the forwarder shares that map with
// the backend request, so the field reaches the backend untouched.
func TestUnderscoreTrailerIsDropped(t *testing.T) {
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
