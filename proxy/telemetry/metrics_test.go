package telemetry_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/telemetry"
)

// source is a Source that returns a fixed Snapshot.
type source telemetry.Snapshot

func (s *source) Snapshot() telemetry.Snapshot { return telemetry.Snapshot(*s) }

// gather returns the value of every sample on reg, keyed by name and label values.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			out[key] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return -1
}

// Metrics exports what its Source's Snapshot says under the names and labels of the README
// (discovery failures only for a site with discovery), and counts the requests it records.
func TestMetricsExportTheSnapshot(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := telemetry.NewMetrics(reg)
	m.Record(&proxy.RequestInfo{Site: "idc1", Status: 200, Duration: time.Millisecond})
	m.Record(&proxy.RequestInfo{Status: 503, Reason: "queue_full"})
	if got := gather(t, reg); len(got) != 4 || got["spillway_requests_total code=200 site=idc1"] != 1 ||
		got["spillway_requests_total code=503 site=none"] != 1 {
		t.Errorf("without a source: %v, want the two requests' counts only (and their durations)", got)
	}

	m.SetSource(&source{
		Sites: []telemetry.SiteSnapshot{
			{Name: "idc1", Inflight: 2, Limit: 10, Weight: 5, Share: 0.75,
				Backends: []telemetry.BackendSnapshot{{Addr: "10.0.0.1:80", Up: true}, {Addr: "10.0.0.2:80"}}},
			{Name: "aws", Limit: 4, Share: 0.25, Discovery: true, DiscoveryFailures: 3},
		},
		Waiting: 7,
		Spills:  []telemetry.SpillSnapshot{{From: "idc1", To: "aws", Reason: "saturated", N: 4}},
		Sheds:   map[string]uint64{"queue_full": 1, "queue_timeout": 0},
		Retries: []telemetry.RetrySnapshot{{Reason: "connect", N: 2}, {Reason: "timeout"}},
		Reloads: telemetry.ReloadSnapshot{OK: 3, Failed: 1},
	})
	got := gather(t, reg)
	for key, want := range map[string]float64{
		"spillway_inflight site=idc1":                                2,
		"spillway_site_limit site=idc1":                              10,
		"spillway_site_weight site=idc1":                             5,
		"spillway_site_share site=idc1":                              0.75,
		"spillway_backend_up backend=10.0.0.1:80 site=idc1":          1,
		"spillway_backend_up backend=10.0.0.2:80 site=idc1":          0,
		"spillway_site_weight site=aws":                              0,
		"spillway_site_share site=aws":                               0.25,
		"spillway_discovery_failures_total site=aws":                 3,
		"spillway_queue_waiting":                                     7,
		"spillway_spillover_total from=idc1 reason=saturated to=aws": 4,
		"spillway_shed_total reason=queue_full":                      1,
		"spillway_shed_total reason=queue_timeout":                   0,
		"spillway_retries_total reason=connect":                      2,
		"spillway_retries_total reason=timeout":                      0,
		"spillway_config_reloads_total result=success":               3,
		"spillway_config_reloads_total result=failure":               1,
		"spillway_requests_total code=200 site=idc1":                 1,
		"spillway_request_duration_seconds site=none":                1,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	if _, ok := got["spillway_discovery_failures_total site=idc1"]; ok {
		t.Error("discovery failures exported for idc1, which has no discovery")
	}
}
