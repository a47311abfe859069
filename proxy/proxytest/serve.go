package proxytest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy/frontend"
)

// Site is one site of a generated config.
type Site struct {
	Name     string
	Weight   int
	Backends []string
}

// ConfigYAML writes a config for sites, followed by extra top-level YAML (e.g. a timeouts
// block). listen.http is never bound: tests serve the proxy on their own listener.
func ConfigYAML(sites []Site, extra string) string {
	var b strings.Builder
	b.WriteString("listen:\n  http: \"127.0.0.1:0\"\nsites:\n")
	for _, s := range sites {
		fmt.Fprintf(&b, "  - name: %s\n    weight: %d\n    backends: [", s.Name, s.Weight)
		for i, u := range s.Backends {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%q", u)
		}
		b.WriteString("]\n")
	}
	b.WriteString(extra)
	return b.String()
}

// MustConfig parses yaml as the config file test.yaml, failing the test with every problem
// and the config if it is refused.
func MustConfig(t testing.TB, yaml string) *configs.Config {
	t.Helper()
	cfg, err := configs.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("configs.Parse:\n%v\nconfig:\n%s", err, yaml)
	}
	return cfg
}

// ServeOn serves h on a new 127.0.0.1 listener with the server frontend.NewServer makes for
// cfg, until the test ends, and returns the server and the listener's address.
func ServeOn(t testing.TB, cfg *configs.Config, h http.Handler) (*frontend.Server, string) {
	t.Helper()
	srv := frontend.NewServer(cfg, h, nil)
	return srv, Serve(t, srv)
}

// Serve runs srv on a new 127.0.0.1 listener (with TLS when srv is a TLS server) until the
// test ends, and returns the listener's address. At cleanup it closes
// srv and fails the test unless Serve returned http.ErrServerClosed.
func Serve(t testing.TB, srv *frontend.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		served <- srv.Serve(ln) // a TLS server terminates TLS there
	}()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// NewClient is an HTTP client for the tests' proxies (64 idle connections a host, no
// compression, Liveness as its timeout), whose idle connections close when the test ends.
func NewClient(t testing.TB) (*http.Client, *http.Transport) {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: Liveness}, tr
}

// FrontTLS is the proxy's front TLS config (frontend.ServerTLSConfig), serving cert.
func FrontTLS(cert tls.Certificate) *tls.Config {
	return frontend.ServerTLSConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil })
}
