package frontend

import (
	"sync"
	"sync/atomic"
	"time"
)

// watch finds a client that leaves while its request is served, and cancels the request's
// context: its backend request ends, and a place it waits for in a queue is freed.
//
// net/http does this with a 1-byte background read on a goroutine of its own for every
// request, started and stopped each time. Most requests are answered in well under a
// millisecond, before a client that left could matter, so a request's client is watched
// only once the request has lasted a sweep (watchSweep): the server's sweeper (one timer
// for all its requests, running only while some are in flight) then starts a goroutine
// that waits for the socket to become readable and peeks. An end of stream or an error
// means the client is gone; a byte means it sent more (a pipelined request), and the
// watch ends without judging. A timer per request would be the runtime's earliest most of
// the time, and wake its network poller to rearm, once per request.
//
// The watch is armed once the request's body is read whole (or at once for a request
// without one), and disarmed when the answer is done or the connection hijacked.
type watch struct {
	c     *h1conn
	state atomic.Int32
	x     atomic.Pointer[h1exchange] // the request watched
	swept atomic.Bool                // a sweep has seen it armed
	ended chan struct{}              // a watch that started sends here when it ends
}

const (
	watchOff      int32 = iota // nothing to watch
	watchArmed                 // waiting for the sweeper
	watchWatching              // a watch goroutine waits on the socket
)

// arm registers x's request with the sweeper. Called once per request, by whoever read the
// end of its body (or the connection's goroutine).
func (w *watch) arm(x *h1exchange) {
	if !w.c.ready.canPeek() {
		return
	}
	w.x.Store(x)
	w.swept.Store(false)
	w.state.Store(watchArmed)
	w.c.s.sweeper.add(w)
}

// disarm stops the watch, and waits for one under way to end. Called on the
// connection's goroutine.
func (w *watch) disarm() {
	if w.state.Load() == watchOff {
		return
	}
	w.c.s.sweeper.remove(w)
	if !w.state.CompareAndSwap(watchArmed, watchOff) {
		w.c.nc.SetReadDeadline(aLongTimeAgo) // wakes the watch
		<-w.ended
		w.state.Store(watchOff)
	}
	w.x.Store(nil) // (an idle connection keeps nothing of its last request)
}

// run watches until the client leaves, sends more, or disarm wakes it.
func (w *watch) run() {
	if w.c.ready.gone() {
		w.x.Load().cancel()
	}
	w.ended <- struct{}{}
}

// watchSweep is how often the sweeper looks at the requests in flight: a request's client
// is watched from its second sweep on, after 1 to 2 sweeps.
const watchSweep = 10 * time.Millisecond

// sweeper starts the watches of the requests that last (see watch). Its timer runs while
// requests are armed, and stops at the first sweep that finds none (so, once the server's
// connections are closed, by itself).
//
// It also ends the holds of workers that wait for a connection's next request (see
// h1conn.waitIdle) once they have lasted a sweep.
type sweeper struct {
	mu      sync.Mutex
	armed   map[*watch]struct{}
	held    map[*h1conn]bool // true once a sweep has seen it held
	timer   *time.Timer
	running bool
}

func (s *sweeper) add(w *watch) {
	s.mu.Lock()
	if s.armed == nil {
		s.armed = map[*watch]struct{}{}
	}
	s.armed[w] = struct{}{}
	s.start()
	s.mu.Unlock()
}

// start runs the sweeps, if they are not running; s.mu is held.
func (s *sweeper) start() {
	if !s.running {
		s.running = true
		if s.timer == nil {
			s.timer = time.AfterFunc(watchSweep, s.sweep)
		} else {
			s.timer.Reset(watchSweep)
		}
	}
}

// hold registers a worker's wait for c's next request, to be ended by a sweep.
func (s *sweeper) hold(c *h1conn) {
	s.mu.Lock()
	if s.held == nil {
		s.held = map[*h1conn]bool{}
	}
	s.held[c] = false
	s.start()
	s.mu.Unlock()
}

// unhold ends c's hold, and reports false if a sweep ended it first.
func (s *sweeper) unhold(c *h1conn) bool {
	s.mu.Lock()
	_, ok := s.held[c]
	delete(s.held, c)
	s.mu.Unlock()
	return ok
}

func (s *sweeper) remove(w *watch) {
	s.mu.Lock()
	delete(s.armed, w)
	s.mu.Unlock()
}

// sweep starts a watch for each request armed since the sweep before.
func (s *sweeper) sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.armed) == 0 && len(s.held) == 0 {
		s.running = false
		return
	}
	for c, seen := range s.held {
		if seen {
			delete(s.held, c)
			c.nc.SetReadDeadline(aLongTimeAgo) // ends the wait: the worker hands c over
		} else {
			s.held[c] = true
		}
	}
	for w := range s.armed {
		if !w.swept.Swap(true) {
			continue // armed since the last sweep: not yet
		}
		delete(s.armed, w)
		if w.state.CompareAndSwap(watchArmed, watchWatching) {
			go w.run()
		}
	}
	s.timer.Reset(watchSweep)
}
