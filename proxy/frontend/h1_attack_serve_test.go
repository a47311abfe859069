package frontend_test

// Attacks on the accept loop.

import (
	"errors"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
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
	skipBug(t, "Serve returns on EMFILE/ENFILE: h1.go serve retries only accept errors whose Timeout() is true")
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
