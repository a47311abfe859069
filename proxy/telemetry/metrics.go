package telemetry

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway/spillway/proxy"
)

// Metrics exports Spillway's metrics (README: Operating Spillway, Metrics), prefix
// spillway_. Per-request counts come through Record (it is a proxy.Recorder); the rest is
// read from its Source when Prometheus scrapes. Labels are bounded: sites and backends come
// from the config and discovery, codes are HTTP statuses, reasons a fixed set; no path.
type Metrics struct {
	source   atomic.Pointer[Source]
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	sites    sync.Map // site label → *siteMetrics: the vectors' children, looked up once

	inflight, limit, weight, share, backendUp, queue *prometheus.Desc
	spills, sheds, retries, reloads, discovery       *prometheus.Desc
}

// codes are the label values of the HTTP statuses, made once.
var codes = func() (c [600]string) {
	for i := range c {
		c[i] = strconv.Itoa(i)
	}
	return c
}()

// NewMetrics registers the metrics on reg (never the default registry: the caller owns
// reg, and adds Go and process collectors if it wants them). Pass the result to the
// Reloader as a Recorder, and its Source to SetSource; until then a scrape has only the
// per-request counts.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "spillway_requests_total",
			Help: "Requests answered, by the site of their last try (\"none\": no site took it) and status code."},
			[]string{"site", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "spillway_request_duration_seconds",
			Help:    "Time from the request's arrival to the end of its response, by site.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}},
			[]string{"site"}),
		inflight:  prometheus.NewDesc("spillway_inflight", "Requests in flight, by site.", []string{"site"}, nil),
		limit:     prometheus.NewDesc("spillway_site_limit", "A site's concurrency limit: the sum of its backends' limits that are up.", []string{"site"}, nil),
		weight:    prometheus.NewDesc("spillway_site_weight", "A site's weight in effect (an operator's override or ramp included; 0 when drained).", []string{"site"}, nil),
		share:     prometheus.NewDesc("spillway_site_share", "A site's share of the answers over the last 10 seconds.", []string{"site"}, nil),
		backendUp: prometheus.NewDesc("spillway_backend_up", "1 when the backend takes requests (healthy and not ejected).", []string{"site", "backend"}, nil),
		queue:     prometheus.NewDesc("spillway_queue_waiting", "Requests waiting for a free slot.", nil, nil),
		spills:    prometheus.NewDesc("spillway_spillover_total", "Requests that went to another site than the one the split preferred, by reason.", []string{"from", "to", "reason"}, nil),
		sheds:     prometheus.NewDesc("spillway_shed_total", "Requests refused (503) or abandoned for lack of capacity, by reason.", []string{"reason"}, nil),
		retries:   prometheus.NewDesc("spillway_retries_total", "Retries, by the reason the previous try failed.", []string{"reason"}, nil),
		reloads:   prometheus.NewDesc("spillway_config_reloads_total", "Config reloads, by result.", []string{"result"}, nil),
		discovery: prometheus.NewDesc("spillway_discovery_failures_total", "Failed discovery lookups (DNS or targets file) of a site; each kept the last good members.", []string{"site"}, nil),
	}
	reg.MustRegister(m.requests, m.duration, m)
	return m
}

// SetSource makes m read src at scrape time.
func (m *Metrics) SetSource(src Source) { m.source.Store(&src) }

// siteMetrics are one site's children of the per-request vectors. Record keeps them rather
// than ask the vectors for them by label values each time, which hashes and compares the
// labels under the vector's lock.
type siteMetrics struct {
	duration prometheus.Observer
	requests [len(codes)]atomic.Pointer[prometheus.Counter] // by status; made at its first request
}

// Record counts one finished request.
func (m *Metrics) Record(info *proxy.RequestInfo) {
	site := info.Site
	if site == "" {
		site = "none"
	}
	code := 0
	if info.Status > 0 && info.Status < len(codes) {
		code = info.Status
	}
	s := m.site(site)
	c := s.requests[code].Load()
	if c == nil {
		counter := m.requests.WithLabelValues(site, codes[code])
		c = &counter
		s.requests[code].Store(c) // (a racing Record stores the same child)
	}
	(*c).Inc()
	s.duration.Observe(info.Duration.Seconds())
}

// site returns the children of site's label.
func (m *Metrics) site(site string) *siteMetrics {
	if s, ok := m.sites.Load(site); ok {
		return s.(*siteMetrics)
	}
	s, _ := m.sites.LoadOrStore(site, &siteMetrics{duration: m.duration.WithLabelValues(site)})
	return s.(*siteMetrics)
}

// Describe implements prometheus.Collector for the metrics read at scrape time.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.inflight, m.limit, m.weight, m.share, m.backendUp, m.queue,
		m.spills, m.sheds, m.retries, m.reloads, m.discovery} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	src := m.source.Load()
	if src == nil {
		return
	}
	snap := (*src).Snapshot()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	for _, s := range snap.Sites {
		gauge(m.inflight, float64(s.Inflight), s.Name)
		gauge(m.limit, float64(s.Limit), s.Name)
		gauge(m.weight, s.Weight, s.Name)
		gauge(m.share, s.Share, s.Name)
		for _, b := range s.Backends {
			up := 0.0
			if b.Up {
				up = 1
			}
			gauge(m.backendUp, up, s.Name, b.Addr)
		}
	}
	gauge(m.queue, float64(snap.Waiting))
	for _, s := range snap.Sites {
		if s.Discovery {
			counter(m.discovery, float64(s.DiscoveryFailures), s.Name)
		}
	}
	for _, c := range snap.Spills {
		counter(m.spills, float64(c.N), c.From, c.To, c.Reason)
	}
	for reason, n := range snap.Sheds {
		counter(m.sheds, float64(n), reason)
	}
	for _, r := range snap.Retries {
		counter(m.retries, float64(r.N), r.Reason)
	}
	counter(m.reloads, float64(snap.Reloads.OK), "success")
	counter(m.reloads, float64(snap.Reloads.Failed), "failure")
}
