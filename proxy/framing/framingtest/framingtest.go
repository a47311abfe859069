// Package framingtest drives the connections that check HTTP/1.1 framing (the front end's
// client connections, the data plane's backend connections) with scripted reads: input cut
// into pieces, one piece per Read, as a network would deliver it.
package framingtest

import (
	"bytes"
	"io"
	"net"
	"time"
)

// ScriptConn is a net.Conn whose reads return Pieces, one per Read, then EOF; what is
// written to it is kept in Wrote.
type ScriptConn struct {
	net.Conn // nil: only Read, Write and SetWriteDeadline are used
	Pieces   [][]byte
	Wrote    bytes.Buffer
}

func (c *ScriptConn) Read(p []byte) (int, error) {
	if len(c.Pieces) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.Pieces[0])
	if n == len(c.Pieces[0]) {
		c.Pieces = c.Pieces[1:]
	} else {
		c.Pieces[0] = c.Pieces[0][n:]
	}
	return n, nil
}

func (c *ScriptConn) Write(p []byte) (int, error)      { return c.Wrote.Write(p) }
func (c *ScriptConn) SetWriteDeadline(time.Time) error { return nil }

// Pieces cuts input at the given offsets (in increasing order; others are skipped).
func Pieces(input []byte, cuts []int) [][]byte {
	var out [][]byte
	prev := 0
	for _, c := range cuts {
		if c > prev && c < len(input) {
			out = append(out, input[prev:c])
			prev = c
		}
	}
	return append(out, input[prev:])
}

// ReadThrough reads r to its end in reads of size, and returns what it handed on and the
// error that ended it.
func ReadThrough(r io.Reader, size int) ([]byte, error) {
	var passed []byte
	buf := make([]byte, size)
	for {
		n, err := r.Read(buf)
		passed = append(passed, buf[:n]...)
		if err != nil {
			return passed, err
		}
	}
}
