package bench

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// idleConns leaves n connections open and idle at the server, each after one answered
// request: what the overhead scenario's memory figure divides by.
func TestIdleConnsStayOpenAndIdle(t *testing.T) {
	var mu sync.Mutex
	states := map[net.Conn]http.ConnState{}
	var served atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		w.Write([]byte("ok"))
	}))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		states[c] = s
	}
	srv.Start()
	defer srv.Close()
	count := func(want http.ConnState) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, s := range states {
			if s == want {
				n++
			}
		}
		return n
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s within 10s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	conns, err := idleConns(context.Background(), srv.Listener.Addr().String(), 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 20 || served.Load() != 20 {
		t.Fatalf("%d connections, %d requests served; want 20 and 20", len(conns), served.Load())
	}
	waitFor("20 idle connections at the server", func() bool { return count(http.StateIdle) == 20 })
	for _, c := range conns {
		c.Close()
	}
	waitFor("the 20 closed at the server", func() bool { return count(http.StateClosed) == 20 })

	// A server that closes after each answer is not a keep-alive connection: refused.
	srv.Config.SetKeepAlivesEnabled(false)
	if conns, err := idleConns(context.Background(), srv.Listener.Addr().String(), 2); err == nil {
		for _, c := range conns {
			c.Close()
		}
		t.Error("idleConns accepted connections the server closes")
	}
}

// procRSS reads resident memory: touching 64 MiB more of it shows.
func TestProcRSSSeesMemoryTouched(t *testing.T) {
	before, err := procRSS(os.Getpid())
	if err != nil || before <= 0 {
		t.Fatalf("procRSS: %d, %v", before, err)
	}
	block := make([]byte, 64<<20)
	for i := 0; i < len(block); i += 4096 {
		block[i] = 1
	}
	after, err := procRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 32<<20 {
		t.Errorf("RSS grew %d bytes after touching 64 MiB, want at least 32 MiB", after-before)
	}
	block[len(block)-1] = 2 // keep it alive until after the second reading
	if _, err := procRSS(-1); err == nil {
		t.Error("procRSS of no process: no error")
	}
}

// saturate stops at its request bound, and counts what failed.
func TestSaturateIsBoundedAndCounts(t *testing.T) {
	var served atomic.Int64
	fail := atomic.Bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		if fail.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	ok, failed := saturate(context.Background(), srv.URL, 4, time.Minute, 50)
	if ok != 50 || failed != 0 || served.Load() != 50 {
		t.Errorf("saturate: %d ok, %d failed, %d served; want 50, 0, 50", ok, failed, served.Load())
	}
	fail.Store(true)
	if ok, failed := saturate(context.Background(), srv.URL, 4, time.Minute, 20); ok != 0 || failed != 20 {
		t.Errorf("saturate of a failing server: %d ok, %d failed; want 0, 20", ok, failed)
	}
}
