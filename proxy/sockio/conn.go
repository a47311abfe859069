package sockio

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Conn is a net.Conn whose Read and Write are the socket's own system calls, made in its
// RawConn's callbacks (the poller waits when they would block). Everything else (Close,
// deadlines, addresses, CloseWrite, SyscallConn) is the wrapped connection's.
type Conn struct {
	net.Conn
	raw syscall.RawConn

	rmu   sync.Mutex // one Read at a time uses r*: RawConn serialises only the callbacks
	rbuf  []byte
	rn    int
	rerr  syscall.Errno
	readF func(fd uintptr) bool // the callbacks, made once

	wmu    sync.Mutex
	wbuf   []byte
	wn     int
	werr   syscall.Errno
	writeF func(fd uintptr) bool
	tryF   func(fd uintptr)
	wdl    atomic.Int64 // the write deadline set (Unix nanoseconds), 0 for none: see WriteWithin
}

// Wrap returns c reading and writing through its socket's RawConn, or c itself where
// that is not possible (a connection that is not a socket's, or a system without raw
// socket calls).
func Wrap(c net.Conn) net.Conn {
	if !enabled {
		return c
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	w := &Conn{Conn: c, raw: raw}
	w.readF, w.writeF, w.tryF = w.readNow, w.writeNow, w.tryWrite
	return w
}

// Read reads as net.Conn's Read does: at most len(p) bytes, io.EOF at the end of the
// stream, a *net.OpError otherwise.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	c.rbuf, c.rn, c.rerr = p, 0, 0
	err := c.raw.Read(c.readF)
	n, errno := c.rn, c.rerr
	c.rbuf = nil
	c.rmu.Unlock()
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *Conn) readNow(fd uintptr) bool {
	for {
		n, errno := Read(fd, c.rbuf)
		switch errno {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // the poller waits for the socket, then calls again
		}
		c.rn, c.rerr = n, errno
		return true
	}
}

// Write writes all of p unless an error stops it, as net.Conn's Write does.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	c.wbuf, c.wn, c.werr = p, 0, 0
	err := c.raw.Write(c.writeF)
	n, errno := c.wn, c.werr
	c.wbuf = nil
	c.wmu.Unlock()
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case errno != 0:
		return n, c.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

func (c *Conn) writeNow(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		n, errno := Write(fd, c.wbuf[c.wn:])
		switch errno {
		case 0:
			c.wn += n
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werr = errno
			return true
		}
	}
	return true
}

// WriteWithin writes p as Write does, bounded by limit where no write deadline is set
// (SetWriteDeadline, SetDeadline): it then fails with os.ErrDeadlineExceeded once it has
// waited limit for the socket to take more. A write deadline that is set applies as it
// does to Write, and a write after it has passed fails at once.
//
// A write the socket takes at once (the usual case) sets no deadline: setting one
// modifies a runtime timer, and a modified timer wakes a thread to look at the timers
// (runtime.wakeNetPoller), once per write.
func (c *Conn) WriteWithin(p []byte, limit time.Duration) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if set := c.wdl.Load(); set != 0 && time.Now().UnixNano() >= set {
		return 0, c.opError("write", os.ErrDeadlineExceeded)
	}
	c.wmu.Lock()
	c.wbuf, c.wn, c.werr = p, 0, 0
	err := c.raw.Control(c.tryF) // (Control does not look at the deadline, Write would)
	if err == nil && c.werr == 0 && c.wn < len(p) {
		if err = c.bound(limit); err == nil {
			err = c.raw.Write(c.writeF)
		}
	}
	n, errno := c.wn, c.werr
	c.wbuf = nil
	c.wmu.Unlock()
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case errno != 0:
		return n, c.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// bound sets the socket's write deadline limit from now, unless one is set
// (SetWriteDeadline): that one stays, even if it is set while bound runs.
func (c *Conn) bound(limit time.Duration) error {
	if c.wdl.Load() != 0 {
		return nil
	}
	err := c.Conn.SetWriteDeadline(time.Now().Add(limit))
	if set := c.wdl.Load(); set != 0 { // set meanwhile: it may have come before ours
		err = c.Conn.SetWriteDeadline(time.Unix(0, set))
	}
	return err
}

// tryWrite writes what the socket takes without waiting.
func (c *Conn) tryWrite(fd uintptr) { c.writeNow(fd) }

// SetDeadline sets both deadlines, as SetReadDeadline does.
func (c *Conn) SetDeadline(t time.Time) error {
	c.wdl.Store(unixNano(t))
	return c.Conn.SetDeadline(orFar(t))
}

// SetReadDeadline sets the read deadline; none (the zero time) is a deadline far off,
// which is the same for a read but not for the runtime: taking a deadline away deletes
// its timer, and enough deleted timers make the runtime tidy its timer heap, after which
// the next timer set wakes a second thread (runtime.wakeNetPoller). Moving a timer later
// does not: a connection that sets a deadline for each request and takes it away after
// it sets no thread awake.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.Conn.SetReadDeadline(orFar(t)) }

// SetWriteDeadline sets the write deadline, as SetReadDeadline does.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.wdl.Store(unixNano(t))
	return c.Conn.SetWriteDeadline(orFar(t))
}

// farOff is how far off "no deadline" is: longer than any connection lives.
const farOff = 100 * 365 * 24 * time.Hour

func orFar(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now().Add(farOff)
	}
	return t
}

// unixNano is t for wdl: 0 for none, and at least 1 for a time at or before 1970.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(t.UnixNano(), 1)
}

// SyscallConn is the wrapped socket's, for those who make calls of their own on it.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.raw, nil }

// CloseWrite shuts the socket's writing side, where the wrapped connection can.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return &net.OpError{Op: "close", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: syscall.EINVAL}
}

// NetConn is the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// opError is the error net.Conn's Read or Write returns for err: the poller's (a deadline
// passed, the connection is closed) or the system call's.
func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
