package proxytest

import (
	"sync/atomic"

	"github.com/spillway/spillway/proxy"
)

// Tally is a proxy.Recorder that counts finished requests in N.
type Tally struct{ N atomic.Int64 }

// Record counts one finished request.
func (c *Tally) Record(*proxy.RequestInfo) { c.N.Add(1) }
