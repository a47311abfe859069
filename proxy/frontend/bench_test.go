package frontend_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy/frontend"
)

// BenchmarkIdleConnMemory measures what an idle keep-alive client connection costs the
// server, in-process: b.N connections each make one request and stay open, and the heap
// and stacks in use (after a collection) grow by B/conn, of which stack-B/conn is the
// goroutines' stacks. The client's side of each
// connection is counted too; the "hold" case (a bare listener that answers the one request
// and keeps the connection, with no goroutine) is that share, to subtract. Compare with:
//
//	go test -run '^$' -bench IdleConnMemory -benchtime 2000x ./proxy/frontend
func BenchmarkIdleConnMemory(b *testing.B) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	for _, tc := range []struct {
		name  string
		serve func(b *testing.B) string
	}{
		{"hold", serveHold},
		{"spillway", func(b *testing.B) string { return serveEngine(b, configs.EngineSpillway, ok) }},
		{"net-http", func(b *testing.B) string { return serveEngine(b, configs.EngineNetHTTP, ok) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			addr := tc.serve(b)
			conns := make([]net.Conn, 0, b.N)
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			beforeHeap, beforeStack := inUse()
			b.ResetTimer()
			for range b.N {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				conns = append(conns, c)
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
				res, err := http.ReadResponse(bufio.NewReaderSize(c, 64), nil)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
			}
			b.StopTimer()
			heap, stack := inUse()
			b.ReportMetric(float64(heap+stack-beforeHeap-beforeStack)/float64(b.N), "B/conn")
			b.ReportMetric(float64(stack-beforeStack)/float64(b.N), "stack-B/conn")
		})
	}
}

// inUse is the heap and the goroutine stacks in use, after a collection.
func inUse() (heap, stack int64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse), int64(m.StackInuse)
}

func serveEngine(b *testing.B, engine string, h http.Handler) string {
	cfg, err := configs.Parse("bench.yaml", []byte("listen: {http: \"127.0.0.1:0\", engine: "+engine+"}\nsites:\n- {name: a, weight: 1, backends: [\"http://127.0.0.1:1\"]}\n"))
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := frontend.NewServer(cfg, h, nil)
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ln) }()
	b.Cleanup(func() { srv.Close(); <-served })
	return ln.Addr().String()
}

// serveHold answers each connection's one request and keeps the connection, with no
// goroutine and no buffer: what an idle connection costs at the least.
func serveHold(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	var held []net.Conn
	go func() {
		defer close(done)
		var buf [512]byte
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if n, _ := c.Read(buf[:]); !strings.Contains(string(buf[:n]), "\r\n\r\n") {
				c.Close()
				continue
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			held = append(held, c)
		}
	}()
	b.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range held {
			c.Close()
		}
	})
	return ln.Addr().String()
}
