package proxytest

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spillway/spillway/proxy/runtime"
)

// ReloaderEnv is a started Reloader serving its config file through a real server.
type ReloaderEnv struct {
	R      *runtime.Reloader
	Path   string // the config file
	URL    string // http://host:port of the proxy
	Client *http.Client
	Logs   *observer.ObservedLogs // the Reloader's operational log (nil if opts.Log was set)
	Audit  *observer.ObservedLogs // its audit log (nil if opts.Audit was set)
}

// StartReloader writes yaml to a config file in a new temporary directory (unless opts.Path
// is set), starts a Reloader on it and serves its Handler on 127.0.0.1. Cleanups stop the
// server, cancel Start's context and Close the Reloader. Create backends before calling it,
// so that they close after the proxy. Unless opts sets them, the Reloader's logs are
// observed at debug level (Logs, Audit); it has no metrics unless opts.Metrics is set.
func StartReloader(t testing.TB, yaml string, opts runtime.ReloaderOptions) *ReloaderEnv {
	t.Helper()
	if opts.Path == "" {
		opts.Path = filepath.Join(t.TempDir(), "spillway.yaml")
		if err := os.WriteFile(opts.Path, []byte(yaml), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	e := &ReloaderEnv{Path: opts.Path}
	if opts.Log == nil {
		core, logs := observer.New(zapcore.DebugLevel)
		opts.Log, e.Logs = zap.New(core), logs
	}
	if opts.Audit == nil {
		core, audit := observer.New(zapcore.DebugLevel)
		opts.Audit, e.Audit = zap.New(core), audit
	}
	e.R = runtime.NewReloader(opts)
	ctx, cancel := context.WithCancel(context.Background())
	if err := e.R.Start(ctx); err != nil {
		cancel()
		e.R.Close()
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { cancel(); e.R.Close() })
	_, addr := ServeOn(t, e.R.Config(), e.R.Handler())
	e.URL = "http://" + addr
	e.Client, _ = NewClient(t)
	return e
}

// Write replaces the config file's content in place (it does not reload).
func (e *ReloaderEnv) Write(t testing.TB, yaml string) {
	t.Helper()
	if err := os.WriteFile(e.Path, []byte(yaml), 0o640); err != nil {
		t.Fatal(err)
	}
}

// Send sends one request through the proxy and returns its status and body.
func (e *ReloaderEnv) Send(method, path string, body io.Reader) (int, string, error) {
	req, err := http.NewRequest(method, e.URL+path, body)
	if err != nil {
		return 0, "", err
	}
	resp, err := e.Client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// MustGet sends a GET through the proxy and fails the test unless it is answered 200; it
// returns the body (the name of the site that answered, for NameBackend).
func (e *ReloaderEnv) MustGet(t testing.TB, path string) string {
	t.Helper()
	status, body, err := e.Send(http.MethodGet, path, nil)
	if err != nil || status != http.StatusOK {
		t.Fatalf("GET %s: %d %q %v", path, status, body, err)
	}
	return body
}

// Site returns the state of the site called name, failing the test if there is none.
func (e *ReloaderEnv) Site(t testing.TB, name string) runtime.SiteState {
	t.Helper()
	s, ok := e.R.Site(name)
	if !ok {
		t.Fatalf("no site %q in the state", name)
	}
	return s
}

// Watch runs the Reloader's Watch until the test ends, failing the test if it returns an
// error.
func (e *ReloaderEnv) Watch(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.R.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
}
