package proxy_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/frontend"
	"github.com/spillway/spillway/proxy/runtime"
	"github.com/spillway/spillway/proxy/telemetry"
)

// BenchmarkProxySpillwayOperated is BenchmarkProxySpillway as `spillway run` serves it: through
// the Reloader, with the live counts, Prometheus metrics, the recent-requests ring and the
// access log (every request, to a file). The difference is what operating it costs.
func BenchmarkProxySpillwayOperated(b *testing.B) {
	backend := proxy.BenchBackend(b)
	dir := b.TempDir()
	path := filepath.Join(dir, "bench.yaml")
	yaml := fmt.Sprintf("sites:\n- {name: idc1, weight: 5, backends: [%q]}\n- {name: idc2, weight: 3, backends: [%q]}\n- {name: aws, weight: 2, backends: [%q]}\n"+
		"access_log: {output: %q}\n", backend.URL, backend.URL, backend.URL, filepath.Join(dir, "access.log"))
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := runtime.NewReloader(runtime.ReloaderOptions{Path: path, Recorders: []proxy.Recorder{telemetry.NewRecent(4096)}, Metrics: prometheus.NewRegistry()})
	if err := r.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cancel(); r.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := frontend.NewServer(r.Config(), r.Handler(), nil)
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	proxy.BenchGet(b, "http://"+ln.Addr().String()+"/x")
}
