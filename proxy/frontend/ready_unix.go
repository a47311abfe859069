//go:build unix

package frontend

import (
	"io"
	"syscall"

	"github.com/spillway/spillway/proxy/sockio"
)

// readiness reads an idle client socket without holding a buffer while it waits, and
// peeks at it for the watch (watch.go). Both go through the socket's RawConn: a
// non-blocking read (or peek) first, and the runtime's poller when it would block.
// A connection that hides its socket has no RawConn: it waits in a plain read, with a
// buffer (see readIdle).
type readiness struct {
	raw  syscall.RawConn
	c    *h1conn
	read func(fd uintptr) bool // raw's callbacks, made once
	peek func(fd uintptr) bool
	n    int // what the last read or peek found: bytes, 0 for an end of stream
	err  error
	buf  [1]byte // the peek's
}

func (r *readiness) init(c *h1conn) {
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	r.raw, r.c = raw, c
	r.read = r.readNow
	r.peek = func(fd uintptr) bool {
		r.n, _, r.err = syscall.Recvfrom(int(fd), r.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return r.err != syscall.EAGAIN // false: the poller waits for the socket
	}
}

// readNow is the idle read's callback: it takes a read buffer, reads, and gives the
// buffer back when there was nothing to read (the poller then waits, and calls again).
func (r *readiness) readNow(fd uintptr) bool {
	c := r.c
	if c.buf == nil {
		c.buf = readBufs.Get().(*[readBufLen]byte)[:]
	}
	n, errno := sockio.Read(fd, c.buf[c.w:])
	r.n, r.err = n, nil
	if errno != 0 {
		r.err = errno
	}
	if errno == syscall.EAGAIN {
		c.release()
		return false
	}
	return true
}

func (r *readiness) canPeek() bool { return r.raw != nil }

// readIdle reads what comes next on a connection with nothing read ahead (c.r == c.w)
// into c.buf, taken once bytes are there, under the connection's read deadline.
func (r *readiness) readIdle(c *h1conn) error {
	if r.raw == nil {
		return c.fill(readBufLen)
	}
	c.r, c.w = 0, 0
	if err := r.raw.Read(r.read); err != nil {
		return err
	}
	switch {
	case r.err != nil:
		return r.err
	case r.n <= 0:
		return io.EOF
	}
	c.w = r.n
	return nil
}

// gone waits for the socket to become readable, and reports whether the peer is gone:
// the socket's end of stream, or an error on it. false when it sent a byte, or the wait
// was woken (disarm).
func (r *readiness) gone() bool {
	if r.raw.Read(r.peek) != nil {
		return false
	}
	return r.err != nil || r.n == 0
}
