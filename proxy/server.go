package proxy

import (
	"net/http"

	"go.uber.org/zap"

	"github.com/spillway/spillway/configs"
)

// NewServer returns the client-facing server for h: HTTP/1.1 and HTTP/2 with prior knowledge
// (h2c) on one plain listener, with the config's limits. Malformed requests get 400 and
// oversized headers 431 from net/http before they reach h, so never a backend.
//
// No read or write timeout is set: bodies and responses stream for as long as they flow.
// read_header bounds a slow client's headers, idle its silent keep-alive.
func NewServer(cfg *configs.Config, h http.Handler, log *zap.Logger) *http.Server {
	if log == nil {
		log = zap.NewNop()
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.Timeouts.ReadHeader,
		IdleTimeout:       cfg.Timeouts.Idle,
		MaxHeaderBytes:    cfg.Limits.MaxHeaderBytes,
		Protocols:         &protocols,
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
}
