package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/bench/sim"
	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/admin"
	"github.com/spillway/spillway/proxy/frontend"
	"github.com/spillway/spillway/proxy/runtime"
	"github.com/spillway/spillway/proxy/telemetry"
)

// SiteSpec is one simulated site: its place in the split and its backends. Each backend
// serves at most Limit requests at once (beyond that it answers 503), and the proxy is told
// the same limit (max_inflight), so a 503 from a backend means the proxy overfilled it.
type SiteSpec struct {
	Name    string
	Weight  int
	Elastic bool
	// Backends is the number of static backends; ignored with Group.
	Backends int
	Limit    int
	// Group makes the site an autoscaling group found by file discovery.
	Group *GroupSpec
}

// GroupSpec is an autoscaling site: how it scales, and how the proxy finds its instances.
type GroupSpec struct {
	Min, Max                    int
	ScaleOutDelay, ScaleInDelay time.Duration
	Drain                       time.Duration // a removed instance serves this long after it left the file
	SlowStart                   time.Duration // the proxy's ramp for a new instance
	Interval                    time.Duration // discovery.interval (the file is watched as well)
	OnChange                    func(instances int, added bool)
}

// EnvOptions describe a simulated deployment with the proxy in front of it.
type EnvOptions struct {
	Sites []SiteSpec
	// Service is every backend's service time.
	Service sim.Dist
	// HealthInterval is the active health checks' interval (fall 3: a probe slowed by a busy CPU is not an outage; rise 2); 0: none.
	HealthInterval time.Duration
	// QueueSize and QueueTimeout are spillover.queue's.
	QueueSize    int
	QueueTimeout time.Duration
	// Dir holds the proxy's config file and the targets file of a Group site; required.
	Dir string
	// Seed makes the backends' random service times repeatable.
	Seed uint64
	// Log receives the proxy's logs; nil: none.
	Log *zap.Logger
	// Admin serves the proxy's admin API (state, /metrics with the Go and process
	// collectors, explain) on a loopback port of its own, as `spillway run` does with
	// admin.listen: Env.AdminURL. Reads are open on loopback; no changes are allowed.
	Admin bool
	// Affinity is the config's affinity (e.g. "{cookie: SESSION}"); "": none.
	Affinity string
}

// Env is a simulated deployment on loopback (the backends of every site) and Spillway in
// front of it, in this process, built exactly as `spillway run` builds it. Close stops all.
type Env struct {
	// URL is the proxy's, e.g. "http://127.0.0.1:41234".
	URL string
	// Sites are the site names in config order.
	Sites []string
	// Backends are each static site's simulated backends.
	Backends map[string][]*sim.Backend
	// Group is the autoscaling site's group, if any.
	Group *sim.Group
	// AdminURL is the admin API's, with EnvOptions.Admin; "" without.
	AdminURL string

	opts     EnvOptions
	weights  []int
	targets  string // the Group's targets file
	reloader *runtime.Reloader
	handler  *proxy.Handler
	path     string // the proxy's config file
	srv      *frontend.Server
	served   chan error
	adminSrv *http.Server
	adminOut chan error
	log      *zap.Logger

	ctx    context.Context // lives until Close; the Reloader and the Group run under it
	cancel context.CancelFunc
	group  sync.WaitGroup // the Group's Run

	mu      sync.Mutex // serialises reloads
	swapped time.Time  // when SetWeights last swapped a Table in
}

// StartEnv starts the backends, then the proxy on a free loopback port.
func StartEnv(o EnvOptions) (_ *Env, err error) {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Dir == "" {
		return nil, errors.New("bench: EnvOptions.Dir is required")
	}
	e := &Env{opts: o, Backends: map[string][]*sim.Backend{}, log: o.Log}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	for _, s := range o.Sites {
		if err := e.startSite(s); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e.URL = "http://" + ln.Addr().String()
	if err := e.startProxy(); err != nil {
		ln.Close()
		return nil, err
	}
	e.handler = e.reloader.Handler()
	e.srv = frontend.NewServer(e.reloader.Config(), e.handler, e.log)
	e.served = make(chan error, 1)
	go func() { e.served <- e.srv.Serve(ln) }()
	if e.Group != nil {
		e.group.Go(func() {
			if err := e.Group.Run(e.ctx); err != nil {
				e.log.Error("autoscaling group", zap.Error(err))
			}
		})
	}
	return e, nil
}

// startSite starts site s's simulated backends, or its autoscaling group (run later, by
// StartEnv, under e's context).
func (e *Env) startSite(s SiteSpec) error {
	o := &e.opts
	e.Sites = append(e.Sites, s.Name)
	e.weights = append(e.weights, s.Weight)
	inst := sim.Options{Site: s.Name, Service: o.Service, Capacity: s.Limit, Overflow: sim.Reject,
		HealthPath: "/healthz", Seed: o.Seed}
	if g := s.Group; g != nil {
		e.targets = filepath.Join(o.Dir, s.Name+"-targets.txt")
		var err error
		e.Group, err = sim.StartGroup(sim.GroupOptions{Instance: inst, TargetsFile: e.targets,
			Min: g.Min, Max: g.Max, Check: 50 * time.Millisecond, ScaleOutAt: 0.75, ScaleInBelow: 0.25,
			ScaleOutDelay: g.ScaleOutDelay, ScaleInDelay: g.ScaleInDelay, Drain: g.Drain, Warmup: g.SlowStart,
			OnChange: g.OnChange})
		return err
	}
	for j := range s.Backends {
		inst.Name = fmt.Sprintf("%s-%d", s.Name, j+1)
		inst.Seed = o.Seed + uint64(len(e.Sites)*100+j)
		b, err := sim.StartWith("127.0.0.1:0", inst)
		if err != nil {
			return err
		}
		e.Backends[s.Name] = append(e.Backends[s.Name], b)
	}
	return nil
}

// startProxy writes the proxy's config and starts it as `spillway run` does, a Reloader on
// the config file, with its admin API when EnvOptions.Admin.
func (e *Env) startProxy() error {
	e.path = filepath.Join(e.opts.Dir, "spillway.yaml")
	if err := e.writeConfig(e.weights); err != nil {
		return err
	}
	ro := runtime.ReloaderOptions{Path: e.path, Log: e.log}
	var reg *prometheus.Registry
	var recent *telemetry.Recent
	if e.opts.Admin {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		recent = telemetry.NewRecent(32768)
		ro.Recorders, ro.Metrics = []proxy.Recorder{recent}, reg
	}
	e.reloader = runtime.NewReloader(ro)
	if err := e.reloader.Start(e.ctx); err != nil {
		e.reloader = nil
		return err
	}
	if e.opts.Admin {
		return e.startAdmin(reg, recent)
	}
	return nil
}

// startAdmin serves the admin API on a loopback port of its own: reads open, no changes.
func (e *Env) startAdmin(reg *prometheus.Registry, recent *telemetry.Recent) error {
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	e.AdminURL = "http://" + aln.Addr().String()
	e.adminSrv = &http.Server{Handler: admin.New(admin.Options{Control: e.reloader, OpenReads: true,
		Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), Recent: recent, Log: e.log}),
		ReadHeaderTimeout: 10 * time.Second}
	e.adminOut = make(chan error, 1)
	go func() { e.adminOut <- e.adminSrv.Serve(aln) }()
	return nil
}

// writeConfig writes the proxy's config over the simulated sites with the given weights,
// replacing the file atomically (as an operator's tooling should), so that a reload reads
// it whole.
func (e *Env) writeConfig(weights []int) error {
	tmp := e.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(e.config(weights)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, e.path)
}

// config is the proxy's config file over the simulated sites with the given weights.
func (e *Env) config(weights []int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "listen: {http: %q}\nsites:\n", strings.TrimPrefix(e.URL, "http://"))
	for i, s := range e.opts.Sites {
		fmt.Fprintf(&sb, "  - name: %s\n    weight: %d\n    max_inflight: %d\n", s.Name, weights[i], s.Limit)
		if s.Elastic {
			sb.WriteString("    elastic: true\n")
		}
		if g := s.Group; g != nil {
			fmt.Fprintf(&sb, "    discovery: {file: %q, interval: %s}\n", e.targets, g.Interval)
			if g.SlowStart > 0 {
				fmt.Fprintf(&sb, "    slow_start: %s\n", g.SlowStart)
			}
		} else {
			var urls []string
			for _, b := range e.Backends[s.Name] {
				urls = append(urls, fmt.Sprintf("%q", b.URL()))
			}
			fmt.Fprintf(&sb, "    backends: [%s]\n", strings.Join(urls, ", "))
		}
		if iv := e.opts.HealthInterval; iv > 0 {
			fmt.Fprintf(&sb, "    health: {path: /healthz, interval: %s, timeout: %s, rise: 2, fall: 3}\n", iv, iv)
		}
	}
	if e.opts.Affinity != "" {
		fmt.Fprintf(&sb, "affinity: %s\n", e.opts.Affinity)
	}
	qs, qt := e.opts.QueueSize, e.opts.QueueTimeout
	if qt <= 0 {
		qt = 2 * time.Second
	}
	fmt.Fprintf(&sb, "spillover: {resume: 0.8, queue: {size: %d, timeout: %s}}\n", qs, qt)
	sb.WriteString("retries: {attempts: 2}\n")
	sb.WriteString("timeouts: {connect: 1s, response_header: 10s, shutdown: 2s}\n")
	return sb.String()
}

// SetWeights changes the split to weights (in Sites order) as an operator does: it rewrites
// the config file and reloads it (runtime.Reloader.Reload: a new Table over the same
// Registry, so in-flight counts, health and the split's position carry over, swapped in
// while the old one finishes its requests).
func (e *Env) SetWeights(weights []int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(weights) != len(e.Sites) {
		return fmt.Errorf("set weights: want %d weights, got %d", len(e.Sites), len(weights))
	}
	if err := e.writeConfig(weights); err != nil {
		return fmt.Errorf("set weights: %w", err)
	}
	if err := e.reloader.Reload("bench", false); err != nil {
		return fmt.Errorf("set weights: %w", err)
	}
	e.swapped = time.Now()
	e.weights = append([]int(nil), weights...)
	return nil
}

// Swapped is when SetWeights last swapped a new Table in: requests that reach the proxy
// after it are split by the new weights.
func (e *Env) Swapped() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.swapped
}

// Weights are the weights of the split now, in Sites order.
func (e *Env) Weights() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]int(nil), e.weights...)
}

// Status is every site's capacity and state now.
func (e *Env) Status() []balancer.SiteStatus { return e.handler.Table().Status() }

// Spills is the number of requests that went to another site than the split preferred.
func (e *Env) Spills() (total uint64, bySite map[string]uint64) {
	bySite = map[string]uint64{}
	for _, c := range e.reloader.Registry().Spills() {
		total += c.N
		bySite[c.From+">"+c.To] += c.N
	}
	return total, bySite
}

// Sheds is the number of requests refused for lack of capacity.
func (e *Env) Sheds() uint64 {
	var n uint64
	for _, c := range e.reloader.Registry().Sheds() {
		n += c
	}
	return n
}

// Retries is the number of retries the proxy made, by reason.
func (e *Env) Retries() map[string]uint64 { return e.handler.Retries() }

// Close stops the proxy, its background work, the autoscaling group and every backend.
func (e *Env) Close() error {
	var errs []error
	if e.srv != nil {
		e.srv.Close()
		if err := <-e.served; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	if e.adminSrv != nil {
		e.adminSrv.Close()
		if err := <-e.adminOut; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	e.cancel()
	e.group.Wait()
	if e.reloader != nil {
		e.reloader.Close()
	}
	if e.Group != nil {
		e.Group.Close()
	}
	for _, bs := range e.Backends {
		for _, b := range bs {
			errs = append(errs, b.Close())
		}
	}
	return errors.Join(errs...)
}
