package health

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: probers, probe
// connections and scripted backends must all be gone once each test's cleanups have run.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
