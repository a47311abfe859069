// Package proxytest holds what the tests of several packages share: waiting on a condition
// or a channel with a liveness bound, backends on 127.0.0.1, generated configs, the proxy's
// server on a real listener and a started Reloader (see StartReloader).
//
// It imports proxy, proxy/frontend and proxy/runtime (and so balancer, configs and what
// they import): the internal tests of those packages (package proxy, package runtime,
// package balancer, …) cannot import it without an import cycle, and keep their own
// helpers. Non-test code never imports it.
package proxytest

import (
	"testing"
	"time"
)

// Liveness bounds every wait of the integration tests. It is a generous bound so that a
// broken proxy fails instead of hanging, never a way to order events: ordering is done with
// channels.
const Liveness = 10 * time.Second

// Eventually polls cond every 5 ms until it holds, failing the test after within, with
// what in the message. within is a liveness bound, not a measurement: make it generous.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitFor is Eventually within Liveness: it polls cond, a reading of the proxy's state,
// until it holds.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Eventually(t, Liveness, what, cond)
}

// Await receives from ch (the zero value once ch is closed), failing the test if nothing
// comes within the liveness bound.
func Await[T any](t testing.TB, ch <-chan T, within time.Duration, what string) T {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("not within %s: %s", within, what)
	}
	panic("unreachable")
}

// Receive is Await within Liveness.
func Receive[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	return Await(t, ch, Liveness, what)
}
