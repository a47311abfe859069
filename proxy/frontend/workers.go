package frontend

import (
	"runtime"
	"sync/atomic"
)

// workers serve connections whose next request has come. A goroutine's stack grows to
// what serving a request takes (the Handler, ReverseProxy, the transport: some tens of KiB),
// and growing it copies it each time it doubles; a fresh goroutine per request would pay
// that every time. So a connection waits for its request on a small goroutine of its own,
// and is served by a worker: a goroutine whose stack has grown already, parked here between
// requests. A connection that comes while no worker is parked gets a new one. At most
// maxIdleWorkers stay parked; the rest end when they are done.
type workers struct {
	ready chan *h1conn  // unbuffered: a send succeeds only when a worker is parked on it
	quit  chan struct{} // closed when the server shuts down: parked workers end
	idle  atomic.Int32  // workers parked
}

// maxIdleWorkers bounds the workers parked between requests (and the memory their stacks
// hold): enough for the requests that start at the same moment on every core.
var maxIdleWorkers = int32(64 * runtime.GOMAXPROCS(0))

// dispatch hands a connection whose request has come to a parked worker, or a new one.
func (s *h1Server) dispatch(c *h1conn) {
	select {
	case s.workers.ready <- c:
	default:
		go s.work(c)
	}
}

// work serves c, then other connections handed to it, until it is not needed.
func (s *h1Server) work(c *h1conn) {
	w := &s.workers
	for {
		c.serve()
		if w.idle.Add(1) > maxIdleWorkers {
			w.idle.Add(-1)
			return
		}
		select {
		case c = <-w.ready:
			w.idle.Add(-1)
		case <-w.quit:
			w.idle.Add(-1)
			return
		}
	}
}
