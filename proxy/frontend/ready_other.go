//go:build !unix

package frontend

import "net"

// readiness cannot peek at a socket here: an idle connection waits in a read (holding a
// buffer), and a client that leaves is found when its answer's write fails.
type readiness struct{}

func (r *readiness) init(net.Conn) {}
func (r *readiness) canPeek() bool { return false }
func (r *readiness) wait() error   { return nil }
func (r *readiness) gone() bool    { return false }
