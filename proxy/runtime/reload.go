package runtime

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/health"
	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/store"
	"github.com/spillway/spillway/proxy/telemetry"
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
	// Recorders learn of every request the proxy.Handler finishes (metrics, recent requests),
	// after Live and AccessLog.
	Recorders []proxy.Recorder
	// Live counts the traffic the state API shows; nil: a new telemetry.Live.
	Live Live
	// AccessLog is configured from every config loaded; nil: a new telemetry.AccessLog.
	AccessLog AccessLog
	// Metrics, if set, gets Spillway's metrics (telemetry.Metrics, reading the Reloader
	// at scrape time).
	Metrics prometheus.Registerer
	// Checks run on every config loaded, besides proxy.CheckTLSFiles.
	Checks []configs.Check
	// Now is the clock of ramps and of the change log; nil: time.Now.
	Now func() time.Time
	// OpenStore opens the store of the runtime state for the config first loaded; nil:
	// OpenStore (state.file, or memory only).
	OpenStore func(*configs.Config) (store.Store, error)
}

// OpenStore is the runtime state's store that cfg asks for: the state file when it has a
// `state` section, else memory only.
func OpenStore(cfg *configs.Config) (store.Store, error) {
	if st := cfg.State; st != nil && st.File != "" {
		return store.OpenFile(st.File, st.Keep)
	}
	return store.NewMemory(0), nil
}

// Reloader owns the running configuration: the long-lived state (Registry, passive
// health), the proxy.Handler, and the current generation — a proxy.Table and its background work. It
// replaces the generation on Reload (Load → Validate → proxy.Build → start → swap → stop the old),
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
	handler  *proxy.Handler
	live     Live      // nil: none
	access   AccessLog // never nil

	ctx        context.Context // Start's: the parent of generations and ramps
	wg         sync.WaitGroup  // ramps
	mu         sync.Mutex      // serialises reloads and changes; guards the fields below
	gen        *generation
	number     int64 // generation number, from 1
	loaded     time.Time
	sum        [sha256.Size]byte      // of the file the current generation was loaded from
	refusedSum [sha256.Size]byte      // of the file last refused
	stateRev   int64                  // the newest store revision applied (a fleet's; see applyState)
	store      store.Store            // the runtime state's: overrides, drains, the audit trail
	weights    map[string]*override   // the overrides in effect
	drained    map[string]store.Drain // the drains in effect

	reloads [2]atomic.Uint64 // [0] success, [1] failure
	ready   atomic.Bool
	cluster atomic.Pointer[func() ClusterState] // SetCluster's
	serving atomic.Pointer[Serving]             // the generation served, for readers that must not wait on mu
}

// generation is one config's proxy.Table and the context of its background work.
type generation struct {
	cfg    *configs.Config
	table  *proxy.Table
	cancel context.CancelFunc
	done   chan struct{} // closed when RunTable has returned
}

// Change is one entry of the audit trail.
type Change = store.Change

// maxChanges is how many changes the state API lists (GET /api/v1/changes pages the rest).
const maxChanges = 50

// NewReloader returns a Reloader for opts.Path; Start loads it.
func NewReloader(opts ReloaderOptions) *Reloader {
	r := &Reloader{opts: opts, log: opts.Log, audit: opts.Audit, now: opts.Now,
		reg: balancer.NewRegistry(), weights: map[string]*override{}, drained: map[string]store.Drain{}}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	if r.audit == nil {
		r.audit = r.log.Named("audit")
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.live, r.access = opts.Live, opts.AccessLog
	if r.live == nil {
		r.live = telemetry.NewLive(opts.Now)
	}
	if r.access == nil {
		r.access = telemetry.NewAccessLog(nil)
	}
	if opts.Metrics != nil {
		m := telemetry.NewMetrics(opts.Metrics)
		m.SetSource(r)
		r.opts.Recorders = append([]proxy.Recorder{m}, r.opts.Recorders...)
	}
	return r
}

// Live is the traffic counter the state API reads.
func (r *Reloader) Live() Live { return r.live }

// Start loads the config and serves it: after a nil error, proxy.Handler serves it and the
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
	open := r.opts.OpenStore
	if open == nil {
		open = OpenStore
	}
	if r.store, err = open(cfg); err != nil {
		return fmt.Errorf("runtime state: %w", err)
	}
	saved, err := r.store.Load(ctx)
	if err == nil {
		if err = checkState(saved); err != nil {
			err = fmt.Errorf("runtime state: %w; fix or remove it, as a change through the admin API could not have made it", err)
		}
	}
	if err == nil {
		var commit func()
		if commit, _, err = r.access.Prepare(cfg); err == nil {
			commit()
		}
	}
	if err != nil {
		r.store.Close()
		return err
	}
	r.outliers = proxy.NewOutliers(cfg, r.reg, r.log)
	t, err := proxy.Build(cfg, proxy.Deps{Registry: r.reg, Log: r.log, Outliers: r.outliers})
	if err != nil {
		r.outliers.Close()
		r.access.Close()
		r.store.Close()
		return err
	}
	var recorders []proxy.Recorder
	if r.live != nil {
		recorders = append(recorders, r.live)
	}
	recorders = append(recorders, r.access)
	r.handler = proxy.NewHandler(t, r.log, proxy.WithRecorders(append(recorders, r.opts.Recorders...)...))
	r.gen = &generation{cfg: cfg, table: t}
	r.restore(cfg, saved, !r.fleet())
	r.stateRev = saved.Revision
	if len(r.weights)+len(r.drained) > 0 {
		r.log.Info("runtime state restored", zap.Int("overrides", len(r.weights)), zap.Int("drains", len(r.drained)))
		if r.othersZero(cfg, "", true) {
			r.log.Error("after the runtime state was restored, every site is drained or at weight 0: no request can be served; undrain a site or clear an override")
		}
	}
	t.Activate()
	r.outliers.SetMembers(t.Members())
	r.gen = r.startGeneration(cfg, t)
	r.publish()
	r.number, r.loaded, r.sum = 1, r.now(), sum
	r.ready.Store(true)
	r.log.Info("config loaded", zap.String("source", r.opts.Path), zap.Int64("generation", 1),
		zap.Bool("durable", r.store.Durable()))
	if !r.store.Durable() {
		r.log.Warn("runtime changes are not durable: weight overrides, drains and the audit trail live in memory and are lost on restart; set state.file (or cluster) to keep them")
	}
	if w, ok := r.store.(store.Watcher); ok {
		r.wg.Go(func() {
			if err := w.Watch(ctx, r.applyState); err != nil && ctx.Err() == nil {
				r.log.Error("the runtime state's watch stopped", zap.Error(err))
			}
		})
	}
	return nil
}

// load reads and checks the config file, and returns the hash of what it read (of the
// error, when it could not read it: a file watch that sees the same failure twice reports
// it once).
func (r *Reloader) load() (*configs.Config, [sha256.Size]byte, error) {
	data, err := os.ReadFile(r.opts.Path)
	if err != nil {
		return nil, sha256.Sum256([]byte("unreadable: " + err.Error())), err
	}
	cfg, err := configs.Parse(r.opts.Path, data, r.checks()...)
	return cfg, sha256.Sum256(data), err
}

// checks are what every config file must pass besides validation.
func (r *Reloader) checks() []configs.Check {
	return append([]configs.Check{proxy.CheckTLSFiles}, r.opts.Checks...)
}

// startGeneration runs t's background work under a context of its own.
func (r *Reloader) startGeneration(cfg *configs.Config, t *proxy.Table) *generation {
	ctx, cancel := context.WithCancel(r.ctx)
	g := &generation{cfg: cfg, table: t, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(g.done); RunTable(ctx, t, r.log) }()
	return g
}

// Handler is the proxy's http.Handler; it always serves the current generation.
func (r *Reloader) Handler() *proxy.Handler { return r.handler }

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

// Serving is what a Reloader serves: its config, proxy.Table and proxy.Handler. Immutable.
type Serving struct {
	Config  *configs.Config
	Table   *proxy.Table
	Handler *proxy.Handler
}

// Serving returns what r serves now (the zero Serving before Start), without waiting on a
// reload or an operator's change in progress: a metrics scrape reads it.
func (r *Reloader) Serving() Serving {
	if s := r.serving.Load(); s != nil {
		return *s
	}
	return Serving{}
}

// publish makes the current generation what Serving returns. Called with r.mu held,
// whenever the generation changes.
func (r *Reloader) publish() {
	r.serving.Store(&Serving{Config: r.gen.cfg, Table: r.gen.table, Handler: r.handler})
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
	_, err := r.reloadEntry(source, force)
	return err
}

// reloadEntry is reloadLocked, returning the reload's audit entry (the zero Change when
// nothing was reloaded).
func (r *Reloader) reloadEntry(source string, force bool) (Change, error) {
	cfg, sum, err := r.load()
	if !force && (sum == r.sum || err != nil && sum == r.refusedSum) {
		return Change{}, nil // unchanged, or refused already (a file watch sees a save more than once)
	}
	// Everything that can refuse the config comes before proxy.Build, and proxy.Build changes no
	// running state until the new proxy.Table is activated, so a refused config leaves the
	// running one as it was.
	var commitAccess, discardAccess func()
	if err == nil {
		commitAccess, discardAccess, err = r.access.Prepare(cfg)
	}
	var t *proxy.Table
	if err == nil {
		if t, err = proxy.Build(cfg, proxy.Deps{Registry: r.reg, Log: r.log, Outliers: r.outliers, Previous: r.gen.table}); err != nil {
			discardAccess()
		}
	}
	entry := Change{Who: source, Action: "reload", Before: fmt.Sprintf("generation %d", r.number)}
	if err != nil {
		r.reloads[1].Add(1)
		r.refusedSum = sum
		r.log.Error("config refused; the running config stays", zap.String("source", source),
			zap.String("file", r.opts.Path), zap.Error(err))
		entry.After = "refused: " + cutText(err.Error(), maxReason)
		r.refused(entry, err)
		return Change{}, err
	}
	entry.Items = r.reloadItems(r.gen.cfg, cfg, true)
	commitAccess()
	edits := r.applyControls(cfg, t)
	old := r.gen
	r.gen = r.startGeneration(cfg, t)
	r.outliers.SetPolicy(proxy.OutlierOptions(cfg))
	old.table.Retire()
	r.outliers.SetMembers(t.Members())
	r.handler.Swap(t)
	r.publish()
	t.Activate()
	old.cancel()
	<-old.done
	old.table.Close()
	r.reg.Prune()
	r.number++
	r.loaded, r.sum, r.refusedSum = r.now(), sum, [sha256.Size]byte{}
	r.reloads[0].Add(1)
	r.log.Info("config reloaded", zap.String("source", source), zap.String("file", r.opts.Path),
		zap.Int64("generation", r.number), zap.Int("changes", len(entry.Items)))
	if r.fleet() {
		// Sites this config adds may have state the fleet keeps (a drain made on a replica
		// that had them already): the store's state applies to them now.
		ctx, cancel := context.WithTimeout(r.ctx, storeTimeout)
		if saved, err := r.store.Load(ctx); err == nil && (saved.Revision == 0 || saved.Revision >= r.stateRev) {
			r.stateRev = max(r.stateRev, saved.Revision)
			r.restore(cfg, saved, false)
		}
		cancel()
	}
	entry.After = fmt.Sprintf("generation %d", r.number)
	return r.record(entry, edits...), nil
}

// reloadItems lists what a reload from old to next changes, for its audit entry. A site
// whose configured weight changes while an operator's override holds it gets a note, and
// with warn a warning in the log: the file's weight does not apply until the override is
// cleared.
func (r *Reloader) reloadItems(old, next *configs.Config, warn bool) []store.Item {
	diff := configs.Diff(old, next)
	items := make([]store.Item, len(diff))
	now := r.now()
	for i, d := range diff {
		items[i] = store.Item{Path: d.Path, Before: d.Before, After: d.After}
		site, key, _ := strings.Cut(strings.TrimPrefix(d.Path, "sites."), ".")
		o := r.weights[site]
		if !strings.HasPrefix(d.Path, "sites.") || key != "weight" || o == nil {
			continue
		}
		items[i].Note = fmt.Sprintf("an override (%s, by %s) still wins: clear it to apply the file's weight", formatWeight(o.At(now)), o.By)
		if !warn {
			continue
		}
		r.log.Warn("the config changed a site's weight, but an operator's override still wins",
			zap.String("site", site), zap.String("configured_before", d.Before), zap.String("configured_after", d.After),
			zap.String("in_effect", formatWeight(o.At(now))), zap.String("override_by", o.By))
	}
	return items
}

// applyControls gives a new proxy.Table the operators' weights and drains, and returns the edits
// that drop those of sites the config no longer has (a fleet's stay in the store for the
// replicas that have them).
func (r *Reloader) applyControls(cfg *configs.Config, t *proxy.Table) []store.Edit {
	fleet := r.fleet()
	var edits []store.Edit
	now := r.now()
	for name, o := range r.weights {
		gone := cfg.Site(name) == nil
		if gone || o.Persisted && !now.Before(o.End) {
			// Gone; or written to the file, its ramp over: the file has its weight (its
			// reload had been refused).
			o.stop()
			delete(r.weights, name)
			if gone {
				r.log.Warn("weight override dropped: the site is gone", zap.String("site", name))
			}
			if !fleet {
				edits = append(edits, store.Edit{Site: name, ClearOverride: true})
			}
			continue
		}
		t.Balancer().SetWeight(name, o.At(now))
	}
	for name := range r.drained {
		if cfg.Site(name) == nil {
			delete(r.drained, name)
			if !fleet {
				edits = append(edits, store.Edit{Site: name, Undrain: true})
			}
			continue
		}
		t.Balancer().SetDrained(name, true)
	}
	return edits
}

// ReopenAccessLog reopens the access log file at its path (SIGUSR1, for logrotate); see
// AccessLog.
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
	r.mu.Lock()
	if r.store != nil {
		if err := r.store.Close(); err != nil {
			r.log.Warn("closing the runtime state's store", zap.Error(err))
		}
	}
	r.mu.Unlock()
	r.access.Close()
}

// Preview is what a reload of the config file would change (POST /api/v1/reload?dry_run=true).
type Preview struct {
	DryRun     bool         `json:"dry_run"`    // always true: nothing was applied
	Generation int64        `json:"generation"` // the running one
	Unchanged  bool         `json:"unchanged"`  // the file is the one running
	Changes    []store.Item `json:"changes"`
}

// DryRun reads and checks the config file as a reload would and lists what the reload would
// change, applying nothing. A file a reload would refuse is the same error Reload returns
// (configs.Errors, every problem). It does not open a new access log file, which a reload
// does (and is refused when it cannot).
func (r *Reloader) DryRun() (Preview, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := Preview{DryRun: true, Generation: r.number, Changes: []store.Item{}}
	cfg, sum, err := r.load()
	if err != nil {
		return p, err
	}
	p.Unchanged = sum == r.sum
	if items := r.reloadItems(r.gen.cfg, cfg, false); items != nil {
		p.Changes = items
	}
	return p, nil
}
