package runtime

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks for leaked goroutines after every test of the directory: the internal
// ones and the external package runtime_test (the Reloader driven through real sockets),
// which is linked into the same test binary and runs under this TestMain.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
