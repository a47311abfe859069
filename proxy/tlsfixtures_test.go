package proxy_test

// Fixtures for the TLS tests: a proxy with an observed logger, served on plain and TLS
// listeners. Their certificate authority is proxytest.CA.

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net/http"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/frontend"
	"github.com/spillway/spillway/proxy/proxytest"
)

func discardLogger() *log.Logger { return log.New(io.Discard, "", 0) }

// loggedEnv is a running proxy whose log lines the test can read.
type loggedEnv struct {
	*env
	logs *observer.ObservedLogs
}

// startLoggedProxy is startProxy with an observed logger (level debug and up) given to
// Build and the Handler, and optionally a TLS listener too (tc non-nil): then url is the
// https:// one and client trusts roots.
func startLoggedProxy(t *testing.T, yaml string, tc *tls.Config, roots *x509.CertPool) *loggedEnv {
	t.Helper()
	cfg := proxytest.MustConfig(t, yaml)
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	reg := balancer.NewRegistry()
	tbl, err := proxy.Build(cfg, proxy.Deps{Registry: reg, Log: log})
	if err != nil {
		t.Fatalf("proxy.Build: %v", err)
	}
	t.Cleanup(tbl.Close)
	h := proxy.NewHandler(tbl, log)
	var srv *frontend.Server
	if tc != nil {
		var hsts *configs.HSTS
		if cfg.TLS != nil {
			hsts = cfg.TLS.HSTS
		}
		srv = frontend.NewTLSServer(cfg, frontend.WithHSTS(h, hsts), tc, log)
	} else {
		srv = frontend.NewServer(cfg, h, log)
	}
	addr := proxytest.Serve(t, srv)
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	scheme := "http://"
	if tc != nil {
		scheme = "https://"
		tr.TLSClientConfig = &tls.Config{RootCAs: roots}
		tr.ForceAttemptHTTP2 = true
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &loggedEnv{env: &env{
		cfg: cfg, reg: reg, table: tbl, handler: h, srv: srv,
		addr:   addr,
		url:    scheme + addr,
		client: &http.Client{Transport: tr, Timeout: proxytest.Liveness},
		tr:     tr,
	}, logs: logs}
}
