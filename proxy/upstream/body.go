package upstream

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
)

// body is a response body read from its connection. Read to its end (io.EOF), it gives the
// connection back (to the pool if keep); closed before, it closes the connection rather
// than read the rest.
type body struct {
	c      *conn
	kind   frameKind      // frameLength, frameChunked or frameClose
	left   int64          // frameLength: what is still to come
	chunks io.Reader      // frameChunked: httputil's chunked reader on c.br
	res    *http.Response // frameChunked: its Trailer is filled at the end
	ctx    context.Context
	keep   bool
	state  atomic.Int32 // bodyOpen, then bodyEnded or bodyClosed
}

const (
	bodyOpen int32 = iota
	bodyEnded
	bodyClosed
)

func (b *body) Read(p []byte) (int, error) {
	switch b.state.Load() {
	case bodyEnded:
		return 0, io.EOF
	case bodyClosed:
		return 0, errClosedBody
	}
	n, err := b.read(p)
	switch {
	case err == io.EOF:
		if b.state.CompareAndSwap(bodyOpen, bodyEnded) {
			b.c.finish(b.keep)
		}
	case err != nil:
		if b.ctx.Err() != nil {
			err = context.Cause(b.ctx)
		}
		if b.state.CompareAndSwap(bodyOpen, bodyClosed) {
			b.c.close()
		}
	}
	return n, err
}

// Close closes the connection unless the body was read to its end. It does not drain the
// rest: a large body would cost more to read than a new connection. It may be called while
// a Read is under way; that Read then fails.
func (b *body) Close() error {
	if b.state.CompareAndSwap(bodyOpen, bodyClosed) {
		// Not b.c.close: a Read may be using the buffers still, so they are left to the
		// garbage collector rather than given back.
		stopWatch(b.c.stop)
		b.c.nc.Close()
	}
	return nil
}

// upgradeBody is the body of a 101 Switching Protocols response: the connection itself,
// both ways, for the caller to keep (a WebSocket tunnel). Bytes the backend sent after the
// head, already buffered, are read first.
type upgradeBody struct {
	br *bufio.Reader
	nc net.Conn
}

var _ io.ReadWriteCloser = (*upgradeBody)(nil)

func (u *upgradeBody) Read(p []byte) (int, error) {
	if u.br.Buffered() > 0 {
		return u.br.Read(p)
	}
	return u.nc.Read(p)
}

func (u *upgradeBody) Write(p []byte) (int, error) { return u.nc.Write(p) }
func (u *upgradeBody) Close() error                { return u.nc.Close() }
