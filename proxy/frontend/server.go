package frontend

import (
	"crypto/tls"
	"net/http"

	"go.uber.org/zap"

	"github.com/spillway/spillway/configs"
)

// NewServer returns the client-facing server for h on the plain listener, to be served
// with Serve: HTTP/1.1, and
// HTTP/2 with prior knowledge (h2c) unless listen.h2c is false, with the config's limits.
// Malformed requests get 400 and oversized headers 431 from net/http before they reach h,
// so never a backend. An "Upgrade: h2c" request is not upgraded (net/http serves h2c by
// prior knowledge only) and proxy's Handler drops the header, so it is never tunnelled.
//
// No read or write timeout is set: bodies and responses stream for as long as they flow.
// read_header bounds a slow client's headers, idle its silent keep-alive.
func NewServer(cfg *configs.Config, h http.Handler, log *zap.Logger) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(cfg.Listen.H2C)
	return newServer(cfg, h, &protocols, log)
}

// NewTLSServer returns the client-facing server for h on the HTTPS listener: HTTP/2 and
// HTTP/1.1 chosen by ALPN, over tc (see ServerTLSConfig). Serve it with Serve.
func NewTLSServer(cfg *configs.Config, h http.Handler, tc *tls.Config, log *zap.Logger) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	// Serve terminates TLS before the edge checks framing, so net/http sees plain
	// connections: HTTP/2 negotiated by ALPN reaches it as HTTP/2 with prior knowledge.
	protocols.SetUnencryptedHTTP2(true)
	srv := newServer(cfg, h, &protocols, log)
	srv.TLSConfig = tc
	return srv
}

func newServer(cfg *configs.Config, h http.Handler, p *http.Protocols, log *zap.Logger) *http.Server {
	if log == nil {
		log = zap.NewNop()
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.Timeouts.ReadHeader,
		IdleTimeout:       cfg.Timeouts.Idle,
		MaxHeaderBytes:    cfg.Limits.MaxHeaderBytes,
		Protocols:         p,
		// HTTP/2 abuse: a client may have at most max_concurrent_streams streams open.
		// net/http also runs at most that many of a connection's handlers at once, queues a
		// few more, and closes the connection (ENHANCE_YOUR_CALM) when a client opens and
		// resets streams faster than they finish (CVE-2023-44487, "rapid reset"); a reset
		// stream's context is cancelled, which cancels its backend request.
		// MaxHeaderBytes also bounds an HTTP/2 request's header list.
		HTTP2:    &http.HTTP2Config{MaxConcurrentStreams: cfg.Limits.MaxConcurrentStreams},
		ErrorLog: zap.NewStdLog(log.Named("http")),
		// The edge (see Serve) learns which connection a request came in on, and when
		// one is being served.
		ConnContext: edgeConnContext,
		ConnState:   edgeConnState,
	}
}
