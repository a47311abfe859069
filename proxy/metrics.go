package proxy

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics exports Spillway's metrics (README: Operating Spillway, Metrics), prefix
// spillway_. Per-request counts come through Record (it is a Recorder); the rest is read
// from the Reloader when Prometheus scrapes. Labels are bounded: sites and backends come
// from the config and discovery, codes are HTTP statuses, reasons a fixed set; no path.
type Metrics struct {
	r        *Reloader
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

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

// NewMetrics registers the metrics of r on reg (never the default registry: the caller
// owns reg, and adds Go and process collectors if it wants them). Pass the result to the
// Reloader as a Recorder.
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

// attach makes m read r at scrape time.
func (m *Metrics) attach(r *Reloader) { m.r = r }

// Record counts one finished request.
func (m *Metrics) Record(info *RequestInfo) {
	site := info.Site
	if site == "" {
		site = "none"
	}
	code := "0"
	if info.Status > 0 && info.Status < len(codes) {
		code = codes[info.Status]
	}
	m.requests.WithLabelValues(site, code).Inc()
	m.duration.WithLabelValues(site).Observe(info.Duration.Seconds())
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
	r := m.r
	if r == nil {
		return
	}
	st := r.state(false)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	for _, s := range st.Sites {
		gauge(m.inflight, float64(s.Inflight), s.Name)
		gauge(m.limit, float64(s.Limit), s.Name)
		w := s.Weight
		if s.Drained {
			w = 0
		}
		gauge(m.weight, w, s.Name)
		gauge(m.share, s.Share, s.Name)
		for _, b := range s.Backends {
			up := 0.0
			if b.Up {
				up = 1
			}
			gauge(m.backendUp, up, s.Name, b.Addr)
		}
	}
	gauge(m.queue, float64(st.Queue.Waiting))
	cfg := r.Config()
	for _, s := range st.Sites {
		if site := cfg.Site(s.Name); site != nil && site.Discovery != nil { // cfg is not nil: st has sites
			counter(m.discovery, float64(r.reg.Site(s.Name).DiscoveryFailures().Load()), s.Name)
		}
	}
	for _, c := range r.reg.Spills() {
		counter(m.spills, float64(c.N), c.From, c.To, c.Reason.String())
	}
	for reason, n := range r.reg.Sheds() {
		counter(m.sheds, float64(n), reason.String())
	}
	if r.handler != nil {
		retries := r.handler.Retries()
		for _, reason := range retryReasons { // every reason, so the series exist before the first
			counter(m.retries, float64(retries[reason]), reason)
		}
	}
	ok, failed := r.Reloads()
	counter(m.reloads, float64(ok), "success")
	counter(m.reloads, float64(failed), "failure")
}
