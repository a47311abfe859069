package sockio

import (
	"io"
	"math"
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
	raw          syscall.RawConn
	network      string
	laddr, raddr net.Addr // for errors, as net's

	rmu   sync.Mutex // one Read at a time uses r*: RawConn serialises only the callbacks
	rbuf  []byte
	rn    int
	rerr  syscall.Errno
	readF func(fd uintptr) bool // the callbacks, made once

	wmu     sync.Mutex // one Write at a time uses w*
	wbuf    []byte
	wn      int
	werr    syscall.Errno
	writeF  func(fd uintptr) bool
	tryF    func(fd uintptr)
	someF   func(fd uintptr) bool
	bounded bool         // WriteWithin set the socket's write deadline (wmu)
	wdl     atomic.Int64 // the write deadline set (Unix nanoseconds), 0 for none: see WriteWithin
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
	if err != nil || c.LocalAddr() == nil {
		return c
	}
	w := &Conn{Conn: c, raw: raw, network: c.LocalAddr().Network(), laddr: c.LocalAddr(), raddr: c.RemoteAddr()}
	w.readF, w.writeF, w.tryF, w.someF = w.readNow, w.writeNow, w.tryWrite, w.writeSome
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
	n, errno := Read(fd, c.rbuf)
	if errno == syscall.EAGAIN {
		return false // the poller waits for the socket, then calls again
	}
	c.rn, c.rerr = n, errno
	return true
}

// Write writes all of p unless an error stops it, as net.Conn's Write does: under the
// write deadline set, or none.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	var err error
	if c.bounded && c.wdl.Load() == 0 {
		// WriteWithin's bound is not this write's: back to none (it may have passed).
		c.bounded = false
		err = c.Conn.SetWriteDeadline(time.Now().Add(farOff))
	}
	c.wbuf, c.wn, c.werr = p, 0, 0
	if err == nil {
		err = c.raw.Write(c.writeF)
	}
	return c.wrote(err)
}

// wrote ends a write: what it wrote and how it failed, as net's. c.wmu is held, and
// released.
func (c *Conn) wrote(err error) (int, error) {
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

// writeNow writes the rest of wbuf, and reports false when the socket takes no more
// (the poller then waits, and calls again).
func (c *Conn) writeNow(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		n, errno := Write(fd, c.wbuf[c.wn:])
		switch {
		case errno == syscall.EAGAIN:
			return false
		case errno != 0:
			c.werr = errno
			return true
		case n == 0: // (not for a socket; net's Write says the same of it)
			c.werr = syscall.EIO
			return true
		default:
			c.wn += n
		}
	}
	return true
}

// WriteWithin writes p as Write does, bounded by limit where no write deadline is set
// (SetWriteDeadline, SetDeadline): it then fails with os.ErrDeadlineExceeded once the
// socket has taken nothing for limit. A write deadline that is set applies instead, as it
// does to Write, and a write after it has passed fails at once.
//
// A write the socket takes at once (the usual case) sets no deadline: setting one
// modifies a runtime timer, and a modified timer wakes a thread to look at the timers
// (runtime.wakeNetPoller), once per write.
func (c *Conn) WriteWithin(p []byte, limit time.Duration) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	c.wbuf, c.wn, c.werr = p, 0, 0
	if set := c.wdl.Load(); set != 0 && time.Now().UnixNano() >= set {
		return c.wrote(os.ErrDeadlineExceeded)
	}
	err := c.raw.Control(c.tryF) // (Control does not look at the deadline, Write would)
	for err == nil && c.werr == 0 && c.wn < len(p) {
		if err = c.bound(limit); err == nil {
			err = c.raw.Write(c.someF) // (returns at the first progress: the bound starts again)
		}
	}
	return c.wrote(err)
}

// writeSome writes what the socket takes, and reports false while it takes nothing.
func (c *Conn) writeSome(fd uintptr) bool {
	from := c.wn
	return c.writeNow(fd) || c.wn > from
}

// bound sets the socket's write deadline limit from now, unless one is set
// (SetWriteDeadline): that one stays, even if it is set while bound runs. c.wmu is held.
func (c *Conn) bound(limit time.Duration) error {
	if c.wdl.Load() != 0 {
		return nil
	}
	c.bounded = true
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

// unixNano is t for wdl: 0 for none, at least 1 for a time at or before 1970, and the
// largest there is for one beyond 2262 (where UnixNano overflows).
func unixNano(t time.Time) int64 {
	switch {
	case t.IsZero():
		return 0
	case t.After(maxUnixNano):
		return math.MaxInt64
	}
	return max(t.UnixNano(), 1)
}

var maxUnixNano = time.Unix(0, math.MaxInt64)

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
// passed, the connection is closed), which RawConn wraps in an OpError of its own, or the
// system call's.
func (c *Conn) opError(op string, err error) error {
	if raw, ok := err.(*net.OpError); ok {
		err = raw.Err
	}
	return &net.OpError{Op: op, Net: c.network, Source: c.laddr, Addr: c.raddr, Err: err}
}
