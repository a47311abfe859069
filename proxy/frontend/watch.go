package frontend

import (
	"sync/atomic"
	"time"
)

// watch finds a client that leaves while its request is served, and cancels the request's
// context: its backend request ends, and a place it waits for in a queue is freed.
//
// net/http does this with a 1-byte background read on a goroutine of its own for every
// request, started and stopped each time. Most requests are answered in well under a
// millisecond, before a client that left could matter, so the watch starts only when a
// request has lasted watchAfter (a per-connection timer, reset per request, whose goroutine
// then does the watching): it waits for the socket to become readable and peeks. An end of
// stream or an error means the client is gone; a byte means it sent more (a pipelined
// request), and the watch ends without judging.
//
// The watch is armed once the request's body is read whole (or at once for a request
// without one), and disarmed when the answer is done or the connection hijacked.
type watch struct {
	c     *h1conn
	state atomic.Int32
	x     atomic.Pointer[h1exchange] // the request watched
	timer *time.Timer
	ended chan struct{} // a watch that started sends here when it ends
}

// watchAfter is how long a request lasts before its client is watched.
const watchAfter = time.Millisecond

const (
	watchOff      int32 = iota // nothing to watch
	watchArmed                 // the timer runs
	watchWatching              // the timer fired: the watch waits on the socket
)

// arm starts the timer for x's request. Called once per request, by whoever read the end
// of its body (or the connection's goroutine).
func (w *watch) arm(x *h1exchange) {
	if !w.c.ready.canPeek() {
		return
	}
	w.x.Store(x)
	w.state.Store(watchArmed)
	if w.timer == nil {
		w.ended = make(chan struct{}, 1)
		w.timer = time.AfterFunc(watchAfter, w.run)
		return
	}
	w.timer.Reset(watchAfter)
}

// disarm stops the watch, and waits for one under way to end. Called on the
// connection's goroutine.
func (w *watch) disarm() {
	if w.timer == nil {
		return
	}
	w.timer.Stop()
	if w.state.CompareAndSwap(watchArmed, watchOff) || w.state.Load() == watchOff {
		return
	}
	w.c.nc.SetReadDeadline(aLongTimeAgo) // wakes the watch
	<-w.ended
	w.state.Store(watchOff)
}

// run is the timer's: it watches until the client leaves, sends more, or disarm wakes it.
func (w *watch) run() {
	if !w.state.CompareAndSwap(watchArmed, watchWatching) {
		return
	}
	x := w.x.Load()
	if w.c.ready.gone() {
		x.cancel()
	}
	w.ended <- struct{}{}
}
