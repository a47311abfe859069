package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy/frontend"
)

// The proxy benchmarks send the same GET through three paths on loopback, in one run:
// straight to the backend, through a plain httputil.ReverseProxy with a tuned transport, and
// through Spillway. Backend and client live in the benchmark process for all three, so the
// difference in cpu-ns/op (process CPU time per request, from getrusage) is what each proxy
// costs. Compare with: go test -run '^$' -bench Proxy -benchmem ./proxy

var benchBody = strings.Repeat("x", 128)

func benchBackend(b *testing.B) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, benchBody)
	}))
	b.Cleanup(s.Close)
	return s
}

func benchServe(b *testing.B, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchGet(b *testing.B, target string) {
	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	b.SetParallelism(4)
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := client.Get(target)
			if err != nil {
				b.Error(err)
				return
			}
			n, _ := io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || n != int64(len(benchBody)) {
				b.Errorf("status %d, %d bytes", res.StatusCode, n)
				return
			}
		}
	})
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

func BenchmarkProxyDirect(b *testing.B) {
	benchGet(b, benchBackend(b).URL+"/x")
}

func BenchmarkProxyPlainReverseProxy(b *testing.B) {
	target, _ := url.Parse(benchBackend(b).URL)
	// net/http's Transport with Spillway's tuning and framing check (what Spillway used for
	// every HTTP/1.1 request before upstream.Transport), so the comparison is of what sits
	// around it and of the transport itself.
	to := configs.Timeouts{Connect: configs.DefaultConnectTimeout,
		ResponseHeader: configs.DefaultResponseHeader, Idle: configs.DefaultIdleTimeout}
	tr := newNetHTTPTransport(to, backendDialer{timeouts: to, http1: true})
	b.Cleanup(tr.CloseIdleConnections)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		Transport: tr,
	}
	benchGet(b, benchServe(b, rp)+"/x")
}

func BenchmarkProxySpillway(b *testing.B) {
	backend := benchBackend(b)
	cfg, err := configs.Parse("bench.yaml", fmt.Appendf(nil,
		"sites:\n- {name: idc1, weight: 5, backends: [%q]}\n- {name: idc2, weight: 3, backends: [%q]}\n- {name: aws, weight: 2, backends: [%q]}\n",
		backend.URL, backend.URL, backend.URL))
	if err != nil {
		b.Fatal(err)
	}
	table, err := Build(cfg, Deps{Registry: balancer.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(table.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := frontend.NewServer(cfg, NewHandler(table, nil), nil)
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	benchGet(b, "http://"+ln.Addr().String()+"/x")
}
