package proxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/health"
)

// Errors of the runtime controls, for the admin API to map to statuses.
var (
	ErrNoSite  = errors.New("no such site")
	ErrInvalid = errors.New("invalid change")
)

// ReloaderOptions configure a Reloader.
type ReloaderOptions struct {
	// Path is the config file, read at Start and at every Reload.
	Path string
	// Log gets the operational lines (reloads, failures); nil: none.
	Log *zap.Logger
	// Audit gets one entry per change an operator makes (who, what, before, after); nil:
	// Log named "audit".
	Audit *zap.Logger
	// Recorders learn of every request the Handler finishes (access log, metrics).
	Recorders []Recorder
	// Live counts the traffic the state API shows; nil: a new one.
	Live *Live
	// Metrics, if set, gets Spillway's metrics (see Metrics).
	Metrics prometheus.Registerer
	// Checks run on every config loaded, besides CheckTLSFiles.
	Checks []configs.Check
	// Now is the clock of ramps and of the change log; nil: time.Now.
	Now func() time.Time
}

// Reloader owns the running configuration: the long-lived state (Registry, passive
// health), the Handler, and the current generation — a Table and its background work. It
// replaces the generation on Reload (Load → Validate → Build → start → swap → stop the old),
// keeping every backend's state and the split's position, and it applies the operators'
// runtime changes (weights with ramps, drains), which outlive reloads until cleared. All
// methods are safe for concurrent use.
type Reloader struct {
	opts     ReloaderOptions
	log      *zap.Logger
	audit    *zap.Logger
	now      func() time.Time
	reg      *balancer.Registry
	outliers *health.Outliers
	handler  *Handler
	live     *Live
	access   *AccessLog
	metrics  *Metrics

	ctx     context.Context // Start's: the parent of generations and ramps
	wg      sync.WaitGroup  // ramps
	mu      sync.Mutex      // serialises reloads and changes; guards the fields below
	gen     *generation
	number  int64 // generation number, from 1
	loaded  time.Time
	sum     [sha256.Size]byte // of the file the current generation was loaded from
	weights map[string]*override
	drained map[string]bool
	changes []Change // newest first

	reloads [2]atomic.Uint64 // [0] success, [1] failure
	ready   atomic.Bool
	cluster atomic.Pointer[func() ClusterState] // SetCluster's
}

// generation is one config's Table and the context of its background work.
type generation struct {
	cfg    *configs.Config
	table  *Table
	cancel context.CancelFunc
	done   chan struct{} // closed when Table.Run has returned
}

// override is an operator's weight for a site, reached over a ramp.
type override struct {
	from, to  float64
	ramp      time.Duration
	since     time.Time
	by        string
	persisted bool               // written to the file too: cleared once the ramp is over
	stop      context.CancelFunc // its ramp's
}

// at is the override's effective weight at time now.
func (o *override) at(now time.Time) float64 {
	if o.ramp <= 0 || now.Sub(o.since) >= o.ramp {
		return o.to
	}
	f := float64(now.Sub(o.since)) / float64(o.ramp)
	return o.from + (o.to-o.from)*max(f, 0)
}

// Change is one entry of the audit log.
type Change struct {
	Time   time.Time `json:"time"`
	Who    string    `json:"who"`
	Action string    `json:"action"` // weight, clear_weight, drain, undrain, reload
	Site   string    `json:"site,omitempty"`
	Before string    `json:"before"`
	After  string    `json:"after"`
}

// maxChanges is how many changes the state API lists.
const maxChanges = 50

// NewReloader returns a Reloader for opts.Path; Start loads it.
func NewReloader(opts ReloaderOptions) *Reloader {
	r := &Reloader{opts: opts, log: opts.Log, audit: opts.Audit, now: opts.Now,
		reg: balancer.NewRegistry(), weights: map[string]*override{}, drained: map[string]bool{}}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	if r.audit == nil {
		r.audit = r.log.Named("audit")
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.live = opts.Live
	if r.live == nil {
		r.live = NewLive(r.now)
	}
	r.access = NewAccessLog(nil)
	if opts.Metrics != nil {
		r.metrics = NewMetrics(opts.Metrics)
		r.metrics.attach(r)
	}
	return r
}

// Live is the traffic counter the state API reads.
func (r *Reloader) Live() *Live { return r.live }

// Start loads the config and serves it: after a nil error, Handler serves it and the
// generation's health checks and discovery run until ctx ends. A config with any problem is
// refused with every problem listed (configs.Errors). Call Close after ctx ends.
func (r *Reloader) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ctx = ctx
	cfg, sum, err := r.load()
	if err != nil {
		return err
	}
	if err := r.access.Configure(cfg); err != nil {
		return err
	}
	r.outliers = NewOutliers(cfg, r.reg, r.log)
	t, err := Build(cfg, Deps{Registry: r.reg, Log: r.log, Outliers: r.outliers})
	if err != nil {
		r.outliers.Close()
		r.access.Close()
		return err
	}
	recorders := []Recorder{r.live, r.access}
	if r.metrics != nil {
		recorders = append(recorders, r.metrics)
	}
	r.handler = NewHandler(t, r.log, WithRecorders(append(recorders, r.opts.Recorders...)...))
	t.activate()
	r.outliers.SetMembers(t.Members())
	r.gen = r.startGeneration(cfg, t)
	r.number, r.loaded, r.sum = 1, r.now(), sum
	r.ready.Store(true)
	r.log.Info("config loaded", zap.String("source", r.opts.Path), zap.Int64("generation", 1))
	return nil
}

// load reads and checks the config file.
func (r *Reloader) load() (*configs.Config, [sha256.Size]byte, error) {
	data, err := os.ReadFile(r.opts.Path)
	if err != nil {
		return nil, [sha256.Size]byte{}, err
	}
	cfg, err := configs.Parse(r.opts.Path, data, r.checks()...)
	return cfg, sha256.Sum256(data), err
}

// checks are what every config file must pass besides validation.
func (r *Reloader) checks() []configs.Check {
	return append([]configs.Check{CheckTLSFiles}, r.opts.Checks...)
}

// startGeneration runs t's background work under a context of its own.
func (r *Reloader) startGeneration(cfg *configs.Config, t *Table) *generation {
	ctx, cancel := context.WithCancel(r.ctx)
	g := &generation{cfg: cfg, table: t, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(g.done); t.Run(ctx) }()
	return g
}

// Handler is the proxy's http.Handler; it always serves the current generation.
func (r *Reloader) Handler() *Handler { return r.handler }

// Registry is the long-lived backend state.
func (r *Reloader) Registry() *balancer.Registry { return r.reg }

// Ready reports whether a config is being served and the proxy is not shutting down.
func (r *Reloader) Ready() bool { return r.ready.Load() }

// SetReady marks the proxy ready or not (false from the start of a graceful shutdown).
func (r *Reloader) SetReady(ready bool) { r.ready.Store(ready) }

// Reloads returns how many reloads succeeded and failed.
func (r *Reloader) Reloads() (ok, failed uint64) { return r.reloads[0].Load(), r.reloads[1].Load() }

// Config returns the config being served (nil before Start).
func (r *Reloader) Config() *configs.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen == nil {
		return nil
	}
	return r.gen.cfg
}

// Reload reads the config file again and, if it is valid, makes it the running config;
// source says what asked ("sighup", "file", "api: who"). An invalid config changes
// nothing: the error lists every problem (configs.Errors) and is logged. A file whose
// content has not changed since the last load is not reloaded unless force is set.
func (r *Reloader) Reload(source string, force bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reloadLocked(source, force)
}

func (r *Reloader) reloadLocked(source string, force bool) error {
	cfg, sum, err := r.load()
	if err == nil && !force && sum == r.sum {
		return nil
	}
	// Everything that can refuse the config comes before Build, and Build changes no
	// running state until the new Table is activated, so a refused config leaves the
	// running one as it was.
	var access *accessState
	if err == nil {
		access, err = r.access.prepare(cfg)
	}
	var t *Table
	if err == nil {
		if t, err = Build(cfg, Deps{Registry: r.reg, Log: r.log, Outliers: r.outliers, Previous: r.gen.table}); err != nil {
			r.access.discard(access)
		}
	}
	if err != nil {
		r.reloads[1].Add(1)
		r.log.Error("config refused; the running config stays", zap.String("source", source),
			zap.String("file", r.opts.Path), zap.Error(err))
		return err
	}
	r.access.commit(access)
	r.applyControls(cfg, t)
	old := r.gen
	r.gen = r.startGeneration(cfg, t)
	r.outliers.SetPolicy(outlierOptions(cfg))
	r.outliers.SetMembers(t.Members())
	r.handler.Swap(t)
	t.activate()
	old.cancel()
	<-old.done
	old.table.Close()
	r.reg.Prune()
	r.number++
	r.loaded, r.sum = r.now(), sum
	r.reloads[0].Add(1)
	r.log.Info("config reloaded", zap.String("source", source), zap.String("file", r.opts.Path),
		zap.Int64("generation", r.number))
	return nil
}

// applyControls gives a new Table the operators' weights and drains; those of sites the
// config no longer has are dropped.
func (r *Reloader) applyControls(cfg *configs.Config, t *Table) {
	now := r.now()
	for name, o := range r.weights {
		if cfg.Site(name) == nil {
			o.stop()
			delete(r.weights, name)
			r.log.Warn("weight override dropped: the site is gone", zap.String("site", name))
			continue
		}
		t.picker.SetWeight(name, o.at(now))
	}
	for name := range r.drained {
		if cfg.Site(name) == nil {
			delete(r.drained, name)
			continue
		}
		t.picker.SetDrained(name, true)
	}
}

// ReopenAccessLog reopens the access log file at its path (SIGUSR1, for logrotate); see
// AccessLog.Reopen.
func (r *Reloader) ReopenAccessLog() (string, error) { return r.access.Reopen() }

// Close stops the current generation's background work and passive health. Call it once
// the server has stopped; the ramps stop with Start's context.
func (r *Reloader) Close() {
	r.mu.Lock()
	g := r.gen
	r.mu.Unlock()
	if g != nil {
		g.cancel()
		<-g.done
		g.table.Close()
	}
	r.wg.Wait()
	if r.outliers != nil {
		r.outliers.Close()
	}
	r.access.Close()
}

// SetWeight makes weight the weight of site, reached linearly over ramp (0: at once),
// until ClearWeight; it survives reloads. With persist the file is changed too (see
// persistWeight). who is recorded in the audit log.
func (r *Reloader) SetWeight(site string, weight int, ramp time.Duration, who string, persist bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg := r.gen.cfg
	s := cfg.Site(site)
	switch {
	case s == nil:
		return fmt.Errorf("%w %q", ErrNoSite, site)
	case weight < 0 || weight > configs.MaxWeight:
		return fmt.Errorf("%w: weight must be between 0 and %d, got %d", ErrInvalid, configs.MaxWeight, weight)
	case ramp < 0 || ramp > time.Hour:
		return fmt.Errorf("%w: ramp must be between 0s and 1h, got %s", ErrInvalid, ramp)
	case weight == 0 && r.othersZero(cfg, site, false):
		return fmt.Errorf("%w: every site would have weight 0", ErrInvalid)
	}
	if persist {
		if err := persistWeight(r.opts.Path, site, weight, r.sum, r.checks()...); err != nil {
			return fmt.Errorf("persist: %w", err)
		}
	}
	now := r.now()
	before := r.effectiveWeight(site, now)
	if o := r.weights[site]; o != nil {
		o.stop()
	}
	o := &override{from: before, to: float64(weight), ramp: ramp, since: now, by: who, persisted: persist, stop: func() {}}
	r.weights[site] = o
	r.gen.table.picker.SetWeight(site, o.at(now))
	if ramp > 0 {
		r.startRamp(site, o)
	} else if persist {
		delete(r.weights, site) // the file says so now
	}
	after := fmt.Sprint(weight)
	if ramp > 0 {
		after += " (ramp " + ramp.String() + ")"
	}
	var reloadErr error
	if persist {
		after += " (persisted)"
		// The file changed: load it now rather than when the watch sees it. It passed
		// every check before it was written; should the reload still be refused (the file
		// changed again meanwhile), the override keeps the weight in effect.
		if reloadErr = r.reloadLocked("api: "+who, false); reloadErr != nil {
			r.weights[site] = o
			after += " (its reload was refused: in effect as an override)"
		}
	}
	r.record(Change{Time: now, Who: who, Action: "weight", Site: site, Before: formatWeight(before), After: after})
	if reloadErr != nil {
		return fmt.Errorf("the weight is in effect and written to the file, but the file's reload was refused: %w", reloadErr)
	}
	return nil
}

func formatWeight(w float64) string { return fmt.Sprintf("%.4g", w) }

// othersZero reports whether every site but site has effective weight 0 or is drained, as
// a config may not have (configs.Validate). With elastic, a weight-0 elastic site counts as
// taking traffic, as it does when nothing else can (for drains: drain idc1 and the burst
// pool takes it all).
func (r *Reloader) othersZero(cfg *configs.Config, site string, elastic bool) bool {
	now := r.now()
	for _, s := range cfg.Sites {
		if s.Name != site && !r.drained[s.Name] && ((elastic && s.Elastic) || r.effectiveWeight(s.Name, now) > 0) {
			return false
		}
	}
	return true
}

// effectiveWeight is site's weight now: its override's, or the config's.
func (r *Reloader) effectiveWeight(site string, now time.Time) float64 {
	if o := r.weights[site]; o != nil {
		return o.at(now)
	}
	if s := r.gen.cfg.Site(site); s != nil {
		return float64(s.Weight)
	}
	return 0
}

// rampStep is how often a ramp moves the weight.
const rampStep = 100 * time.Millisecond

// startRamp moves site's weight along o until its ramp is over or it is replaced.
func (r *Reloader) startRamp(site string, o *override) {
	ctx, cancel := context.WithCancel(r.ctx)
	o.stop = cancel
	r.wg.Go(func() {
		tick := time.NewTicker(rampStep)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			r.mu.Lock()
			if r.weights[site] != o { // replaced or cleared meanwhile
				r.mu.Unlock()
				return
			}
			now := r.now()
			r.gen.table.picker.SetWeight(site, o.at(now))
			over := now.Sub(o.since) >= o.ramp
			if over && o.persisted {
				// The file has the weight: it applies from now, with any edit made since.
				delete(r.weights, site)
				if s := r.gen.cfg.Site(site); s != nil {
					r.gen.table.picker.SetWeight(site, float64(s.Weight))
				}
			}
			r.mu.Unlock()
			if over {
				return
			}
		}
	})
}

// ClearWeight drops the override of site: its configured weight applies again at once.
func (r *Reloader) ClearWeight(site, who string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.gen.cfg.Site(site)
	if s == nil {
		return fmt.Errorf("%w %q", ErrNoSite, site)
	}
	now := r.now()
	before := r.effectiveWeight(site, now)
	if o := r.weights[site]; o != nil {
		o.stop()
		delete(r.weights, site)
	}
	r.gen.table.picker.SetWeight(site, float64(s.Weight))
	r.record(Change{Time: now, Who: who, Action: "clear_weight", Site: site,
		Before: formatWeight(before), After: fmt.Sprint(s.Weight) + " (configured)"})
	return nil
}

// SetDrained drains site (no new requests, not even spillover; in-flight ones finish;
// sessions map elsewhere) or undrains it. It survives reloads until undone.
func (r *Reloader) SetDrained(site string, drained bool, who string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen.cfg.Site(site) == nil {
		return fmt.Errorf("%w %q", ErrNoSite, site)
	}
	if drained && r.othersZero(r.gen.cfg, site, true) {
		return fmt.Errorf("%w: draining %s would leave no site in the split", ErrInvalid, site)
	}
	before := r.drained[site]
	if drained {
		r.drained[site] = true
	} else {
		delete(r.drained, site)
	}
	r.gen.table.picker.SetDrained(site, drained)
	action := map[bool]string{true: "drain", false: "undrain"}[drained]
	r.record(Change{Time: r.now(), Who: who, Action: action, Site: site,
		Before: map[bool]string{true: "drained", false: "serving"}[before],
		After:  map[bool]string{true: "drained", false: "serving"}[drained]})
	return nil
}

// ReloadBy is Reload on an operator's request, recorded in the audit log.
func (r *Reloader) ReloadBy(who string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	before := r.number
	err := r.reloadLocked("api: "+who, true)
	after := fmt.Sprintf("generation %d", r.number)
	if err != nil {
		after = "refused: " + err.Error()
	}
	r.record(Change{Time: r.now(), Who: who, Action: "reload", Before: fmt.Sprintf("generation %d", before), After: after})
	return err
}

// record adds c to the change log and writes it to the audit log.
func (r *Reloader) record(c Change) {
	r.changes = slices.Insert(r.changes, 0, c)
	if len(r.changes) > maxChanges {
		r.changes = r.changes[:maxChanges]
	}
	r.audit.Info("change", zap.String("who", c.Who), zap.String("action", c.Action),
		zap.String("site", c.Site), zap.String("before", c.Before), zap.String("after", c.After))
}

// outlierOptions are the passive health settings of cfg.
func outlierOptions(cfg *configs.Config) health.OutlierOptions {
	o := cfg.Outlier
	return health.OutlierOptions{ConsecutiveFailures: o.ConsecutiveFailures, BaseEjection: o.BaseEjection,
		MaxEjection: o.MaxEjection, MaxEjectionPercent: o.MaxEjectionPercent}
}
