package telemetry_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The tests that drive a proxy through real sockets (metrics_scrape_test.go,
// accesslog_reload_test.go, accesslog_client_test.go, explain_test.go) must leave no
// goroutine behind, as the proxy's own tests must not.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
