package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"

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
	ln, err := net.Listen("tcp", cfg.Listen.HTTP)
	if err != nil {
		table.Close()
		outliers.Close()
		return fmt.Errorf("listen.http: %w", err)
	}
	return serveProxy(ctx, cfg, table, outliers, ln, log)
}

// serveProxy serves table on ln, with its health checks and discovery running (Table.Run), until ctx is done;
// then it shuts down gracefully: it stops accepting, gives requests in flight
// timeouts.shutdown to finish, and closes what is left. It closes ln, table and outliers.
func serveProxy(ctx context.Context, cfg *configs.Config, table *proxy.Table, outliers *health.Outliers, ln net.Listener, log *zap.Logger) error {
	defer table.Close()
	defer outliers.Close()
	// Health checks and discovery run until the server has stopped, grace period included.
	background, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	stopped := make(chan struct{})
	go func() { defer close(stopped); table.Run(background) }()
	defer func() { stopBackground(); <-stopped }()
	srv := proxy.NewServer(cfg, proxy.NewHandler(table, log), log)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	sites := make([]zap.Field, 0, len(cfg.Sites))
	for _, s := range cfg.Sites {
		sites = append(sites, zap.Int(s.Name, s.Weight))
	}
	log.Info("listening", zap.String("addr", ln.Addr().String()), zap.Dict("weights", sites...))

	select {
	case err := <-served: // the listener failed
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	log.Info("shutting down", zap.Duration("grace", cfg.Timeouts.Shutdown))
	grace, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Timeouts.Shutdown)
	defer cancel()
	if err := srv.Shutdown(grace); err != nil {
		log.Warn("grace period over; closing the remaining connections", zap.Error(err))
		srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
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
