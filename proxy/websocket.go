package proxy

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// tunnelLimits bound an upgraded connection (a WebSocket) that ReverseProxy tunnels between
// the client and the backend. The Handler's lease is held for as long as the tunnel is open
// (ReverseProxy.ServeHTTP returns only when it closes), so an open WebSocket counts as a
// request in flight on its backend and site; these limits make sure it ends.
type tunnelLimits struct {
	idle     time.Duration // no byte either way for this long: close
	lifetime time.Duration // open this long: close, however busy
}

// wrap puts the limits on the backend side of a 101 Switching Protocols response, which
// ReverseProxy then tunnels: every byte of the tunnel crosses the backend connection, one
// way in Write (from the client) and the other in Read (from the backend), so that one
// wrapper sees all activity. Closing it ends both of ReverseProxy's copy loops; ReverseProxy
// then closes the client's connection. Other responses are left alone.
func (l tunnelLimits) wrap(res *http.Response) {
	if res.StatusCode != http.StatusSwitchingProtocols || (l.idle <= 0 && l.lifetime <= 0) {
		return
	}
	rwc, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		return // ReverseProxy refuses such a response itself
	}
	res.Body = newLimitedTunnel(rwc, l)
}

// errTunnelLimit is what reads and writes return once a limit has closed the tunnel.
var errTunnelLimit = errors.New("websocket closed by the proxy: idle or lifetime limit")

// limitedTunnel is the backend side of a tunnel, closed by itself when it has been idle
// for too long or open for too long. Its timers are its only goroutines, and Close (which
// ReverseProxy always calls) stops them.
type limitedTunnel struct {
	rwc      io.ReadWriteCloser
	idle     time.Duration
	start    time.Time
	last     atomic.Int64 // nanoseconds since start of the last activity
	limited  atomic.Bool  // a limit closed the tunnel
	closed   atomic.Bool
	mu       sync.Mutex // guards the timers, which may fire before they are assigned
	idleT    *time.Timer
	lifeT    *time.Timer
	closeOne sync.Once
	closeErr error
}

func newLimitedTunnel(rwc io.ReadWriteCloser, l tunnelLimits) *limitedTunnel {
	t := &limitedTunnel{rwc: rwc, idle: l.idle, start: time.Now()}
	t.mu.Lock()
	defer t.mu.Unlock()
	if l.idle > 0 {
		t.idleT = time.AfterFunc(l.idle, t.checkIdle)
	}
	if l.lifetime > 0 {
		t.lifeT = time.AfterFunc(l.lifetime, t.expire)
	}
	return t
}

func (t *limitedTunnel) touch() { t.last.Store(int64(time.Since(t.start))) }

// checkIdle runs when the idle timer fires: it closes the tunnel if nothing crossed it for
// the whole idle period, and otherwise sets the timer for the rest of the period that began
// with the last activity. Rescheduling here, not on every read and write, keeps the data
// path to one atomic store.
func (t *limitedTunnel) checkIdle() {
	if t.closed.Load() {
		return
	}
	quiet := time.Since(t.start) - time.Duration(t.last.Load())
	if quiet >= t.idle {
		t.expire()
		return
	}
	t.mu.Lock()
	if !t.closed.Load() { // Close sets closed before it stops the timers, under mu
		t.idleT.Reset(t.idle - quiet)
	}
	t.mu.Unlock()
}

func (t *limitedTunnel) expire() {
	t.limited.Store(true)
	t.Close()
}

func (t *limitedTunnel) Read(p []byte) (int, error) {
	n, err := t.rwc.Read(p)
	if n > 0 {
		t.touch()
	}
	if err != nil && t.limited.Load() {
		err = errTunnelLimit
	}
	return n, err
}

func (t *limitedTunnel) Write(p []byte) (int, error) {
	n, err := t.rwc.Write(p)
	if n > 0 {
		t.touch()
	}
	if err != nil && t.limited.Load() {
		err = errTunnelLimit
	}
	return n, err
}

// Close stops the timers and closes the backend connection; it is safe to call more than
// once and from the timers.
func (t *limitedTunnel) Close() error {
	t.closeOne.Do(func() {
		t.closed.Store(true)
		t.mu.Lock()
		if t.idleT != nil {
			t.idleT.Stop()
		}
		if t.lifeT != nil {
			t.lifeT.Stop()
		}
		t.mu.Unlock()
		t.closeErr = t.rwc.Close()
	})
	return t.closeErr
}
