package proxy_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/spillway/spillway/proxy/admin"
	"github.com/spillway/spillway/proxy/runtime"
)

// Regression (found by review): with admin.listen on loopback, reads are open to any request that reaches the
// socket, whatever its Host: a web page the operator opens can read the state, metrics and
// recent requests through DNS rebinding (attacker.example resolving to 127.0.0.1).
func TestRegressionOpenReadsIgnoreHost(t *testing.T) {
	a := nameBackend(t, "a")
	e := startReloader(t, configYAML([]site{{"a", 1, []string{a.URL}}}, ""), runtime.ReloaderOptions{})
	h := admin.New(admin.Options{Control: e.r, OpenReads: true, Tokens: admin.Tokens{"ops": "0123456789abcdef"}})
	req := httptest.NewRequest(http.MethodGet, "http://attacker.example/api/v1/state", nil)
	req.RemoteAddr = "127.0.0.1:5555"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code == http.StatusOK {
		t.Fatalf("GET /api/v1/state with Host attacker.example and no token: %d (want 403/421 for a non-loopback Host)", rec.Code)
	}
}
