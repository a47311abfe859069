package frontend

import (
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/spillway/spillway/configs"
)

// ServerTLSConfig is the client-facing TLS config: TLS 1.2 at least, only forward-secret
// AEAD cipher suites for TLS 1.2 (TLS 1.3's are all modern), and ALPN h2 then http/1.1.
// getCert picks the certificate for each handshake (a CertReloader's, or certmagic's).
// extraProtos are further ALPN protocols, such as "acme-tls/1" for the ACME TLS-ALPN-01
// challenge, which getCert must then answer.
func ServerTLSConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), extraProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos:     append([]string{"h2", "http/1.1"}, extraProtos...),
		GetCertificate: getCert,
	}
}

// CheckTLSFiles reads the files the tls section names (the static certificate and key, the
// ACME CA's root), so that a missing or broken file is refused with its line, with every
// other problem of the config, before anything listens. It is a configs.Check; the files
// of sites' TLS settings are proxy's (proxy.CheckTLSFiles checks both).
func CheckTLSFiles(cfg *configs.Config) error {
	t := cfg.TLS
	if t == nil {
		return nil
	}
	var errs configs.Errors
	if t.CertFile != "" && t.KeyFile != "" {
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			errs = append(errs, cfg.Errorf("tls.cert_file", "%v", err))
		}
	}
	if a := t.ACME; a != nil && a.CARoot != "" {
		if _, err := configs.LoadCertPool(a.CARoot); err != nil {
			errs = append(errs, cfg.Errorf("tls.acme.ca_root", "%v", err))
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// CertReloader serves a static certificate and key from files, and reads them again when
// they change on disk (a renewal by another tool, a deploy that swaps them), with no
// restart. During a handshake, at most once per interval, it reads the two files and
// compares their contents with what it loaded last (file times are too coarse to see two
// writes in a row), so it needs no goroutine; a pair that does not load (say, a certificate
// written before its key) is logged and the previous certificate kept until the files
// change again. Safe for concurrent use.
type CertReloader struct {
	certFile, keyFile string
	interval          time.Duration
	log               *zap.Logger
	cert              atomic.Pointer[tls.Certificate]

	mu      sync.Mutex // held by the one handshake checking the files; others do not wait
	checked time.Time
	sum     [sha256.Size]byte // of the files' contents when last loaded or found broken
}

// NewCertReloader loads certFile and keyFile, which must be a valid pair, and checks them
// for changes at most once per interval (0: at every handshake).
func NewCertReloader(certFile, keyFile string, interval time.Duration, log *zap.Logger) (*CertReloader, error) {
	if log == nil {
		log = zap.NewNop()
	}
	c := &CertReloader{certFile: certFile, keyFile: keyFile, interval: interval, log: log}
	certPEM, keyPEM, sum, err := c.read()
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	c.cert.Store(&cert)
	c.sum, c.checked = sum, time.Now()
	return c, nil
}

// GetCertificate is a tls.Config.GetCertificate.
func (c *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.maybeReload()
	return c.cert.Load(), nil
}

func (c *CertReloader) maybeReload() {
	if !c.mu.TryLock() {
		return // another handshake is checking; this one uses the current certificate
	}
	defer c.mu.Unlock()
	now := time.Now()
	if now.Sub(c.checked) < c.interval {
		return
	}
	c.checked = now
	certPEM, keyPEM, sum, err := c.read()
	if err == nil && sum == c.sum {
		return
	}
	var cert tls.Certificate
	if err == nil {
		c.sum = sum
		cert, err = tls.X509KeyPair(certPEM, keyPEM)
	}
	if err != nil {
		c.log.Error("certificate files changed but do not load; keeping the previous certificate",
			zap.String("cert_file", c.certFile), zap.String("key_file", c.keyFile), zap.Error(err))
		return
	}
	c.cert.Store(&cert)
	fields := []zap.Field{zap.String("cert_file", c.certFile)}
	if cert.Leaf != nil {
		fields = append(fields, zap.Strings("names", cert.Leaf.DNSNames), zap.Time("not_after", cert.Leaf.NotAfter))
	}
	c.log.Info("certificate reloaded", fields...)
}

// read returns both files and a digest of the two.
func (c *CertReloader) read() (certPEM, keyPEM []byte, sum [sha256.Size]byte, err error) {
	if certPEM, err = os.ReadFile(c.certFile); err != nil {
		return nil, nil, sum, err
	}
	if keyPEM, err = os.ReadFile(c.keyFile); err != nil {
		return nil, nil, sum, err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%d:", len(certPEM))
	h.Write(certPEM)
	h.Write(keyPEM)
	h.Sum(sum[:0])
	return certPEM, keyPEM, sum, nil
}

// WithHSTS adds a Strict-Transport-Security header to every response of h (nil hsts: h as
// it is). The proxy's header is set before the backend's headers are copied, so a backend
// that sends its own adds a second value after it; browsers heed the first.
func WithHSTS(h http.Handler, hsts *configs.HSTS) http.Handler {
	if hsts == nil {
		return h
	}
	v := "max-age=" + strconv.FormatInt(int64(hsts.MaxAge/time.Second), 10)
	if hsts.IncludeSubdomains {
		v += "; includeSubDomains"
	}
	if hsts.Preload {
		v += "; preload"
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Strict-Transport-Security"] = []string{v}
		h.ServeHTTP(w, r)
	})
}

// RedirectToHTTPS answers every request with 308 Permanent Redirect to the same host and
// path over HTTPS, on httpsAddr's port (left out when it is 443). 308 keeps the method and
// body, so a POST sent to the plain port by mistake is not turned into a GET.
func RedirectToHTTPS(httpsAddr string) http.Handler {
	_, port, _ := net.SplitHostPort(httpsAddr)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.Trim(host, "[]")
		if host == "" {
			http.Error(w, "Bad Request: no Host", http.StatusBadRequest)
			return
		}
		if port != "" && port != "443" && port != "0" {
			host = net.JoinHostPort(host, port)
		} else if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}
