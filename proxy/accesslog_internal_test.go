package proxy

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Filling in the access log's client fields allocates nothing for a request with one
// X-Forwarded-For line: they are the request's own strings and constants.
func TestRequestInfoClientAllocatesNothing(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "https://bank.example/accounts", nil)
	r.Header.Set("User-Agent", "curl/8.5.0")
	r.Header.Set("X-Forwarded-For", "203.0.113.7, 198.51.100.2")
	r.Header.Set("Connection", "keep-alive")
	r.TLS = &tls.ConnectionState{Version: tls.VersionTLS13}
	body := &requestBody{read: 118}
	var info RequestInfo
	if n := testing.AllocsPerRun(100, func() { info.client(r, body) }); n != 0 {
		t.Errorf("%g allocations a request, want 0", n)
	}
	want := RequestInfo{Client: r.RemoteAddr, XFF: "203.0.113.7, 198.51.100.2", UserAgent: "curl/8.5.0",
		Proto: "HTTP/1.1", TLS: "1.3", BytesIn: 118}
	if info != want {
		t.Errorf("got %+v, want %+v", info, want)
	}
}
