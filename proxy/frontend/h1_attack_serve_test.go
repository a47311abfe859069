package frontend_test

// Attacks on the accept loop.

import (
	"errors"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/proxytest"
)

// failingListener's Accept fails with errs, in order, before it accepts.
type failingListener struct {
	net.Listener
	errs chan error
}

func (l *failingListener) Accept() (net.Conn, error) {
	select {
	case err := <-l.errs:
		return nil, err
	default:
		return l.Listener.Accept()
	}
}

// An accept that fails for want of descriptors (EMFILE, ENFILE: a flood of connections
// causes it) is waited out and retried, as net/http does (it retries a net.Error that is
// Temporary, which these are, though not Timeout), not the end of the listener: clients
// that exhaust the process's descriptors must not stop the server for good.
func TestAttackAcceptOutOfDescriptors(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE} {
		t.Run(errno.Error(), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			fl := &failingListener{Listener: ln, errs: make(chan error, 3)}
			for range 3 {
				fl.errs <- &net.OpError{Op: "accept", Net: "tcp", Addr: ln.Addr(), Err: os.NewSyscallError("accept4", errno)}
			}
			h, ch := recorder(nil)
			srv, served := serveOn(t, fl, h)
			c := dial(t, ln.Addr().String())
			c.send(get("/after"))
			select {
			case err := <-served:
				t.Fatalf("Serve returned %v", err)
			case s := <-ch:
				if s.Path != "/after" {
					t.Fatalf("served %q", s.Path)
				}
			}
			if resp, body := c.response("GET"); resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("%d %q", resp.StatusCode, body)
			}
			srv.Close()
			if err := recv(t, served, "Serve"); !errors.Is(err, http.ErrServerClosed) {
				t.Fatalf("Serve: %v", err)
			}
		})
	}
}

// engineGoroutines counts the goroutines running the engine's connections, and those of
// them asleep in linger.
func engineGoroutines() (n, lingering int) {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "frontend.(*h1conn).") {
			n++
			if strings.Contains(g, "(*h1conn).linger(") && strings.Contains(g, "select") {
				lingering++ // (waiting out the linger, its reads over)
			}
		}
	}
	return n, lingering
}

// Close ends every connection at once, its goroutine too: one that lingers after a body
// it would not drain (the client still sending) must not sleep its linger out.
func TestAttackCloseEndsLinger(t *testing.T) {
	h, paths := unread()
	srv, addr, served := newServer(t, h)
	c := dial(t, addr)
	c.send("POST /big HTTP/1.1\r\nHost: example.com\r\nContent-Length: 100000000\r\n\r\n")
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		chunk := []byte(strings.Repeat("b", 64<<10))
		for {
			if _, err := c.c.Write(chunk); err != nil {
				return
			}
		}
	}()
	if resp, body := c.response("POST"); body != "answer /big" || !resp.Close {
		t.Fatalf("%q close=%v", body, resp.Close)
	}
	recv(t, paths, "the handler")
	c.rest() // the server's CloseWrite: it lingers now, the client still sending
	proxytest.WaitFor(t, "the connection asleep in linger", func() bool {
		_, lingering := engineGoroutines()
		return lingering == 1
	})
	srv.Close()
	<-wrote
	if err := recv(t, served, "Serve"); !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	deadline := time.Now().Add(200 * time.Millisecond)
	for n, _ := engineGoroutines(); n > 0; n, _ = engineGoroutines() {
		if time.Now().After(deadline) {
			t.Fatalf("%d connection goroutines still run 200ms after Close", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
