package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/health"
	"github.com/spillway/spillway/proxy"
)

// cmdRun runs the proxy on a config file until ctx is done (SIGTERM or SIGINT), then stops
// accepting and gives in-flight requests timeouts.shutdown to finish. A config with any
// problem is refused before anything listens.
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
	cfg, table, outliers, err := loadAndBuild(*path, log)
	if err != nil {
		printConfigError(stderr, err)
		return exitError{1}
	}
	ls, err := openListeners(cfg)
	if err != nil {
		table.Close()
		outliers.Close()
		return err
	}
	return serveProxy(ctx, cfg, table, outliers, ls, log)
}

// listeners are the proxy's client listeners; one of them may be nil (not configured).
type listeners struct {
	http  net.Listener // listen.http: HTTP/1.1 and h2c, or the redirect to HTTPS
	https net.Listener // listen.https: TLS
}

// openListeners listens on the config's client addresses.
func openListeners(cfg *configs.Config) (listeners, error) {
	var ls listeners
	var err error
	if cfg.Listen.HTTP != "" {
		if ls.http, err = net.Listen("tcp", cfg.Listen.HTTP); err != nil {
			return ls, fmt.Errorf("listen.http: %w", err)
		}
	}
	if cfg.Listen.HTTPS != "" {
		if ls.https, err = net.Listen("tcp", cfg.Listen.HTTPS); err != nil {
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

// serveProxy serves table on the listeners, with its active health checks running and,
// for TLS, its certificates managed, until ctx is done; then it shuts down gracefully: it
// stops accepting, gives requests in flight timeouts.shutdown to finish, and closes what is
// left. It closes the listeners, table and outliers.
func serveProxy(ctx context.Context, cfg *configs.Config, table *proxy.Table, outliers *health.Outliers, ls listeners, log *zap.Logger) error {
	defer table.Close()
	defer outliers.Close()
	var front *frontTLS
	if ls.https != nil {
		if cfg.TLS == nil { // Validate refuses such a config
			ls.close()
			return errors.New("listen.https needs a tls section")
		}
		var err error
		if front, err = newFrontTLS(cfg, ls, log); err != nil {
			ls.close()
			return err
		}
		// Runs on return, after the servers have stopped: certificates are managed for as
		// long as the listeners answer challenges.
		defer front.stop()
	}
	// Health checks run until the server has stopped, grace period included.
	checks, stopChecks := context.WithCancel(context.WithoutCancel(ctx))
	checked := make(chan struct{})
	if m := table.Monitor(); m != nil {
		go func() { defer close(checked); m.Run(checks) }()
	} else {
		close(checked)
	}
	defer func() { stopChecks(); <-checked }()
	handler := proxy.NewHandler(table, log)

	type server struct {
		srv *http.Server
		ln  net.Listener
		tls bool
	}
	var servers []server
	if ls.http != nil {
		h := http.Handler(handler)
		if cfg.TLS != nil && cfg.TLS.RedirectHTTP && ls.https != nil {
			h = proxy.RedirectToHTTPS(ls.https.Addr().String())
		}
		if front != nil {
			h = front.wrapHTTP(h) // the ACME HTTP-01 challenge, answered before any redirect
		}
		servers = append(servers, server{proxy.NewServer(cfg, h, log), ls.http, false})
	}
	if ls.https != nil {
		h := proxy.WithHSTS(handler, cfg.TLS.HSTS)
		tc := proxy.ServerTLSConfig(front.getCert, front.protos...)
		servers = append(servers, server{proxy.NewTLSServer(cfg, h, tc, log), ls.https, true})
	}

	served := make(chan error, len(servers))
	for _, s := range servers {
		go func() {
			if s.tls {
				served <- s.srv.ServeTLS(s.ln, "", "")
			} else {
				served <- s.srv.Serve(s.ln)
			}
		}()
	}
	sites := make([]zap.Field, 0, len(cfg.Sites))
	for _, s := range cfg.Sites {
		sites = append(sites, zap.Int(s.Name, s.Weight))
	}
	for _, s := range servers {
		scheme := "http"
		if s.tls {
			scheme = "https"
		}
		log.Info("listening", zap.String("addr", s.ln.Addr().String()), zap.String("scheme", scheme), zap.Dict("weights", sites...))
	}
	if front != nil {
		front.start(ctx)
	}

	var failed error
	select {
	case err := <-served: // a listener failed
		failed = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", zap.Duration("grace", cfg.Timeouts.Shutdown))
	grace, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Timeouts.Shutdown)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Go(func() {
			if err := s.srv.Shutdown(grace); err != nil {
				log.Warn("grace period over; closing the remaining connections", zap.Error(err))
				s.srv.Close()
			}
		})
	}
	wg.Wait()
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
