// Package health decides whether backends are up. It knows nothing of balancers or configs:
// it reports each change to a Sink, a one-method interface that the balancer's Registry
// implements (the guard is in package proxy, which wires the two together).
//
// A Monitor probes backends actively (HTTP GET or TCP connect, on a jittered interval, one
// probe in flight per backend, rise/fall hysteresis) and reports only changes of state. An
// HTTP probe passes on an accepted status and its whole body (up to 64 KiB) within the
// timeout. It
// belongs to one config generation: its caller starts each target from the state it already
// knows, runs it under the generation's context, and waits for Run to return on reload.
// Passive outlier detection (outlier.go) ejects backends that fail real requests, for longer
// each time they fail again after returning. It counts each backend's failures in a row in
// the Peer handed to it with each outcome (a two-method interface the balancer's Backend
// implements), so the request path looks nothing up.
package health

// Sink receives health changes: the backend at addr in site is now up, or down. It must be
// safe for concurrent use and must not block.
type Sink interface {
	SetUp(site, addr string, up bool)
}
