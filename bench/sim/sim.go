// Package sim simulates the backends of a site on loopback, for the demo, the bench suite
// and tests. A simulated backend answers every request after its service time and says who
// it is in the X-Sim-Site and X-Sim-Backend response headers.
package sim

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Response headers a simulated backend sets.
const (
	HeaderSite    = "X-Sim-Site"
	HeaderBackend = "X-Sim-Backend"
)

// Backend is one simulated backend listening on loopback. Close stops it.
type Backend struct {
	Site, Name string
	// Latency is the service time of every request.
	Latency time.Duration

	ln       net.Listener
	srv      *http.Server
	done     chan struct{} // closed when Serve has returned
	serveErr error         // why Serve stopped early; read after done
}

// Start listens on addr ("127.0.0.1:18101"; port 0 picks a free one) and serves until
// Close. addr must be a loopback address.
func Start(addr, site, name string, latency time.Duration) (*Backend, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("simulated backend %s/%s: %s is not a loopback address", site, name, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	b := &Backend{Site: site, Name: name, Latency: latency, ln: ln, done: make(chan struct{})}
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(b.done)
		if err := b.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			b.serveErr = err
		}
	}()
	return b, nil
}

// URL is the backend's base URL, e.g. "http://127.0.0.1:18101".
func (b *Backend) URL() string { return "http://" + b.ln.Addr().String() }

// Close stops the backend, cutting open connections, and waits for its server to exit. It
// returns why the server stopped, if that was not Close.
func (b *Backend) Close() error {
	err := b.srv.Close()
	<-b.done
	return errors.Join(b.serveErr, err)
}

func (b *Backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if b.Latency > 0 {
		t := time.NewTimer(b.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	w.Header().Set(HeaderSite, b.Site)
	w.Header().Set(HeaderBackend, b.Name)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "hello from %s/%s\n", b.Site, b.Name)
}
