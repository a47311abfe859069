package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway/spillway/proxy"
)

// NewReloader returns proxy.NewReloader(opts) with the telemetry `spillway run` has: a
// Live (the state API's rates), an AccessLog configured from every config loaded, and,
// when reg is not nil, the Metrics registered on reg, reading the Reloader. opts.Live and
// opts.AccessLog, when set, are kept.
func NewReloader(opts proxy.ReloaderOptions, reg prometheus.Registerer) *proxy.Reloader {
	if opts.Live == nil {
		opts.Live = NewLive(opts.Now)
	}
	if opts.AccessLog == nil {
		opts.AccessLog = NewAccessLog(nil)
	}
	var m *Metrics
	if reg != nil {
		m = NewMetrics(reg)
		opts.Recorders = append([]proxy.Recorder{m}, opts.Recorders...)
	}
	r := proxy.NewReloader(opts)
	if m != nil {
		m.SetSource(ReloaderSource(r))
	}
	return r
}
