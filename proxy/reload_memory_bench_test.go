package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/spillway/spillway/proxy/runtime"
)

// BenchmarkReloadMemory measures issue 13's target: resident memory grows less than
// 0.5 MiB per 100 reloads between reload 200 and 1200. Each reload changes the weights of a
// three-site config (health checks on, two backends a site) and one request goes through
// the proxy before the next, so every generation has built transports, forwarders and
// monitors. It reports resident and heap growth per 100 reloads over that window; the
// test TestReloadsLeaveOldTablesCollectable pins the cause (old Tables collected).
//
//	go test -run '^$' -bench ReloadMemory -benchtime 1x ./proxy/
func BenchmarkReloadMemory(b *testing.B) {
	const warm, last = 200, 1200
	backends := make([]string, 6)
	for i := range backends {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok")
		}))
		b.Cleanup(srv.Close)
		backends[i] = srv.URL
	}
	config := func(k int) string {
		w := reloadWeights(k)
		var s strings.Builder
		s.WriteString("listen: {http: \"127.0.0.1:0\"}\nsites:\n")
		for i, name := range []string{"idc1", "idc2", "aws"} {
			fmt.Fprintf(&s, "  - {name: %s, weight: %d, backends: [%q, %q], health: {path: /, interval: 1s}}\n",
				name, w[i], backends[2*i], backends[2*i+1])
		}
		return s.String()
	}
	path := filepath.Join(b.TempDir(), "spillway.yaml")
	write := func(k int) {
		if err := os.WriteFile(path, []byte(config(k)), 0o640); err != nil {
			b.Fatal(err)
		}
	}
	write(0)
	r := runtime.NewReloader(runtime.ReloaderOptions{Path: path})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); r.Close() }()
	if err := r.Start(ctx); err != nil {
		b.Fatal(err)
	}
	front := httptest.NewServer(r.Handler())
	defer front.Close()
	client := front.Client()
	b.ResetTimer()
	for range b.N {
		var rss, heap [2]float64
		for k := 1; k <= last; k++ {
			resp, err := client.Get(front.URL + "/")
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			write(k)
			if err := r.Reload("bench", true); err != nil {
				b.Fatalf("reload %d: %v", k, err)
			}
			switch k {
			case warm:
				rss[0], heap[0] = settledMemory(b)
			case last:
				rss[1], heap[1] = settledMemory(b)
			}
		}
		per := float64(last-warm) / 100
		b.ReportMetric((rss[1]-rss[0])/per, "rss-MiB/100reloads")
		b.ReportMetric((heap[1]-heap[0])/per, "heap-MiB/100reloads")
	}
}

// reloadWeights cycles the three sites' weights so that every reload changes the split.
func reloadWeights(k int) [3]int {
	return [3]int{1 + k%7, 1 + (k/7)%5, 1 + (k/35)%3}
}

// settledMemory collects garbage, returns freed pages to the OS, and reads the process's
// resident set and live heap, in MiB.
func settledMemory(b *testing.B) (rss, heap float64) {
	goruntime.GC()
	goruntime.GC()
	debug.FreeOSMemory()
	var ms goruntime.MemStats
	goruntime.ReadMemStats(&ms)
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Skipf("resident memory needs /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kib, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			rss = kib / 1024
		}
	}
	return rss, float64(ms.HeapAlloc) / (1 << 20)
}
