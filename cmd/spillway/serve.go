package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/admin"
	"github.com/spillway/spillway/proxy/cluster"
	"github.com/spillway/spillway/proxy/frontend"
	"github.com/spillway/spillway/proxy/runtime"
	"github.com/spillway/spillway/proxy/store"
	"github.com/spillway/spillway/proxy/telemetry"
)

// cmdRun runs the proxy on a config file until ctx is done (SIGTERM or SIGINT), then stops
// accepting and gives in-flight requests timeouts.shutdown to finish. A config with any
// problem is refused before anything listens. SIGHUP, a change of the file and the admin API
// reload it; SIGUSR1 reopens the access log file (logrotate).
func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (YAML)")
	level := zapcore.InfoLevel
	fs.Var(&level, "log-level", "log level: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: spillway run -config FILE [-log-level LEVEL]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitError{2}
	}
	if *path == "" || fs.NArg() != 0 {
		fs.Usage()
		return exitError{2}
	}
	log := newJSONLogger(stderr, level)
	defer log.Sync()
	log = log.With(zap.String("config", *path))

	in, err := startInstance(ctx, instanceOptions{path: *path, log: log,
		tokenEnv: os.Getenv("SPILLWAY_ADMIN_TOKEN"), listen: listenTCP})
	if err != nil {
		var errs configs.Errors
		if errors.As(err, &errs) {
			printConfigError(stderr, err)
			return exitError{1}
		}
		return err
	}
	return in.serve(ctx)
}

func listenTCP(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

// instanceOptions are what a running proxy needs besides its config file.
type instanceOptions struct {
	path     string
	log      *zap.Logger
	tokenEnv string                                  // SPILLWAY_ADMIN_TOKEN
	tokens   admin.Tokens                            // used instead of token_file and tokenEnv when set (the demo)
	listen   func(addr string) (net.Listener, error) // for listen.http, listen.https and admin.listen
	ls       *listeners                              // already open, instead of listen.http and .https (tests)
}

// instance is a loaded config with its listeners open, ready to serve.
type instance struct {
	reloader *runtime.Reloader
	cfg      *configs.Config
	ls       listeners
	adminLn  net.Listener // nil without an admin section
	admin    http.Handler
	log      *zap.Logger
	stop     context.CancelFunc // of the background work (health, discovery, ramps)
}

// startInstance loads the config and opens the listeners. The background work runs under a
// context that outlives ctx until serve has drained the server. On error nothing is left
// running.
func startInstance(ctx context.Context, o instanceOptions) (_ *instance, err error) {
	var first *configs.Config // set once started: what a reload may not change
	start := preflight(o.tokenEnv, o.tokens)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerBuildInfo(reg)
	recent := telemetry.NewRecent(1) // sized by the config once it is loaded
	var r *runtime.Reloader
	var fleet *cluster.Fleet // with a cluster section: this replica's membership (cluster.go)
	r = runtime.NewReloader(runtime.ReloaderOptions{Path: o.path, Log: o.log,
		Recorders: []proxy.Recorder{recent}, OpenStore: func(cfg *configs.Config) (store.Store, error) {
			if cfg.Cluster == nil {
				return runtime.OpenStore(cfg)
			}
			var err error
			fleet, err = openFleet(ctx, cfg, r, o.log)
			if err != nil {
				return nil, err
			}
			return fleet.Store(0), nil
		},
		Checks: []configs.Check{func(c *configs.Config) error {
			if first == nil {
				return start(c) // what validate checks too
			}
			return sameServers(first, c)
		}}, Metrics: reg})
	background, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	// Leave the fleet last, once the servers have drained (serve stops the background after
	// them): the requests in flight hold their part of each backend's budget until then.
	stop := func() {
		stopBackground()
		if fleet != nil {
			fleet.Close()
		}
	}
	defer func() {
		if err != nil {
			stop()
			r.Close()
		}
	}()
	if err := r.Start(background); err != nil {
		return nil, err
	}
	cfg := r.Config()
	first = cfg
	recent.Resize(cfg.Admin.ExplainRequests) // before anything is served
	if fleet != nil {
		if err := joinFleet(ctx, fleet, cfg, r, reg, o.log); err != nil {
			return nil, err
		}
	}
	in := &instance{reloader: r, cfg: cfg, log: o.log, stop: stop}
	if cfg.Admin.Listen != "" {
		tokens := o.tokens
		if tokens == nil {
			if tokens, err = admin.LoadTokens(cfg.Admin.TokenFile, o.tokenEnv); err != nil {
				return nil, err
			}
		}
		loopback := admin.IsLoopback(cfg.Admin.Listen) // preflight refused no token off loopback
		in.admin = admin.New(admin.Options{Control: r, Tokens: tokens, OpenReads: loopback,
			Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), Recent: recent, Log: o.log.Named("admin")})
		if in.adminLn, err = o.listen(cfg.Admin.Listen); err != nil {
			return nil, fmt.Errorf("admin.listen: %w", err)
		}
	}
	if o.ls != nil {
		in.ls = *o.ls
	} else if in.ls, err = openListeners(cfg, o.listen); err != nil {
		if in.adminLn != nil {
			in.adminLn.Close()
		}
		return nil, err
	}
	return in, nil
}

// listeners are the proxy's client listeners; one of them may be nil (not configured).
type listeners struct {
	http  net.Listener // listen.http: HTTP/1.1 and h2c, or the redirect to HTTPS
	https net.Listener // listen.https: TLS
}

// openListeners listens on the config's client addresses.
func openListeners(cfg *configs.Config, listen func(string) (net.Listener, error)) (listeners, error) {
	var ls listeners
	var err error
	if cfg.Listen.HTTP != "" {
		if ls.http, err = listen(cfg.Listen.HTTP); err != nil {
			return ls, fmt.Errorf("listen.http: %w", err)
		}
	}
	if cfg.Listen.HTTPS != "" {
		if ls.https, err = listen(cfg.Listen.HTTPS); err != nil {
			ls.close()
			return listeners{}, fmt.Errorf("listen.https: %w", err)
		}
	}
	return ls, nil
}

func (ls listeners) close() {
	for _, ln := range []net.Listener{ls.http, ls.https} {
		if ln != nil {
			ln.Close()
		}
	}
}

// url is the address a newcomer should try: the plain listener's, else the TLS one's.
func (ls listeners) url() string {
	if ls.http != nil {
		return "http://" + ls.http.Addr().String()
	}
	return "https://" + ls.https.Addr().String()
}

// sameServers refuses a reload that changes what the running servers were built with at
// start — the listeners, the admin API and its tokens, front TLS, the client-side limits and
// timeouts, the runtime state's store — since a config that says otherwise must not look applied. Everything else
// (sites, weights, health, retries, spillover, the access log, backend timeouts...) is
// applied by the reload.
func sameServers(first, next *configs.Config) error {
	if first == nil {
		return nil
	}
	var errs configs.Errors
	refuse := func(changed bool, path, what string) {
		if changed {
			errs = append(errs, next.Errorf(path, "%s set at start: restart Spillway to change it", what))
		}
	}
	refuse(next.Listen != first.Listen, "listen", "the listeners are")
	refuse(next.Admin != first.Admin, "admin", "the admin listener and its tokens are")
	refuse(!reflect.DeepEqual(next.TLS, first.TLS), "tls", "front TLS is (static certificate files are reloaded when they change, without a reload)")
	refuse(next.Limits != first.Limits, "limits", "the request limits are")
	refuse(next.Timeouts.ReadHeader != first.Timeouts.ReadHeader, "timeouts.read_header", "the client header timeout is")
	refuse(next.Timeouts.Idle != first.Timeouts.Idle, "timeouts.idle", "the keep-alive idle timeout (clients' side) is")
	refuse(!reflect.DeepEqual(next.State, first.State), "state", "the runtime state's file is")
	refuse(!reflect.DeepEqual(next.Cluster, first.Cluster), "cluster", "the fleet (cluster) is")
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// serve serves the proxy (and the admin API) until ctx is done; then readiness turns false,
// the listeners close, requests in flight get timeouts.shutdown to finish, and everything
// stops. SIGHUP and changes of the config file reload it meanwhile.
func (in *instance) serve(ctx context.Context) error {
	r := in.reloader
	defer r.Close()
	defer in.stop()
	background, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopWatch()
	defer in.watch(background, &wg)()

	front, err := in.newFront()
	if err != nil {
		return err
	}
	if front != nil {
		// Runs on return, after the servers have stopped: certificates are managed for as
		// long as the listeners answer challenges.
		defer front.Stop()
	}
	servers := in.servers(front)
	served := make(chan error, len(servers))
	for _, s := range servers {
		go func() { served <- s.srv.Serve(s.ln) }() // (the proxy's: through the edge, TLS terminated there)
	}
	in.logListening(servers)
	if front != nil {
		front.Start(ctx)
	}

	var failed error
	select {
	case err := <-served: // a listener failed
		failed = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	return in.shutdown(ctx, servers, served, failed)
}

// watch reloads the config on SIGHUP and when its file changes, and reopens the access log
// on SIGUSR1, until ctx is done; wg waits for its goroutines. Call stop on the way out.
func (in *instance) watch(ctx context.Context, wg *sync.WaitGroup) (stop func()) {
	r, log := in.reloader, in.log
	wg.Go(func() {
		if err := r.Watch(ctx); err != nil {
			log.Warn("cannot watch the config file; reload with SIGHUP or the admin API", zap.Error(err))
		}
	})
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				r.Reload("sighup", true) // a refusal is logged with every problem
			case <-usr1:
				reopenAccessLog(r, log)
			}
		}
	})
	return func() {
		signal.Stop(usr1)
		signal.Stop(hup)
	}
}

// newFront prepares front TLS for the https listener; nil without one. On an error it
// closes the listeners.
func (in *instance) newFront() (*frontend.Certs, error) {
	if in.ls.https == nil {
		return nil, nil
	}
	if in.cfg.TLS == nil { // Validate refuses such a config
		in.ls.close()
		return nil, errors.New("listen.https needs a tls section")
	}
	var httpAddr net.Addr // the ACME challenge ports: the listeners' real ones
	if in.ls.http != nil {
		httpAddr = in.ls.http.Addr()
	}
	front, err := frontend.NewCerts(in.cfg.TLS, httpAddr, in.ls.https.Addr(), in.log)
	if err != nil {
		in.ls.close()
		if in.adminLn != nil {
			in.adminLn.Close()
		}
		return nil, err
	}
	return front, nil
}

// server is one of the instance's servers and the listener it serves.
type server struct {
	srv  httpServer
	ln   net.Listener
	tls  bool
	name string
}

// httpServer is a *frontend.Server (the proxy's listeners) or an *http.Server (the admin
// API's).
type httpServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

// servers are the servers of the instance's listeners: the proxy's plain and TLS ones, and
// the admin API's.
func (in *instance) servers(front *frontend.Certs) []server {
	cfg, log := in.cfg, in.log
	var servers []server
	handler := http.Handler(in.reloader.Handler())
	if in.ls.http != nil {
		h := handler
		if cfg.TLS != nil && cfg.TLS.RedirectHTTP && in.ls.https != nil {
			h = frontend.RedirectToHTTPS(in.ls.https.Addr().String())
		}
		if front != nil {
			h = front.WrapHTTP(h) // the ACME HTTP-01 challenge, answered before any redirect
		}
		servers = append(servers, server{frontend.NewServer(cfg, h, log), in.ls.http, false, "http"})
	}
	if in.ls.https != nil {
		h := frontend.WithHSTS(handler, cfg.TLS.HSTS)
		servers = append(servers, server{frontend.NewTLSServer(cfg, h, front.TLSConfig(), log), in.ls.https, true, "https"})
	}
	if in.adminLn != nil {
		servers = append(servers, server{&http.Server{Handler: in.admin, ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout: time.Minute, ErrorLog: zap.NewStdLog(log.Named("admin"))}, in.adminLn, false, "admin"})
	}
	return servers
}

// logListening logs where each server listens, with the split's weights.
func (in *instance) logListening(servers []server) {
	sites := make([]zap.Field, 0, len(in.cfg.Sites))
	for _, s := range in.cfg.Sites {
		sites = append(sites, zap.Int(s.Name, s.Weight))
	}
	for _, s := range servers {
		if s.name == "admin" {
			in.log.Info("admin API listening", zap.String("addr", s.ln.Addr().String()))
			continue
		}
		in.log.Info("listening", zap.String("scheme", s.name), zap.String("addr", s.ln.Addr().String()), zap.Dict("weights", sites...))
	}
}

// shutdown stops the servers once serving ends (failed: because a listener failed):
// readiness turns false, and requests in flight get timeouts.shutdown to finish. It returns
// the first failure of a listener, if any.
func (in *instance) shutdown(ctx context.Context, servers []server, served <-chan error, failed error) error {
	r, log := in.reloader, in.log
	r.SetReady(false)
	if delay := r.Config().Timeouts.DrainDelay; delay > 0 && failed == nil {
		// Readiness is false: load balancers and Kubernetes endpoints stop sending here
		// while the listeners still take what is already on its way.
		log.Info("not ready; draining before the listeners close", zap.Duration("drain_delay", delay))
		t := time.NewTimer(delay)
		<-t.C
	}
	grace := r.Config().Timeouts.Shutdown
	log.Info("shutting down", zap.Duration("grace", grace))
	graceCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	// The proxy's listeners drain together; the admin listener last, so that /readyz
	// answers 503 (not a refused connection) while requests finish.
	stopServer := func(s server) {
		if err := s.srv.Shutdown(graceCtx); err != nil {
			log.Warn("grace period over; closing the remaining connections", zap.String("listener", s.name), zap.Error(err))
			s.srv.Close()
		}
	}
	var shutdown sync.WaitGroup
	for _, s := range servers {
		if s.name != "admin" {
			shutdown.Go(func() { stopServer(s) })
		}
	}
	shutdown.Wait()
	for _, s := range servers {
		if s.name == "admin" {
			stopServer(s)
		}
	}
	remaining := len(servers)
	if failed != nil {
		remaining--
	}
	for range remaining {
		if err := <-served; !errors.Is(err, http.ErrServerClosed) && failed == nil {
			failed = err
		}
	}
	if failed != nil {
		return failed
	}
	log.Info("stopped")
	return nil
}

// reopenAccessLog reopens the access log file (SIGUSR1): after logrotate has renamed it,
// lines go to a new file at the configured path. Nothing happens for stdout and stderr.
func reopenAccessLog(r *runtime.Reloader, log *zap.Logger) {
	path, err := r.ReopenAccessLog()
	switch {
	case err != nil:
		log.Error("cannot reopen the access log; it is still written to the file it had", zap.String("path", path), zap.Error(err))
	case path != "":
		log.Info("access log reopened", zap.String("path", path), zap.String("source", "sigusr1"))
	default:
		output := "off"
		if al := r.Config().AccessLog; al != nil {
			output = al.Output
		}
		log.Info("access log not reopened: it is not a file", zap.String("output", output), zap.String("source", "sigusr1"))
	}
}

// newJSONLogger logs JSON lines to w, for machines.
func newJSONLogger(w io.Writer, level zapcore.Level) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), level))
}

// newConsoleLogger logs readable lines to w, for people.
func newConsoleLogger(w io.Writer, level zapcore.Level) *zap.Logger {
	enc := zap.NewDevelopmentEncoderConfig()
	enc.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05")
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), level))
}
