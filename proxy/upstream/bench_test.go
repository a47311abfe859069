package upstream

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRoundTrip sends the same small GET (128-byte answer) to one loopback backend
// through net/http's Transport, tuned as the proxy tunes it, and through this package's.
// Backend and client share the process, so the difference in cpu-ns/op (process CPU time
// per request, from getrusage) is the transports'. Compare with:
//
//	go test -run '^$' -bench RoundTrip -benchmem ./proxy/upstream
func BenchmarkRoundTrip(b *testing.B) {
	body := strings.Repeat("x", 128)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, body)
	}))
	defer s.Close()
	for _, tc := range []struct {
		name string
		tr   interface {
			http.RoundTripper
			CloseIdleConnections()
		}
	}{
		{"net-http", &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true, IdleConnTimeout: time.Minute,
			ResponseHeaderTimeout: time.Minute, WriteBufferSize: 32 << 10, ReadBufferSize: 32 << 10}},
		{"upstream", &Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute,
			ResponseHeaderTimeout: time.Minute, WriteBufferSize: 32 << 10, ReadBufferSize: 32 << 10}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			defer tc.tr.CloseIdleConnections()
			b.SetParallelism(4)
			b.ReportAllocs()
			b.ResetTimer()
			start := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 512)
				for pb.Next() {
					req, _ := http.NewRequest("GET", s.URL+"/x", nil)
					res, err := tc.tr.RoundTrip(req)
					if err != nil {
						b.Error(err)
						return
					}
					n, _ := io.ReadFull(res.Body, buf[:len(body)])
					if _, err := res.Body.Read(buf); err != io.EOF || n != len(body) {
						b.Errorf("%d bytes, then %v", n, err)
					}
					res.Body.Close()
				}
			})
			b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
