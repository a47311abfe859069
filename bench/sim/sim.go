// Package sim simulates the backends of a site on loopback, for the demo, the bench suite
// and tests. A simulated backend answers every request after its service time and says who
// it is in the X-Sim-Site and X-Sim-Backend response headers.
//
// Besides a fixed service time (Start), a backend can model a real one (StartWith): a
// capacity (the most requests it works on at once; beyond it it answers 503 or queues), a
// service-time distribution, and faults injected while it runs: a slowdown factor, a rate of
// 500 answers, 500 at once on every request (a black hole), a rate of reset connections,
// and a whole outage (Kill, then Restore on the
// same port, so that connections are refused in between).
package sim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Response headers a simulated backend sets.
const (
	HeaderSite    = "X-Sim-Site"
	HeaderBackend = "X-Sim-Backend"
)

// Overflow says what a backend does with a request that finds it at capacity.
type Overflow uint8

const (
	// Reject answers 503 at once (a backend with a bounded worker pool).
	Reject Overflow = iota
	// Queue makes the request wait for a free worker (a backend with an accept queue).
	Queue
)

// Options describe a simulated backend.
type Options struct {
	Site, Name string
	// Service is the service time of each request; nil means none.
	Service Dist
	// Capacity is the most requests the backend serves at once; 0 means no limit.
	Capacity int
	// Overflow is what happens to a request beyond Capacity.
	Overflow Overflow
	// HealthPath is answered at once with 200, outside the capacity and faults, as a
	// health endpoint that is cheap; "" means every path is served alike.
	HealthPath string
	// Seed makes the backend's random choices (service times, faults) repeatable.
	Seed uint64
}

// Backend is one simulated backend listening on loopback. Close stops it.
type Backend struct {
	Site, Name string
	// Latency is the fixed service time given to Start; with StartWith, Options.Service.
	Latency time.Duration

	opts  Options
	addr  string        // where it listens, kept across Kill and Restore
	slots chan struct{} // nil: no capacity limit
	rng   *lockedRand

	slowdown  atomic.Uint64 // math.Float64bits of the service time factor; 0 means 1
	errorRate atomic.Uint64 // Float64bits: share of requests answered 500
	resetRate atomic.Uint64 // Float64bits: share of requests whose connection is reset
	failFast  atomic.Bool   // answer every request 500 at once (the health path still passes)

	inflight, peak                          atomic.Int64
	served, rejected, injected, resets, cut atomic.Int64

	mu       sync.Mutex // guards the server below across Kill and Restore
	ln       net.Listener
	srv      *http.Server
	done     chan struct{} // closed when Serve has returned
	serveErr error         // why Serve stopped early; read after done
	closed   bool          // Close was called: Restore is refused
}

// Start listens on addr ("127.0.0.1:18101"; port 0 picks a free one) and serves until
// Close, answering every request after latency. addr must be a loopback address.
func Start(addr, site, name string, latency time.Duration) (*Backend, error) {
	var d Dist
	if latency > 0 {
		d = Fixed(latency)
	}
	return StartWith(addr, Options{Site: site, Name: name, Service: d})
}

// StartWith is Start with the whole model of a backend.
func StartWith(addr string, o Options) (*Backend, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("simulated backend %s/%s: %s is not a loopback address", o.Site, o.Name, addr)
	}
	if o.Capacity < 0 {
		return nil, fmt.Errorf("simulated backend %s/%s: capacity %d < 0", o.Site, o.Name, o.Capacity)
	}
	b := &Backend{Site: o.Site, Name: o.Name, opts: o, rng: newLockedRand(o.Seed)}
	if f, ok := o.Service.(Fixed); ok {
		b.Latency = time.Duration(f)
	}
	if o.Capacity > 0 {
		b.slots = make(chan struct{}, o.Capacity)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	b.addr = ln.Addr().String()
	b.serve(ln)
	return b, nil
}

// serve starts a server on ln; b.mu must be held or b not yet shared.
func (b *Backend) serve(ln net.Listener) {
	srv := &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	b.ln, b.srv, b.done, b.serveErr = ln, srv, done, nil
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			b.mu.Lock()
			b.serveErr = err
			b.mu.Unlock()
		}
	}()
}

// URL is the backend's base URL, e.g. "http://127.0.0.1:18101".
func (b *Backend) URL() string { return "http://" + b.addr }

// Addr is the backend's host:port.
func (b *Backend) Addr() string { return b.addr }

// Close stops the backend, cutting open connections, and waits for its server to exit. It
// returns why the server stopped, if that was not Close.
func (b *Backend) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return b.stop()
}

// Kill takes the backend down as a crash would: the listener closes (new connections are
// refused) and open connections are cut, requests in flight included. It returns how many
// requests were in flight. Restore brings it back.
func (b *Backend) Kill() (inflight int64, err error) {
	n := b.inflight.Load()
	err = b.stop()
	b.cut.Add(n)
	return n, err
}

func (b *Backend) stop() error {
	b.mu.Lock()
	srv, done := b.srv, b.done
	b.srv = nil
	b.mu.Unlock()
	if srv == nil {
		return nil // already stopped
	}
	err := srv.Close()
	<-done
	b.mu.Lock()
	defer b.mu.Unlock()
	return errors.Join(b.serveErr, err)
}

// Restore listens again on the address the backend had before Kill. Restoring a backend
// that is up does nothing.
func (b *Backend) Restore() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("simulated backend %s/%s: closed", b.Site, b.Name)
	}
	if b.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", b.addr)
	if err != nil {
		return fmt.Errorf("simulated backend %s/%s: restore: %w", b.Site, b.Name, err)
	}
	b.serve(ln)
	return nil
}

// SetSlowdown multiplies every service time from now on by f (1: normal; 10: a brownout).
func (b *Backend) SetSlowdown(f float64) { b.slowdown.Store(math.Float64bits(f)) }

// SetErrorRate makes a share p of requests answered 500 after their service time.
func (b *Backend) SetErrorRate(p float64) { b.errorRate.Store(math.Float64bits(p)) }

// SetFailFast makes b answer every request 500 at once, before any service time and
// outside its capacity, while its health path (Options.HealthPath) still answers 200: a
// black hole, the cheapest-looking backend of all. Its 500s count as injected.
func (b *Backend) SetFailFast(on bool) { b.failFast.Store(on) }

// SetResetRate makes a share p of requests end with their connection reset, no answer.
func (b *Backend) SetResetRate(p float64) { b.resetRate.Store(math.Float64bits(p)) }

// Stats are a backend's counters since it started.
type Stats struct {
	Inflight int64 `json:"inflight"` // requests being served now
	Peak     int64 `json:"peak"`     // most requests served at once
	Served   int64 `json:"served"`   // answered 200
	Rejected int64 `json:"rejected"` // answered 503: at capacity (Reject)
	Injected int64 `json:"injected"` // answered 500 by SetErrorRate or SetFailFast
	Resets   int64 `json:"resets"`   // connections reset by SetResetRate
	Cut      int64 `json:"cut"`      // in flight when Kill cut them
}

// Stats returns the backend's counters.
func (b *Backend) Stats() Stats {
	return Stats{Inflight: b.inflight.Load(), Peak: b.peak.Load(), Served: b.served.Load(),
		Rejected: b.rejected.Load(), Injected: b.injected.Load(), Resets: b.resets.Load(), Cut: b.cut.Load()}
}

func load(v *atomic.Uint64, def float64) float64 {
	bits := v.Load()
	if bits == 0 {
		return def
	}
	return math.Float64frombits(bits)
}

func (b *Backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(HeaderSite, b.Site)
	w.Header().Set(HeaderBackend, b.Name)
	if b.opts.HealthPath != "" && r.URL.Path == b.opts.HealthPath {
		w.WriteHeader(http.StatusOK)
		return
	}
	if b.failFast.Load() {
		b.injected.Add(1)
		http.Error(w, "injected failure", http.StatusInternalServerError)
		return
	}
	if b.slots != nil {
		select {
		case b.slots <- struct{}{}:
		default:
			if b.opts.Overflow == Reject {
				b.rejected.Add(1)
				http.Error(w, "at capacity", http.StatusServiceUnavailable)
				return
			}
			select {
			case b.slots <- struct{}{}:
			case <-r.Context().Done():
				return
			}
		}
		defer func() { <-b.slots }()
	}
	n := b.inflight.Add(1)
	defer b.inflight.Add(-1)
	for {
		p := b.peak.Load()
		if n <= p || b.peak.CompareAndSwap(p, n) {
			break
		}
	}
	if !b.wait(r.Context()) {
		return
	}
	if p := load(&b.resetRate, 0); p > 0 && b.rng.Float64() < p {
		b.resets.Add(1)
		reset(w)
		return
	}
	if p := load(&b.errorRate, 0); p > 0 && b.rng.Float64() < p {
		b.injected.Add(1)
		http.Error(w, "injected failure", http.StatusInternalServerError)
		return
	}
	b.served.Add(1)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "hello from %s/%s\n", b.Site, b.Name)
}

// wait sleeps for one service time; false if the request went away first.
func (b *Backend) wait(ctx context.Context) bool {
	if b.opts.Service == nil {
		return true
	}
	d := b.opts.Service.Sample(b.rng)
	d = time.Duration(float64(d) * load(&b.slowdown, 1))
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// reset closes the request's connection with an RST (SO_LINGER 0), without an answer.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}
