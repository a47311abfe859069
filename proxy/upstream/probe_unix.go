//go:build unix

package upstream

import (
	"net"
	"syscall"

	"github.com/spillway/spillway/proxy/sockio"
)

// probe finds a pooled connection that the backend closed (or wrote to) while it was
// idle, with one non-blocking read on its socket when it is taken for reuse: no goroutine
// reads it while it is idle, as net/http's does, and without the check the next request
// would be written to a closed connection and fail, a POST with it. A connection that
// hides its socket (no SyscallConn, no NetConn to one that has) is not probed.
type probe struct {
	raw  syscall.RawConn
	read func(fd uintptr) bool // raw's callback, made once
	buf  [1]byte
	err  syscall.Errno
}

func (p *probe) init(nc net.Conn) {
	for range 4 { // a backend connection wraps a TLS one, which wraps the socket
		if sc, ok := nc.(syscall.Conn); ok {
			if raw, err := sc.SyscallConn(); err == nil {
				p.raw = raw
				p.read = p.once
			}
			return
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return
		}
		nc = u.NetConn()
	}
}

func (p *probe) once(fd uintptr) bool {
	_, p.err = sockio.Read(fd, p.buf[:])
	return true // never wait for the socket to be readable
}

// alive reports whether the connection is open with nothing to read: the read would block.
// An end of stream, an error or a byte (the backend has nothing to say on an idle
// connection, except a TLS close_notify) all mean it must not be used.
func (p *probe) alive() bool {
	if p.raw == nil {
		return true
	}
	if err := p.raw.Read(p.read); err != nil {
		return false
	}
	return p.err == syscall.EAGAIN
}
