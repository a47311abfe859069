package proxy_test

// Latency the balancer learns from an exchange: the backend's, not the client's. From a
// review; the comment describes the bug its test caught, as it was.

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/proxy/proxytest"
)

// R4: Result.Latency is headerAt − lease.Started, so it includes the client's upload time.
// A backend that answers at once looks 300ms slow after one slow mobile upload; that feeds
// the EWMA (p2c cost) and the adaptive limit, which then shrinks for the client's slowness.
func TestSlowUploadDoesNotCountAsBackendLatency(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(200)
	}))
	defer be.Close()
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "s", Weight: 1, Backends: []string{be.URL}}}, ""))
	pr, pw := io.Pipe()
	go func() {
		for range 6 {
			pw.Write([]byte("chunk"))
			time.Sleep(50 * time.Millisecond)
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", e.url+"/upload", pr)
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	b, _ := e.reg.Lookup(balancer.BackendID{Site: "s", Addr: be.URL})
	if b.Latency() > 100*time.Millisecond {
		t.Errorf("backend that answers at once has latency EWMA %v after a 300ms client upload", b.Latency())
	}
}
