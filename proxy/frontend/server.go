package frontend

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"

	"go.uber.org/zap"

	"github.com/spillway/spillway/configs"
)

// Server is a client-facing server. Made by NewServer, it serves plain HTTP/1.1 with
// Spillway's own engine (see h1.go) and passes HTTP/2 with prior knowledge (h2c) to
// net/http; made by NewTLSServer, it is net/http's throughout (HTTP/2 and HTTP/1.1 by
// ALPN). Either way every connection passes the edge's framing rules (package framing).
//
// Serve it with Serve; stop it with Shutdown (graceful) or Close.
type Server struct {
	// HTTP is net/http's server: the TLS server's, and the one h2c connections go to.
	HTTP *http.Server
	h1   *h1Server // nil: HTTP serves every connection
}

// NewServer returns the client-facing server for h on the plain listener: HTTP/1.1 (on
// the engine listen.engine names), and HTTP/2 with prior knowledge (h2c) unless listen.h2c
// is false, with the config's limits.
// Malformed requests get 400 and oversized heads 431 before they reach h, so never a
// backend. An "Upgrade: h2c" request is not upgraded (h2c is served by prior knowledge
// only) and proxy's Handler drops the header, so it is never tunnelled.
//
// No read or write timeout is set: bodies and responses stream for as long as they flow.
// read_header bounds a slow client's head, idle its silent keep-alive.
func NewServer(cfg *configs.Config, h http.Handler, log *zap.Logger) *Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(cfg.Listen.H2C)
	srv := &Server{HTTP: newServer(cfg, h, &protocols, log)}
	if cfg.Listen.Engine != configs.EngineNetHTTP { // (net/http: the way back, should the engine fail someone)
		srv.h1 = newH1Server(srv.HTTP, cfg.Listen.H2C)
	}
	return srv
}

// NewTLSServer returns the client-facing server for h on the HTTPS listener: HTTP/2 and
// HTTP/1.1 chosen by ALPN, over tc (see ServerTLSConfig), served by net/http.
func NewTLSServer(cfg *configs.Config, h http.Handler, tc *tls.Config, log *zap.Logger) *Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	// Serve terminates TLS before the edge checks framing, so net/http sees plain
	// connections: HTTP/2 negotiated by ALPN reaches it as HTTP/2 with prior knowledge.
	protocols.SetUnencryptedHTTP2(true)
	srv := newServer(cfg, h, &protocols, log)
	srv.TLSConfig = tc
	return &Server{HTTP: srv}
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

// Serve accepts connections on ln and serves them until Shutdown or Close, which make it
// return http.ErrServerClosed. A server with a TLS config terminates TLS here, so that the
// edge sees plaintext.
func (s *Server) Serve(ln net.Listener) error {
	if s.h1 != nil {
		return s.h1.serve(ln)
	}
	return serveHTTP(s.HTTP, ln)
}

// Shutdown stops the server gracefully: it stops accepting, closes idle connections, lets
// the requests in flight finish and closes their connections after them, and returns once
// all are closed or ctx ends (then with its error, and the rest are left to Close).
// Hijacked connections (WebSocket tunnels) are their handler's, and not waited for.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.h1 == nil {
		return s.HTTP.Shutdown(ctx)
	}
	s.h1.beginShutdown()
	return errors.Join(s.HTTP.Shutdown(ctx), s.h1.wait(ctx))
}

// Close closes the listeners and every connection at once.
func (s *Server) Close() error {
	if s.h1 != nil {
		s.h1.close()
	}
	return s.HTTP.Close()
}

// serveHTTP serves srv (net/http's) on ln through the edge: a server with a TLSConfig
// terminates TLS here, so that the edge sees plaintext; HTTP/2 (by ALPN, or by prior
// knowledge when srv takes it unencrypted) is recognised by its preface and passed to
// net/http unchecked, as it frames its messages itself.
func serveHTTP(srv *http.Server, ln net.Listener) error {
	if srv.TLSConfig != nil {
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	h2 := srv.Protocols != nil && srv.Protocols.UnencryptedHTTP2()
	return srv.Serve(&edgeListener{Listener: ln, maxHead: maxHeadBytes(srv), h2: h2, log: srv.ErrorLog})
}
