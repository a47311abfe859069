package bench

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test stops what it started: the proxy, the simulated backends, the load
// generator's workers and connections.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
