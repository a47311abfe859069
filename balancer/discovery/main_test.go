package discovery_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: Run, its watch, the DNS
// lookups it started and the tests' DNS servers must all be gone once each test's cleanups
// have run.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
