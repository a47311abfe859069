//go:build unix

package frontend

import (
	"net"
	"syscall"
)

// readiness waits for a client socket to become readable without reading it: a
// non-blocking peek, and the runtime's poller until it says so. An idle connection so
// holds no read buffer. A connection that hides its socket waits in a read instead (see
// wait).
type readiness struct {
	raw  syscall.RawConn
	peek func(fd uintptr) bool // raw's callback, made once
	n    int                   // what the last peek found: bytes, 0 for an end of stream
	err  error
	buf  [1]byte
}

func (r *readiness) init(nc net.Conn) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	r.raw = raw
	r.peek = func(fd uintptr) bool {
		r.n, _, r.err = syscall.Recvfrom(int(fd), r.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return r.err != syscall.EAGAIN // false: the poller waits for the socket
	}
}

func (r *readiness) canPeek() bool { return r.raw != nil }

// wait returns once the socket has something to read (bytes, an end, an error), or with
// the error of its read deadline or of its closing. Without a socket to peek at it
// returns at once, and the caller's read waits.
func (r *readiness) wait() error {
	if r.raw == nil {
		return nil
	}
	if err := r.raw.Read(r.peek); err != nil {
		return err
	}
	return nil
}

// gone waits like wait, and reports whether the peer is gone: the socket's end of stream,
// or an error on it. false when it sent a byte, or the wait was woken.
func (r *readiness) gone() bool {
	if r.raw.Read(r.peek) != nil {
		return false
	}
	return r.err != nil || r.n == 0
}
