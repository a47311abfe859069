package upstream

import (
	"bufio"
	"sync"
	"time"
)

// pool holds a Transport's idle connections, per backend, and the buffers of the
// connections in use. Idle connections are taken newest first, so that the oldest ones
// age out (IdleConnTimeout) when fewer are needed; one timer closes them.
type pool struct {
	mu    sync.Mutex
	idle  map[key][]*conn // oldest first
	timer *time.Timer     // the sweep; armed while a connection is idle, if there is a timeout
	armed bool
	// closeIdle: CloseIdleConnections was called, and no request has asked for a
	// connection since; connections that become idle meanwhile are closed (as net/http's
	// Transport does: a Table closed after a reload lets its requests finish, and their
	// connections then close instead of waiting in a pool nobody will use).
	closeIdle bool

	readers, writers sync.Pool // *bufio.Reader, *bufio.Writer
}

// get takes the newest idle connection to k that is still usable, and reports how long it
// was idle; nil if there is none. Connections found expired or closed are closed.
func (p *pool) get(k key, timeout time.Duration) (*conn, time.Duration) {
	for {
		p.mu.Lock()
		p.closeIdle = false
		list := p.idle[k]
		if len(list) == 0 {
			p.mu.Unlock()
			return nil, 0
		}
		c := list[len(list)-1]
		list[len(list)-1] = nil
		p.idle[k] = list[:len(list)-1]
		p.mu.Unlock()
		idle := time.Since(c.idleAt)
		if (timeout > 0 && idle >= timeout) || !c.probe.alive() {
			c.nc.Close()
			continue
		}
		return c, idle
	}
}

// put makes c idle, unless its backend has as many idle connections as allowed.
func (p *pool) put(c *conn) {
	p.release(c)
	t := c.t
	max := t.idlePerHost()
	c.idleAt = time.Now()
	p.mu.Lock()
	list := p.idle[c.k]
	if len(list) >= max || p.closeIdle {
		p.mu.Unlock()
		c.nc.Close()
		return
	}
	if p.idle == nil {
		p.idle = make(map[key][]*conn)
	}
	p.idle[c.k] = append(list, c)
	if d := t.IdleConnTimeout; d > 0 && !p.armed {
		p.armed = true
		if p.timer == nil {
			p.timer = time.AfterFunc(d, func() { p.sweep(d) })
		} else {
			p.timer.Reset(d)
		}
	}
	p.mu.Unlock()
}

// sweep closes the connections idle for timeout or longer, and sets the timer for the next
// one to expire.
func (p *pool) sweep(timeout time.Duration) {
	now := time.Now()
	var expired []*conn
	next := time.Duration(-1)
	p.mu.Lock()
	for k, list := range p.idle {
		i := 0
		for i < len(list) && now.Sub(list[i].idleAt) >= timeout {
			i++
		}
		expired = append(expired, list[:i]...)
		clear(list[:i])
		list = list[i:]
		if len(list) == 0 {
			delete(p.idle, k)
			continue
		}
		p.idle[k] = list
		if d := timeout - now.Sub(list[0].idleAt); next < 0 || d < next {
			next = d
		}
	}
	p.armed = next >= 0
	if p.armed {
		p.timer.Reset(next)
	}
	p.mu.Unlock()
	for _, c := range expired {
		c.nc.Close()
	}
}

// closeAll closes every idle connection.
func (p *pool) closeAll() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.closeIdle = true
	if p.timer != nil {
		p.timer.Stop()
	}
	p.armed = false
	p.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			c.nc.Close()
		}
	}
}

// acquire gives c its buffers for a request.
func (p *pool) acquire(c *conn) {
	if br, _ := p.readers.Get().(*bufio.Reader); br != nil {
		br.Reset(c)
		c.br = br
	} else {
		c.br = bufio.NewReaderSize(c, bufferSize(c.t.ReadBufferSize))
	}
	if bw, _ := p.writers.Get().(*bufio.Writer); bw != nil {
		bw.Reset(c)
		c.bw = bw
	} else {
		c.bw = bufio.NewWriterSize(c, bufferSize(c.t.WriteBufferSize))
	}
}

// release takes c's buffers back.
func (p *pool) release(c *conn) {
	if c.br != nil {
		c.br.Reset(nil)
		p.readers.Put(c.br)
		c.br = nil
	}
	p.releaseWriter(c)
}

func (p *pool) releaseWriter(c *conn) {
	if c.bw != nil {
		c.bw.Reset(nil)
		p.writers.Put(c.bw)
		c.bw = nil
	}
}
