package balancer

import "sync/atomic"

// The Backend is passive health's Peer (health.Peer; the guard is in package proxy, which
// imports both): passive health records each try's outcome into the backend the try went
// to, kept here with its other long-lived state, rather than in a registry of its own that
// a try would look up by site and address.

// SiteAddr is b's site and address.
func (b *Backend) SiteAddr() (site, addr string) { return b.ID.Site, b.ID.Addr }

// FailuresInARow is where passive health counts b's failed tries since its last success.
func (b *Backend) FailuresInARow() *atomic.Int64 { return &b.failureRun }
