package telemetry

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spillway/spillway/proxy"
)

// Recent keeps the last requests the Handler finished, to explain where one went (GET
// /api/v1/explain?request_id=...). It is a proxy.Recorder; the zero value is not usable, call
// NewRecent. Record takes one uncontended lock.
type Recent struct {
	next  atomic.Uint64
	slots []recentSlot
}

type recentSlot struct {
	mu   sync.Mutex
	info proxy.RequestInfo
}

// NewRecent keeps the last n requests.
func NewRecent(n int) *Recent { return &Recent{slots: make([]recentSlot, max(n, 1))} }

// Resize makes r keep the last n requests from now on, forgetting those it has. Call it
// before r records anything concurrently (before the Handler serves): `spillway run`
// learns n (admin.explain_requests) from the config it loads after making r.
func (r *Recent) Resize(n int) {
	r.slots = make([]recentSlot, max(n, 1))
	r.next.Store(0)
}

// Size is how many requests r keeps.
func (r *Recent) Size() int { return len(r.slots) }

// Record keeps a copy of info.
func (r *Recent) Record(info *proxy.RequestInfo) {
	s := &r.slots[(r.next.Add(1)-1)%uint64(len(r.slots))]
	s.mu.Lock()
	s.info = *info
	s.mu.Unlock()
}

// Find returns the kept request with ID id.
func (r *Recent) Find(id string) (proxy.RequestInfo, bool) {
	for i := range r.slots {
		s := &r.slots[i]
		s.mu.Lock()
		info := s.info
		s.mu.Unlock()
		if info.ID == id && id != "" {
			return info, true
		}
	}
	return proxy.RequestInfo{}, false
}

// Explain says in a sentence where the request i went and why.
func Explain(i *proxy.RequestInfo) string {
	var b strings.Builder
	switch {
	case i.Preferred == "" && i.Site == "":
		b.WriteString("no site took it")
	case i.Preferred == "":
		fmt.Fprintf(&b, "no site of the split had a backend up; it went to the elastic site %s", i.Site)
	default:
		if i.Chosen == "affinity" {
			fmt.Fprintf(&b, "its session (affinity) preferred %s", i.Preferred)
		} else {
			fmt.Fprintf(&b, "the split preferred %s", i.Preferred)
		}
		switch i.Spill {
		case "saturated":
			fmt.Fprintf(&b, "; %s was full, so it spilled to %s", i.Preferred, i.Site)
		case "hysteresis":
			fmt.Fprintf(&b, "; %s had filled up and was not yet below spillover.resume of its limit, so it spilled to %s", i.Preferred, i.Site)
		default:
			if i.Site != "" && i.Site != i.Preferred {
				fmt.Fprintf(&b, "; it was retried at %s", i.Site)
			}
		}
	}
	if i.Backend != "" {
		fmt.Fprintf(&b, "; backend %s", i.Backend)
	}
	if i.Queued > 0 {
		fmt.Fprintf(&b, "; it waited %s for a free slot", i.Queued.Round(time.Microsecond))
	}
	if i.Retries > 0 {
		fmt.Fprintf(&b, "; %d retr%s", i.Retries, map[bool]string{true: "y", false: "ies"}[i.Retries == 1])
	}
	if i.Reason != "" {
		fmt.Fprintf(&b, "; it failed: %s", i.Reason)
		if i.NoRetry != "" {
			fmt.Fprintf(&b, " (not retried: %s)", i.NoRetry)
		}
	}
	fmt.Fprintf(&b, "; answered %d in %s.", i.Status, i.Duration.Round(time.Microsecond))
	return b.String()
}
