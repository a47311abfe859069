package configs

import "time"

// Defaults for keys a config leaves out. README.md's config reference lists the same values.
const (
	DefaultHTTPListen        = ":8080"
	DefaultAdminListen       = "127.0.0.1:9901"
	DefaultConnectTimeout    = 2 * time.Second
	DefaultResponseHeader    = 30 * time.Second
	DefaultIdleTimeout       = 90 * time.Second
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultExplainRequests   = 32768 // about 80 s at 400 requests/s; some 10 MiB
	DefaultBodyIdle          = 60 * time.Second
	DefaultVia               = "spillway"
	// The HTTP/1.1 engines of listen.http (listen.engine).
	EngineSpillway           = "spillway"
	EngineNetHTTP            = "net/http"
	DefaultUnderscores       = "drop"
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultResume            = 0.8
	DefaultQueueSize         = 1000
	DefaultQueueTimeout      = 2 * time.Second
	DefaultRetryAttempts     = 2
	DefaultRetryBudget       = 0.2
	DefaultIdempotencyHeader = "Idempotency-Key"
	DefaultRetryMinPerSecond = 3
	DefaultRetryMaxBody      = 64 << 10
	DefaultOutlierFailures   = 5
	DefaultBaseEjection      = 30 * time.Second
	DefaultMaxEjection       = 5 * time.Minute
	DefaultMaxEjectionPct    = 50
	// DefaultOn5xx: 5xx answers count as failures, as Envoy's consecutive_5xx does by
	// default, so that a backend that answers 500 at once while its health endpoint passes
	// is ejected (issue 12's black hole).
	DefaultOn5xx             = true
	DefaultHealthKind        = "http"
	DefaultHealthInitial     = "up"
	DefaultHealthPath        = "/healthz"
	DefaultHealthInterval    = 2 * time.Second
	DefaultHealthTimeout     = 1 * time.Second
	DefaultHealthRise        = 2
	DefaultHealthFall        = 3
	DefaultDiscoveryInterval = 10 * time.Second
	DefaultAdaptiveFloor     = 8
	DefaultAdaptiveCap       = 1000
	DefaultAdaptiveInitial   = 64
	DefaultMaxStreams        = 250
	DefaultStateKeep         = 2000
	DefaultWebSocketIdle     = 10 * time.Minute
	DefaultWebSocketLifetime = 24 * time.Hour
	DefaultBackendProtocol   = "http1"
	DefaultACMECA            = "https://acme-v02.api.letsencrypt.org/directory"
	DefaultHSTSMaxAge        = 365 * 24 * time.Hour
)

// DefaultACMEChallenges are the challenge types offered to the CA unless the file lists some.
var DefaultACMEChallenges = []string{"http-01", "tls-alpn-01"}

// SetDefaults fills every key the file left out. A key the file set, even to zero, is kept
// as written so that Validate can refuse it: "timeout: 0s" is a mistake, not a request for
// the default.
func (c *Config) SetDefaults() {
	if c.Listen.HTTPS == "" {
		setDefault(c, "listen.http", &c.Listen.HTTP, DefaultHTTPListen)
	}
	if c.Has("admin") || c.Admin != (Admin{}) {
		// Only a config that asks for the admin API gets its default address: one that
		// does not must not collide with a listener it never asked for.
		setDefault(c, "admin.listen", &c.Admin.Listen, DefaultAdminListen)
		setDefault(c, "admin.explain_requests", &c.Admin.ExplainRequests, DefaultExplainRequests)
	}

	t := &c.Timeouts
	setDefault(c, "timeouts.connect", &t.Connect, DefaultConnectTimeout)
	setDefault(c, "timeouts.response_header", &t.ResponseHeader, DefaultResponseHeader)
	setDefault(c, "timeouts.idle", &t.Idle, DefaultIdleTimeout)
	setDefault(c, "timeouts.read_header", &t.ReadHeader, DefaultReadHeaderTimeout)
	setDefault(c, "timeouts.shutdown", &t.Shutdown, DefaultShutdownTimeout)
	setDefault(c, "timeouts.body_idle", &t.BodyIdle, DefaultBodyIdle)
	setDefault(c, "headers.via", &c.Headers.Via, DefaultVia)
	setDefault(c, "headers.underscores", &c.Headers.Underscores, DefaultUnderscores)
	setDefault(c, "limits.max_header_bytes", &c.Limits.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDefault(c, "limits.max_concurrent_streams", &c.Limits.MaxConcurrentStreams, DefaultMaxStreams)
	setDefault(c, "listen.h2c", &c.Listen.H2C, true)
	setDefault(c, "listen.engine", &c.Listen.Engine, EngineSpillway)
	setDefault(c, "websocket.idle", &c.WebSocket.Idle, DefaultWebSocketIdle)
	setDefault(c, "websocket.max_lifetime", &c.WebSocket.MaxLifetime, DefaultWebSocketLifetime)
	c.setClusterDefaults()
	if t := c.TLS; t != nil {
		if a := t.ACME; a != nil {
			setDefault(c, "tls.acme.ca", &a.CA, DefaultACMECA)
			if len(a.Challenges) == 0 && !c.Has("tls.acme.challenges") {
				// http-01 is answered on the plain listener: without one, only tls-alpn-01.
				a.Challenges = []string{"tls-alpn-01"}
				if c.Listen.HTTP != "" {
					a.Challenges = append([]string(nil), DefaultACMEChallenges...)
				}
			}
		}
		if h := t.HSTS; h != nil {
			setDefault(c, "tls.hsts.max_age", &h.MaxAge, DefaultHSTSMaxAge)
		}
	}

	setDefault(c, "spillover.resume", &c.Spillover.Resume, DefaultResume)
	setDefault(c, "spillover.queue.size", &c.Spillover.Queue.Size, DefaultQueueSize)
	setDefault(c, "spillover.queue.timeout", &c.Spillover.Queue.Timeout, DefaultQueueTimeout)

	setDefault(c, "retries.attempts", &c.Retries.Attempts, DefaultRetryAttempts)
	setDefault(c, "retries.budget", &c.Retries.Budget, DefaultRetryBudget)
	setDefault(c, "retries.idempotency_header", &c.Retries.IdempotencyHeader, DefaultIdempotencyHeader)
	setDefault(c, "retries.min_per_second", &c.Retries.MinPerSecond, DefaultRetryMinPerSecond)
	setDefault(c, "retries.max_body_bytes", &c.Retries.MaxBodyBytes, DefaultRetryMaxBody)

	o := &c.Outlier
	setDefault(c, "outlier.consecutive_failures", &o.ConsecutiveFailures, DefaultOutlierFailures)
	setDefault(c, "outlier.base_ejection", &o.BaseEjection, DefaultBaseEjection)
	setDefault(c, "outlier.max_ejection", &o.MaxEjection, DefaultMaxEjection)
	setDefault(c, "outlier.max_ejection_percent", &o.MaxEjectionPercent, DefaultMaxEjectionPct)
	setDefault(c, "outlier.on_5xx", &o.On5xx, DefaultOn5xx)

	if st := c.State; st != nil {
		setDefault(c, "state.keep", &st.Keep, DefaultStateKeep)
	}
	if a := c.AccessLog; a != nil {
		setDefault(c, "access_log.output", &a.Output, "stdout")
		setDefault(c, "access_log.sample_2xx", &a.Sample2xx, 1.0)
	}

	for i := range c.Sites {
		c.setSiteDefaults(i)
	}
}

// setSiteDefaults fills the keys sites[i] left out.
func (c *Config) setSiteDefaults(i int) {
	s := &c.Sites[i]
	p := sitePath(i)
	if h := s.Health; h != nil {
		setDefault(c, p+".health.kind", &h.Kind, DefaultHealthKind)
		if h.Kind == "http" {
			setDefault(c, p+".health.path", &h.Path, DefaultHealthPath)
		}
		if len(h.Expect) == 0 && !c.Has(p+".health.expect") {
			h.Expect = []int{200, 399}
		}
		setDefault(c, p+".health.initial", &h.Initial, DefaultHealthInitial)
		setDefault(c, p+".health.interval", &h.Interval, DefaultHealthInterval)
		setDefault(c, p+".health.timeout", &h.Timeout, DefaultHealthTimeout)
		setDefault(c, p+".health.rise", &h.Rise, DefaultHealthRise)
		setDefault(c, p+".health.fall", &h.Fall, DefaultHealthFall)
	}
	if d := s.Discovery; d != nil {
		setDefault(c, p+".discovery.interval", &d.Interval, DefaultDiscoveryInterval)
	}
	if s.MaxInflight == 0 {
		if s.Adaptive == nil {
			s.Adaptive = &Adaptive{}
		}
		a := s.Adaptive
		setDefault(c, p+".adaptive.floor", &a.Floor, DefaultAdaptiveFloor)
		setDefault(c, p+".adaptive.cap", &a.Cap, max(DefaultAdaptiveCap, a.Floor))
		setDefault(c, p+".adaptive.initial", &a.Initial, min(max(DefaultAdaptiveInitial, a.Floor), a.Cap))
	}
	setDefault(c, p+".protocol", &s.Protocol, DefaultBackendProtocol)
}

// setDefault sets *v to def when the file left the key at path out.
func setDefault[T comparable](c *Config, path string, v *T, def T) {
	var zero T
	if *v == zero && !c.Has(path) {
		*v = def
	}
}
