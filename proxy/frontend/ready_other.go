//go:build !unix

package frontend

// readiness cannot read a socket without a buffer here: an idle connection waits in a
// plain read (holding one), and a client that leaves is found when its answer's write
// fails.
type readiness struct{}

func (r *readiness) init(*h1conn)             {}
func (r *readiness) canPeek() bool            { return false }
func (r *readiness) readIdle(c *h1conn) error { return c.fill(readBufLen) }
func (r *readiness) gone() bool               { return false }
