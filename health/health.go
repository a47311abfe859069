// Package health decides whether backends are up. It knows nothing of balancers or configs:
// it reports each change to a Sink, a one-method interface that the balancer's Registry
// implements (the guard is in package proxy, which wires the two together).
//
// Active probes and passive outlier detection arrive with the health-checking work (see
// README, Roadmap); today a backend stays up unless a caller marks it down.
package health

// Sink receives health changes: the backend at addr in site is now up, or down. It must be
// safe for concurrent use and must not block.
type Sink interface {
	SetUp(site, addr string, up bool)
}
