package configs

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// MaxWeight bounds a site's weight. The splitter's schedule is as long as the sum of the
// weights (after dividing by their greatest common divisor), so the bound keeps it small.
const MaxWeight = 1000

// MaxInflightLimit bounds max_inflight and adaptive.cap: a per-backend limit, not a site's.
const MaxInflightLimit = 100000

var (
	siteNameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	headerNameRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// Validate checks c after SetDefaults and returns every problem as Errors, or nil.
func (c *Config) Validate() error {
	v := validator{c: c}
	v.listen()
	v.tls()
	v.sites()
	v.policies()
	v.cluster()
	if len(v.errs) == 0 {
		return nil
	}
	v.errs.Sort()
	return v.errs
}

type validator struct {
	c    *Config
	errs Errors
}

func (v *validator) add(path, format string, args ...any) {
	v.errs = append(v.errs, v.c.Errorf(path, format, args...))
}

// minDuration is the shortest timeout or interval a config may set: anything shorter is a
// missing unit ("5ns" for "5s") rather than a wish.
const minDuration = time.Millisecond

// Upper bounds of durations and counts (README, "Config reference"): generous for any
// production use, and small enough that a slip of the keyboard ("rise: 20000000", "interval:
// 2000h") is refused rather than turning a probe, a queue or a limit into a silent no-op.
const (
	day = 24 * time.Hour

	MaxConnectTimeout    = 5 * time.Minute
	MaxReadHeader        = 5 * time.Minute
	MaxResponseHeader    = time.Hour
	MaxBodyIdle          = time.Hour
	MaxIdleTimeout       = day
	MaxShutdown          = time.Hour
	MaxWebSocketIdle     = day
	MaxWebSocketLifetime = 30 * day
	MaxHSTSMaxAge        = 2 * 365 * day
	MaxDiscoveryInterval = day
	MaxHealthInterval    = time.Hour
	MaxSlowStart         = time.Hour
	MaxQueueTimeout      = 5 * time.Minute
	MaxEjection          = day

	MaxHealthCount      = 100       // health.rise and health.fall
	MaxQueueSize        = 1_000_000 // spillover.queue.size
	MaxRetriesPerSecond = 10_000    // retries.min_per_second
	MaxOutlierFailures  = 1000      // outlier.consecutive_failures
	MaxExplainRequests  = 1_000_000 // admin.explain_requests
	MaxStateKeep        = 10_000    // state.keep: the file is rewritten whole on every change
)

// positive checks a duration that must be > 0 (at least minDuration) and at most max.
func (v *validator) positive(path string, d, max time.Duration) {
	switch {
	case d <= 0:
		v.add(path, "must be a duration > 0, got %s", d)
	case d < minDuration:
		v.add(path, "must be at least %s, got %s", minDuration, d)
	case d > max:
		v.add(path, "must be at most %s, got %s", max, d)
	}
}

// between checks a whole number that must be in [lo, hi].
func (v *validator) between(path string, n, lo, hi int) {
	if n < lo || n > hi {
		v.add(path, "must be between %d and %d, got %d", lo, hi, n)
	}
}

// sameListenAddress reports whether listening on a and on b would collide: the same port,
// and the same host or either host a wildcard (empty, 0.0.0.0, ::). Port 0 never collides.
func sameListenAddress(a, b string) bool {
	ah, ap, err1 := net.SplitHostPort(a)
	bh, bp, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || ap != bp || ap == "0" {
		return false
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ah == bh || wildcard(ah) || wildcard(bh)
}

func (v *validator) address(path, addr string) {
	if addr == "" {
		return
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		v.add(path, "want host:port (e.g. \":8080\" or \"127.0.0.1:9901\"), got %s", Quote(addr))
		return
	}
	if msg := hostPortProblem(addr, 0, true); msg != "" {
		v.add(path, "%s", msg)
	}
}

func (v *validator) listen() {
	c := v.c
	if c.Listen.HTTP == "" && c.Listen.HTTPS == "" {
		v.add("listen", "set listen.http or listen.https")
	}
	v.address("listen.http", c.Listen.HTTP)
	v.address("listen.https", c.Listen.HTTPS)
	if e := c.Listen.Engine; e != EngineSpillway && e != EngineNetHTTP {
		v.add("listen.engine", "want %s or %s, got %s", EngineSpillway, EngineNetHTTP, Quote(e))
	}
	v.address("admin.listen", c.Admin.Listen)
	if c.Has("admin.explain_requests") || c.Admin.ExplainRequests != 0 {
		v.between("admin.explain_requests", c.Admin.ExplainRequests, 1, MaxExplainRequests)
	}
	if sameListenAddress(c.Listen.HTTP, c.Listen.HTTPS) {
		v.add("listen.https", "same address as listen.http")
	}
	if sameListenAddress(c.Admin.Listen, c.Listen.HTTP) || sameListenAddress(c.Admin.Listen, c.Listen.HTTPS) {
		v.add("admin.listen", "same address as a traffic listener")
	}
	if c.Listen.HTTPS != "" && c.TLS == nil {
		v.add("listen.https", "needs a tls section (acme, or cert_file and key_file)")
	}
	t := c.Timeouts
	v.positive("timeouts.connect", t.Connect, MaxConnectTimeout)
	v.positive("timeouts.response_header", t.ResponseHeader, MaxResponseHeader)
	v.positive("timeouts.idle", t.Idle, MaxIdleTimeout)
	v.positive("timeouts.read_header", t.ReadHeader, MaxReadHeader)
	v.positive("timeouts.shutdown", t.Shutdown, MaxShutdown)
	v.positive("timeouts.body_idle", t.BodyIdle, MaxBodyIdle)
	if m := c.Limits.MaxHeaderBytes; m < 1<<10 || m > 16<<20 {
		v.add("limits.max_header_bytes", "must be between 1024 and 16777216, got %d", m)
	}
	if m := c.Limits.MaxConcurrentStreams; m < 1 || m > 10000 {
		v.add("limits.max_concurrent_streams", "must be between 1 and 10000, got %d", m)
	}
	v.positive("websocket.idle", c.WebSocket.Idle, MaxWebSocketIdle)
	v.positive("websocket.max_lifetime", c.WebSocket.MaxLifetime, MaxWebSocketLifetime)
}

func (v *validator) tls() {
	c := v.c
	t := c.TLS
	if t == nil {
		return
	}
	if c.Listen.HTTPS == "" {
		v.add("tls", "needs listen.https, the listener it is for")
	}
	if t.RedirectHTTP && (c.Listen.HTTP == "" || c.Listen.HTTPS == "") {
		v.add("tls.redirect_http", "needs both listen.http (where it redirects from) and listen.https")
	}
	if h := t.HSTS; h != nil {
		v.positive("tls.hsts.max_age", h.MaxAge, MaxHSTSMaxAge)
		if h.Preload && (!h.IncludeSubdomains || h.MaxAge < 365*24*time.Hour) {
			v.add("tls.hsts.preload", "preload needs include_subdomains and a max_age of at least 8760h (one year)")
		}
	}
	static := t.CertFile != "" || t.KeyFile != ""
	switch {
	case t.ACME != nil && static:
		v.add("tls", "use either acme or cert_file/key_file, not both")
	case t.ACME == nil && !static:
		v.add("tls", "set acme, or cert_file and key_file")
	case static && (t.CertFile == "" || t.KeyFile == ""):
		v.add("tls", "cert_file and key_file go together")
	}
	if a := t.ACME; a != nil {
		if len(a.Domains) == 0 {
			v.add("tls.acme.domains", "list at least one domain")
		}
		domains := map[string]int{}
		for i, d := range a.Domains {
			p := fmt.Sprintf("tls.acme.domains[%d]", i)
			if hostProblem(strings.TrimPrefix(d, "*."), false) != "" {
				v.add(p, "want a DNS name, got %s", Quote(d))
			} else if first, dup := domains[strings.ToLower(d)]; dup {
				v.add(p, "%s is listed twice (first as domains[%d])", Quote(d), first)
			} else {
				domains[strings.ToLower(d)] = i
			}
		}
		if a.Email != "" && !strings.Contains(a.Email, "@") {
			v.add("tls.acme.email", "want an email address, got %s", Quote(a.Email))
		}
		if u, err := url.Parse(a.CA); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			v.add("tls.acme.ca", "want the ACME directory URL, got %s", Quote(a.CA))
		}
		if a.Storage == "" {
			v.add("tls.acme.storage", "set the directory that keeps certificates, keys and the ACME account across restarts")
		}
		if len(a.Challenges) == 0 {
			v.add("tls.acme.challenges", "list at least one of http-01, tls-alpn-01")
		}
		seen := map[string]bool{}
		for i, ch := range a.Challenges {
			p := fmt.Sprintf("tls.acme.challenges[%d]", i)
			switch {
			case ch != "http-01" && ch != "tls-alpn-01":
				v.add(p, "want http-01 or tls-alpn-01, got %s", Quote(ch))
			case seen[ch]:
				v.add(p, "%s is listed twice", Quote(ch))
			case ch == "http-01" && c.Listen.HTTP == "":
				v.add(p, "http-01 is answered on listen.http, which is not set")
			}
			seen[ch] = true
		}
	}
}

func (v *validator) policies() {
	c := v.c
	if r := c.Spillover.Resume; !(r > 0 && r <= 1) { // also refuses .nan
		v.add("spillover.resume", "must be in (0, 1], got %g", r)
	}
	v.between("spillover.queue.size", c.Spillover.Queue.Size, 0, MaxQueueSize)
	v.positive("spillover.queue.timeout", c.Spillover.Queue.Timeout, MaxQueueTimeout)
	a := c.Affinity
	if a.Cookie != "" && a.Header != "" {
		v.add("affinity", "use either cookie or header, not both")
	}
	if a.Cookie != "" && !headerNameRE.MatchString(a.Cookie) {
		v.add("affinity.cookie", "not a valid cookie name: %s", Quote(a.Cookie))
	}
	if a.Header != "" && !headerNameRE.MatchString(a.Header) {
		v.add("affinity.header", "not a valid header name: %s", Quote(a.Header))
	}
	if a := c.AccessLog; a != nil {
		if !(a.Sample2xx >= 0 && a.Sample2xx <= 1) {
			v.add("access_log.sample_2xx", "must be between 0 and 1, got %g", a.Sample2xx)
		}
		if a.Output == "" {
			v.add("access_log.output", "want stdout, stderr or a file path")
		}
	}
	if st := c.State; st != nil {
		if st.File == "" {
			v.add("state", "set file: the path of the state file")
		}
		v.between("state.keep", st.Keep, 1, MaxStateKeep)
	}
	r := c.Retries
	if r.Attempts < 1 || r.Attempts > 10 {
		v.add("retries.attempts", "must be between 1 (never retry) and 10 tries, got %d", r.Attempts)
	}
	v.between("retries.min_per_second", r.MinPerSecond, 0, MaxRetriesPerSecond)
	if r.MaxBodyBytes < 0 || r.MaxBodyBytes > 16<<20 {
		v.add("retries.max_body_bytes", "must be between 0 and 16777216, got %d", r.MaxBodyBytes)
	}
	o := c.Outlier
	if o.ConsecutiveFailures < 0 || o.ConsecutiveFailures > MaxOutlierFailures {
		v.add("outlier.consecutive_failures", "must be between 0 (never eject) and %d, got %d", MaxOutlierFailures, o.ConsecutiveFailures)
	}
	v.positive("outlier.base_ejection", o.BaseEjection, MaxEjection)
	v.positive("outlier.max_ejection", o.MaxEjection, MaxEjection)
	if o.MaxEjection < o.BaseEjection && o.MaxEjection > 0 {
		v.add("outlier.max_ejection", "%s is shorter than base_ejection %s", o.MaxEjection, o.BaseEjection)
	}
	if o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100 {
		v.add("outlier.max_ejection_percent", "must be between 0 and 100, got %d", o.MaxEjectionPercent)
	}
	if !(r.Budget >= 0 && r.Budget <= 1) { // also refuses .nan
		v.add("retries.budget", "must be in [0, 1], got %g", r.Budget)
	}
	if r.IdempotencyHeader != "" && !headerNameRE.MatchString(r.IdempotencyHeader) {
		v.add("retries.idempotency_header", "not a valid header name: %s", Quote(r.IdempotencyHeader))
	}
	h := c.Headers
	switch h.Underscores {
	case "drop", "reject", "allow":
	default:
		v.add("headers.underscores", "want drop, reject or allow, got %s", Quote(h.Underscores))
	}
	if h.Via != "" && (len(h.Via) > 64 || !headerNameRE.MatchString(h.Via)) {
		v.add("headers.via", "want a name of at most 64 letters, digits and !#$%%&'*+-.^_`|~ (or \"\" for no Via), got %s", Quote(h.Via))
	}
	if h.Underscores != "allow" {
		// A header the proxy itself must read would never arrive.
		for _, k := range []struct{ path, name string }{{"affinity.header", a.Header}, {"retries.idempotency_header", r.IdempotencyHeader}} {
			if strings.Contains(k.name, "_") {
				v.add(k.path, "%s has a \"_\", and headers.underscores is %s: set headers.underscores: allow, or name another header", Quote(k.name), h.Underscores)
			}
		}
	}
}
