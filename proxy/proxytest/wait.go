// Package proxytest holds what the tests of several packages share: waiting on a condition
// or a channel with a liveness bound. Fixtures that only one package's tests use stay in
// that package's helpers.
package proxytest

import (
	"testing"
	"time"
)

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
