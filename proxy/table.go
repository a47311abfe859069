// Package proxy is Spillway's data plane: the Handler that forwards each request to the
// backend the balancer picks, the immutable Table it reads, and Build, the one place a
// configs.Config becomes runtime state.
package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"

	"go.uber.org/zap"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/health"
)

// The Registry takes health reports for the backends it tracks.
var _ health.Sink = (*balancer.Registry)(nil)

// Table is one compiled config: the balancer's Picker over the sites, and the forwarders
// and transports for each backend. It is immutable once built; a Handler swaps whole Tables,
// and a request keeps the Table it started with to the end.
type Table struct {
	picker *balancer.Picker
	sites  []siteRoute
}

type siteRoute struct {
	name      string
	transport *http.Transport
	// backends is in the order of the site's Options, so a Lease's indexes find the forwarder.
	backends []forwarder
}

// forwarder sends a request to one backend. It is the seam between the Handler's policy and
// the mechanism that moves bytes; today httputil.ReverseProxy.
type forwarder interface {
	ServeHTTP(http.ResponseWriter, *http.Request)
}

// Deps are what Build needs besides the config: long-lived state and shared services.
type Deps struct {
	// Registry holds per-backend state across Tables; required.
	Registry *balancer.Registry
	// Log receives one line per failed request; nil means no logging.
	Log *zap.Logger
	// Buffers is shared by every forwarder for copying bodies; nil means a new pool.
	Buffers httputil.BufferPool
}

// Build compiles cfg, which must have passed configs.Validate, into a Table. State for
// backends already in d.Registry (in-flight, health, the split's position) carries over.
// Build starts no goroutines and opens no sockets; a Table that is never served needs only
// Close.
func Build(cfg *configs.Config, d Deps) (*Table, error) {
	if d.Registry == nil {
		return nil, errors.New("proxy.Build: nil Registry")
	}
	if err := CheckSupported(cfg); err != nil {
		return nil, err
	}
	if d.Log == nil {
		d.Log = zap.NewNop()
	}
	if d.Buffers == nil {
		d.Buffers = NewBufferPool()
	}
	opts := balancer.Options{Sites: make([]balancer.SiteOptions, len(cfg.Sites))}
	t := &Table{sites: make([]siteRoute, len(cfg.Sites))}
	for i, s := range cfg.Sites {
		opts.Sites[i] = balancer.SiteOptions{Name: s.Name, Weight: s.Weight, Backends: s.Backends}
		tr := newTransport(cfg.Timeouts)
		route := siteRoute{name: s.Name, transport: tr}
		for _, raw := range s.Backends {
			target, err := url.Parse(raw)
			if err != nil {
				return nil, fmt.Errorf("site %s: backend %q: %w", s.Name, raw, err)
			}
			route.backends = append(route.backends, newForwarder(target, tr, d))
		}
		t.sites[i] = route
	}
	p, err := balancer.NewPicker(d.Registry, opts)
	if err != nil {
		return nil, err
	}
	t.picker = p
	return t, nil
}

// Close releases the Table's idle backend connections and stops health changes from
// reaching it. Requests still using the Table finish normally; their connections close when
// they are done.
func (t *Table) Close() {
	t.picker.Close()
	for _, s := range t.sites {
		s.transport.CloseIdleConnections()
	}
}

// Sites lists the long-lived state of the Table's sites, in config order.
func (t *Table) Sites() []*balancer.Site { return t.picker.Sites() }

// CheckSupported refuses config keys whose features this version does not have yet:
// accepting them and doing nothing would let an operator believe, say, that health checks
// run. Build runs it; pass it to configs.Load too, so that these problems are reported with
// all the others in one list. It is a configs.Check.
func CheckSupported(cfg *configs.Config) error {
	var errs configs.Errors
	refuse := func(set bool, path, what string) {
		if set {
			errs = append(errs, cfg.Errorf(path, "%s is not available in this version of Spillway yet; remove the key (README: Roadmap)", what))
		}
	}
	refuse(cfg.Has("listen.https") || cfg.Listen.HTTPS != "", "listen.https", "the HTTPS listener")
	refuse(cfg.Has("tls") || cfg.TLS != nil, "tls", "front TLS")
	refuse(cfg.Has("admin"), "admin", "the admin API")
	refuse(cfg.Has("spillover"), "spillover", "spillover")
	refuse(cfg.Has("affinity") || cfg.Affinity != (configs.Affinity{}), "affinity", "session affinity")
	refuse(cfg.Has("retries"), "retries", "retries")
	for i, s := range cfg.Sites {
		p := fmt.Sprintf("sites[%d]", i)
		refuse(cfg.Has(p+".elastic") || s.Elastic, p+".elastic", "an elastic (spillover) site")
		refuse(cfg.Has(p+".discovery") || s.Discovery != nil, p+".discovery", "discovery")
		refuse(cfg.Has(p+".max_inflight") || s.MaxInflight != 0, p+".max_inflight", "a per-backend limit")
		refuse(cfg.Has(p+".health") || s.Health != nil, p+".health", "active health checking")
		refuse(cfg.Has(p+".tls") || s.TLS != nil, p+".tls", "TLS settings for backends")
		refuse(cfg.Has(p+".slow_start") || s.SlowStart != 0, p+".slow_start", "slow start")
	}
	if len(errs) > 0 {
		errs.Sort()
		return errs
	}
	return nil
}
