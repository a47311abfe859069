package proxy

import (
	"crypto/tls"
	"fmt"
	"net/http"

	"go.uber.org/zap"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy/frontend"
)

// newSiteTransport is site i's transport to its backends: an http1Transport, or net/http's
// for an h2 site, with the shared tuning, the site's TLS settings for https backends (its
// CA, client certificate for mTLS, server name) and the protocol it speaks. Problems with
// the site's files come back as configs.Errors placed at the key that names the file.
func newSiteTransport(cfg *configs.Config, i int, log *zap.Logger) (backendTransport, error) {
	s := cfg.Sites[i]
	var tc *tls.Config
	if s.TLS != nil {
		var err error
		if tc, err = backendTLSConfig(cfg, i); err != nil {
			return nil, err
		}
		if s.TLS.InsecureSkipVerify {
			log.Warn("backend certificates are not verified: anyone on the path can read and change this site's traffic",
				zap.String("site", s.Name), zap.String("key", fmt.Sprintf("sites[%d].tls.insecure_skip_verify", i)))
		}
	}
	if s.Protocol != "h2" {
		tr := newHTTP1Transport(cfg.Timeouts)
		tr.setTLS(tc)
		return tr, nil
	}
	// HTTP/2 only, for gRPC and other h2-only backends: prior knowledge (h2c) to http://
	// backends, ALPN "h2" to https:// ones. A backend that cannot speak it fails the
	// request rather than being downgraded silently.
	tr := newH2Transport(cfg.Timeouts)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	p.SetHTTP2(true)
	tr.Protocols = &p
	tr.TLSClientConfig = tc
	return tr, nil
}

// transportTLS is the TLS config tr presents to https backends (the health probes present
// the same).
func transportTLS(tr backendTransport) *tls.Config {
	switch tr := tr.(type) {
	case *http1Transport:
		return tr.plain.TLSClientConfig
	case *http.Transport:
		return tr.TLSClientConfig
	}
	return nil
}

// CheckTLSFiles reads every file the config's TLS settings name, so that a missing or
// broken file is refused with its line, with every other problem of the config, before
// anything listens or a reload takes it: each site's CA and client certificate, read here
// as backendTLSConfig reads them, and the front's (frontend.CheckTLSFiles). It is a
// configs.Check; the Reloader runs it on every config, and so may configs.Load's callers.
func CheckTLSFiles(cfg *configs.Config) error {
	var errs configs.Errors
	for i, s := range cfg.Sites {
		if s.TLS == nil {
			continue
		}
		if _, err := backendTLSConfig(cfg, i); err != nil {
			if found, ok := err.(configs.Errors); ok {
				errs = append(errs, found...)
			}
		}
	}
	if err := frontend.CheckTLSFiles(cfg); err != nil {
		if found, ok := err.(configs.Errors); ok {
			errs = append(errs, found...)
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// backendTLSConfig is the client TLS config for site i's https backends.
func backendTLSConfig(cfg *configs.Config, i int) (*tls.Config, error) {
	s := cfg.Sites[i]
	t := s.TLS
	p := fmt.Sprintf("sites[%d].tls", i)
	var errs configs.Errors
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify,
	}
	if t.CAFile != "" {
		pool, err := configs.LoadCertPool(t.CAFile)
		if err != nil {
			errs = append(errs, cfg.Errorf(p+".ca_file", "%v", err))
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			errs = append(errs, cfg.Errorf(p+".cert_file", "client certificate: %v", err))
		} else {
			tc.Certificates = []tls.Certificate{cert}
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return tc, nil
}
