package frontend_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/spillway/spillway/proxy/frontend"
)

func TestRedirectToHTTPS(t *testing.T) {
	for _, tc := range []struct {
		httpsAddr, host, target, want string
	}{
		{":443", "bank.example", "/pay?x=1", "https://bank.example/pay?x=1"},
		{":443", "bank.example:80", "/", "https://bank.example/"},
		{":8443", "bank.example:8080", "/a%20b", "https://bank.example:8443/a%20b"},
		{"127.0.0.1:8443", "[::1]:8080", "/", "https://[::1]:8443/"},
		{":443", "[::1]:80", "/", "https://[::1]/"},
	} {
		t.Run(tc.httpsAddr+" "+tc.host, func(t *testing.T) {
			rec := httptest.NewRecorder()
			r := httptest.NewRequest("POST", tc.target, strings.NewReader("x"))
			r.Host = tc.host
			frontend.RedirectToHTTPS(tc.httpsAddr).ServeHTTP(rec, r)
			if rec.Code != http.StatusPermanentRedirect || rec.Header().Get("Location") != tc.want {
				t.Errorf("%d Location %q, want 308 %q", rec.Code, rec.Header().Get("Location"), tc.want)
			}
		})
	}
	rec := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/", nil)
	r.Host = ""
	frontend.RedirectToHTTPS(":443").ServeHTTP(rec, r)
	if rec.Code != http.StatusBadRequest {
		t.Errorf("no Host: %d, want 400", rec.Code)
	}
}
