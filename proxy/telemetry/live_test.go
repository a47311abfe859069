package telemetry_test

import (
	"testing"
	"time"

	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/telemetry"
)

// Regression: the live shed rate (dashboard, state API) counted queue_full and
// queue_timeout but not queue_delay, the shed of a congested queue and the usual one under
// sustained overload, which spillway_shed_total does count: the dashboard showed no
// shedding while most refusals were queue_delay.
func TestLiveCountsEveryShed(t *testing.T) {
	at := time.Unix(1e9, 0)
	l := telemetry.NewLive(func() time.Time { return at.Add(time.Second) })
	for _, f := range []struct {
		reason string
		status int
	}{{"queue_full", 503}, {"queue_timeout", 503}, {"queue_delay", 503}, {"no_backend", 503}, {"connect", 502}} {
		l.Record(&proxy.RequestInfo{Start: at, Status: f.status, Reason: f.reason})
	}
	if _, shed := l.Totals(); shed != 0.3 {
		t.Errorf("shed rate %v/s over 10 s, want 0.3 (queue_full, queue_timeout, queue_delay)", shed)
	}
}
