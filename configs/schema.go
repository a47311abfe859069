// Package configs holds Spillway's configuration file: the schema as plain data, strict
// loading, defaults and validation. It knows nothing of the proxy; proxy.Build is the one
// place a Config becomes runtime state.
//
// The names of the YAML keys are a user-facing contract (see README.md, "Config reference").
package configs

import "time"

// Config is one parsed configuration file. It is plain data: nothing in it changes after
// Load returns, and it holds no runtime state.
type Config struct {
	Listen    Listen     `yaml:"listen"`
	Admin     Admin      `yaml:"admin"`
	TLS       *TLS       `yaml:"tls"`
	Sites     []Site     `yaml:"sites"`
	Spillover Spillover  `yaml:"spillover"`
	Affinity  Affinity   `yaml:"affinity"`
	Retries   Retries    `yaml:"retries"`
	Cluster   *Cluster   `yaml:"cluster"` // a fleet of replicas on etcd; see cluster.go
	Outlier   Outlier    `yaml:"outlier"`
	Timeouts  Timeouts   `yaml:"timeouts"`
	Limits    Limits     `yaml:"limits"`
	Headers   Headers    `yaml:"headers"`
	AccessLog *AccessLog `yaml:"access_log"`
	WebSocket WebSocket  `yaml:"websocket"`
	State     *State     `yaml:"state"`

	// src maps key paths ("sites[1].weight") to where they stand in the file; nil for a
	// Config built in code. See Config.Pos.
	src *source `yaml:"-"`
}

// Site returns the site called name, or nil.
func (c *Config) Site(name string) *Site {
	for i := range c.Sites {
		if c.Sites[i].Name == name {
			return &c.Sites[i]
		}
	}
	return nil
}

// Listen is where the proxy accepts client traffic.
type Listen struct {
	HTTP  string `yaml:"http"`  // HTTP/1.1 and h2c (prior knowledge), e.g. ":8080"
	HTTPS string `yaml:"https"` // optional; needs tls
	// H2C serves HTTP/2 with prior knowledge on the plain listener besides HTTP/1.1
	// (default true). An "Upgrade: h2c" request is never honoured nor tunnelled.
	H2C bool `yaml:"h2c"`
	// Engine serves HTTP/1.1 on the plain listener: "spillway" (default), Spillway's own,
	// or "net/http", Go's server, as before it. listen.https is always net/http's.
	Engine string `yaml:"engine"`
}

// Admin is the admin listener (admin API, /metrics, dashboard).
type Admin struct {
	Listen    string `yaml:"listen"`
	TokenFile string `yaml:"token_file"`
	// ExplainRequests is how many of the last requests GET /api/v1/explain can explain.
	ExplainRequests int `yaml:"explain_requests"`
}

// TLS terminates client TLS on listen.https, either from ACME or from static files.
type TLS struct {
	ACME *ACME `yaml:"acme"`
	// CertFile and KeyFile are a static certificate (PEM, chain first) and its key; they are
	// read again when they change on disk.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// RedirectHTTP answers every request on listen.http with a redirect to HTTPS (the
	// ACME HTTP-01 challenge is still answered there).
	RedirectHTTP bool `yaml:"redirect_http"`
	// HSTS adds a Strict-Transport-Security header to every HTTPS response; nil: none.
	HSTS *HSTS `yaml:"hsts"`
}

// ACME obtains and renews certificates with certmagic.
type ACME struct {
	Domains []string `yaml:"domains"`
	Email   string   `yaml:"email"`
	// CA is the ACME directory URL: a public CA (default Let's Encrypt) or an internal one.
	CA string `yaml:"ca"`
	// CARoot is a PEM file of root certificates to trust the CA's own HTTPS server with
	// (an internal ACME CA); empty: the system roots.
	CARoot string `yaml:"ca_root"`
	// Storage is the directory for certificates, keys and the ACME account.
	Storage string `yaml:"storage"`
	// Challenges are the challenge types the CA may use: http-01 (on listen.http) and
	// tls-alpn-01 (on listen.https). Default both.
	Challenges []string `yaml:"challenges"`
}

// HSTS is the Strict-Transport-Security header sent to HTTPS clients.
type HSTS struct {
	MaxAge            time.Duration `yaml:"max_age"`
	IncludeSubdomains bool          `yaml:"include_subdomains"`
	Preload           bool          `yaml:"preload"`
}

// Site is one deployment (a datacenter or a cloud pool) and its share of traffic.
type Site struct {
	Name     string   `yaml:"name"`
	Weight   int      `yaml:"weight"`
	Backends []string `yaml:"backends"`
	// Elastic marks a spillover target (the autoscaling pool).
	Elastic   bool       `yaml:"elastic"`
	Discovery *Discovery `yaml:"discovery"`
	// MaxInflight is the per-backend concurrency limit; 0 means adaptive.
	MaxInflight int `yaml:"max_inflight"`
	// Adaptive bounds the learned per-backend limit of a site without max_inflight.
	Adaptive  *Adaptive     `yaml:"adaptive"`
	Health    *Health       `yaml:"health"`
	TLS       *BackendTLS   `yaml:"tls"`
	SlowStart time.Duration `yaml:"slow_start"`
	// Protocol is what the proxy speaks to the site's backends: "http1" (default,
	// HTTP/1.1, WebSocket possible) or "h2" (HTTP/2 only: h2c with prior knowledge to
	// http:// backends, ALPN h2 to https:// ones; for gRPC).
	Protocol string `yaml:"protocol"`
}

// Discovery finds an elastic site's members: DNS (A/AAAA "host:port" or SRV) or a targets file.
type Discovery struct {
	DNS      string        `yaml:"dns"`
	File     string        `yaml:"file"`
	Interval time.Duration `yaml:"interval"`
	// Resolver is the DNS server to ask, "ip:port"; empty: the system's resolver.
	Resolver string `yaml:"resolver"`
}

// Adaptive is the floor, cap and starting point of a learned per-backend concurrency limit.
type Adaptive struct {
	Floor   int `yaml:"floor"`
	Cap     int `yaml:"cap"`
	Initial int `yaml:"initial"`
}

// Health is a site's active health probe, run against each of its backends.
type Health struct {
	Kind     string        `yaml:"kind"` // "http" (default) or "tcp" (connect only)
	Path     string        `yaml:"path"`
	Host     string        `yaml:"host"`   // Host header of HTTP probes; default the backend's
	Expect   []int         `yaml:"expect"` // accepted status range [low, high]; default [200, 399]
	Interval time.Duration `yaml:"interval"`
	Timeout  time.Duration `yaml:"timeout"`
	Rise     int           `yaml:"rise"`
	Fall     int           `yaml:"fall"`
	// Initial is the state of a backend the proxy has not probed yet: "up" (default) or
	// "down" (no traffic until rise probes pass).
	Initial string `yaml:"initial"`
}

// BackendTLS is how the proxy speaks TLS to a site's https backends.
type BackendTLS struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Spillover controls what happens when a site is full.
type Spillover struct {
	// Resume is the fraction of its limit a spilling site must fall below before it counts
	// as having headroom again (hysteresis).
	Resume float64 `yaml:"resume"`
	Queue  Queue   `yaml:"queue"`
}

// Queue is the bounded FIFO wait when no site has a free slot.
type Queue struct {
	Size    int           `yaml:"size"`
	Timeout time.Duration `yaml:"timeout"`
}

// Affinity keeps a session on its site, keyed by a cookie or a header (not both).
type Affinity struct {
	Cookie string `yaml:"cookie"`
	Header string `yaml:"header"`
}

// Retries bounds bank-safe retries.
type Retries struct {
	// Attempts is the most tries a request gets, the first included: 1 never retries.
	Attempts int `yaml:"attempts"`
	// Budget is the fraction of recent requests (last 10 s) that may be retries ...
	Budget float64 `yaml:"budget"`
	// ... but MinPerSecond retries a second are always allowed.
	MinPerSecond int `yaml:"min_per_second"`
	// IdempotencyHeader names the header that makes any method retryable once it may have
	// reached a backend; empty: only GET, HEAD, OPTIONS, PUT and DELETE are.
	IdempotencyHeader string `yaml:"idempotency_header"`
	// MaxBodyBytes is the largest request body kept for a retry; a request that sent more is
	// not retried once its body has been read.
	MaxBodyBytes int `yaml:"max_body_bytes"`
}

// Outlier is passive health: backends whose requests keep failing are ejected for a while.
type Outlier struct {
	ConsecutiveFailures int           `yaml:"consecutive_failures"` // 0 turns ejection off
	BaseEjection        time.Duration `yaml:"base_ejection"`        // the n-th ejection lasts n × this
	MaxEjection         time.Duration `yaml:"max_ejection"`         // ... at most this
	MaxEjectionPercent  int           `yaml:"max_ejection_percent"` // panic guard, per site
	On5xx               bool          `yaml:"on_5xx"`               // count 5xx answers as failures (default true)
}

// Timeouts are the proxy's clocks, client side and backend side.
type Timeouts struct {
	Connect        time.Duration `yaml:"connect"`         // dial to a backend
	ResponseHeader time.Duration `yaml:"response_header"` // backend's response headers
	Idle           time.Duration `yaml:"idle"`            // keep-alive idle, both sides
	ReadHeader     time.Duration `yaml:"read_header"`     // client's request headers
	Shutdown       time.Duration `yaml:"shutdown"`        // grace for in-flight requests on stop
	// DrainDelay is how long readiness (/readyz) is false before the listeners close on
	// SIGTERM, so that load balancers and Kubernetes stop sending first (default 0).
	DrainDelay time.Duration `yaml:"drain_delay"`
	// BodyIdle is the longest silence inside a request or response body once it streams.
	BodyIdle time.Duration `yaml:"body_idle"`
}

// Headers is what the proxy does to the headers it forwards.
type Headers struct {
	// Via names the proxy in the Via header it appends to forwarded requests and
	// responses (RFC 9110 section 7.6.3); empty: no Via.
	Via string `yaml:"via"`
	// Underscores is what happens to a request header whose name has a "_": "drop" it,
	// "reject" the request (400), or "allow" it. CGI-style backends read X_Forwarded_For
	// as X-Forwarded-For, so a client could pass off its own as the proxy's.
	Underscores string `yaml:"underscores"`
}

// AccessLog is the one-line-per-request JSON log.
type AccessLog struct {
	// Output is "stdout", "stderr" or a file path (appended to).
	Output string `yaml:"output"`
	// Sample2xx is the fraction of answers below 400 that are written (errors always are).
	Sample2xx float64 `yaml:"sample_2xx"`
}

// Limits bound what a client may send.
type Limits struct {
	// MaxHeaderBytes caps a request's header block; larger requests get 431.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxConcurrentStreams caps the streams one HTTP/2 client connection may have open;
	// it also bounds how many of a connection's requests run at once when a client resets
	// streams as fast as it opens them (rapid reset).
	MaxConcurrentStreams int `yaml:"max_concurrent_streams"`
}

// WebSocket bounds upgraded (tunnelled) connections. While open, a WebSocket counts as a
// request in flight on its backend and site.
type WebSocket struct {
	// Idle closes a tunnel when no byte has crossed it, either way, for this long.
	Idle time.Duration `yaml:"idle"`
	// MaxLifetime closes a tunnel this long after it opened, however busy.
	MaxLifetime time.Duration `yaml:"max_lifetime"`
}

// State is where a single node keeps the operators' runtime state — weight overrides and
// their ramps, drains — and the audit trail, so that they survive restarts. Without it they
// live in memory only.
type State struct {
	// File is the state file (JSON, rewritten atomically on every change); relative to the
	// config file's directory.
	File string `yaml:"file"`
	// Keep is how many audit entries are kept, the oldest dropped first (default 2000).
	Keep int `yaml:"keep"`
}
