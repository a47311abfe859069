package frontend

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/spillway/spillway/configs"
)

// certCheckInterval is how often, at most, the static certificate files are looked at for a
// change (on a handshake; see CertReloader).
const certCheckInterval = 2 * time.Second

// ACME retry backoff when certificates could not be obtained: first wait, then doubled up
// to the last.
const (
	acmeRetryFirst = 1 * time.Minute
	acmeRetryMax   = 1 * time.Hour
)

// Certs provides the HTTPS listener's certificates: static files reloaded when they
// change, or certificates obtained and renewed over ACME by certmagic. The zero of its
// optional parts means static files. Make one with NewCerts; Start it once the listeners
// serve, and Stop it once they are closed.
type Certs struct {
	getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	protos  []string // ALPN protocols beyond h2 and http/1.1 (acme-tls/1)

	// ACME only.
	magic   *certmagic.Config
	cache   *certmagic.Cache
	issuer  *certmagic.ACMEIssuer
	domains []string
	log     *zap.Logger
	cancel  context.CancelFunc
	done    chan struct{} // closed when the obtaining goroutine has returned
	once    sync.Once
}

// NewCerts prepares the certificates for t, the config's tls section. It opens no
// connection: an ACME front starts obtaining certificates only in Start, once the listeners
// serve, since the CA validates through them. httpAddr and httpsAddr are the listeners'
// real addresses (the challenge ports), nil for one not open.
func NewCerts(t *configs.TLS, httpAddr, httpsAddr net.Addr, log *zap.Logger) (*Certs, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if t.ACME == nil {
		r, err := NewCertReloader(t.CertFile, t.KeyFile, certCheckInterval, log.Named("tls"))
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file: %w", err)
		}
		return &Certs{getCert: r.GetCertificate}, nil
	}
	return newACMECerts(t.ACME, httpAddr, httpsAddr, log.Named("acme"))
}

// TLSConfig is the HTTPS server's TLS config (see ServerTLSConfig) with these
// certificates, and the ACME TLS-ALPN-01 challenge's protocol when that challenge is on.
func (f *Certs) TLSConfig() *tls.Config { return ServerTLSConfig(f.getCert, f.protos...) }

// newACMECerts builds a certmagic Config of our own (its own certificate cache, storage and
// logger; not certmagic's package-level Default) with one ACME issuer for a.CA.
func newACMECerts(a *configs.ACME, httpAddr, httpsAddr net.Addr, log *zap.Logger) (*Certs, error) {
	f := &Certs{domains: a.Domains, log: log, done: make(chan struct{})}
	f.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return f.magic, nil },
		Logger:           log,
	})
	f.magic = certmagic.New(f.cache, certmagic.Config{
		Storage:           &certmagic.FileStorage{Path: a.Storage},
		Logger:            log,
		DefaultServerName: a.Domains[0], // clients that send no SNI
		OnEvent: func(_ context.Context, event string, data map[string]any) error {
			switch event {
			case "cert_obtained", "cert_failed":
				log.Info(event, zap.Any("identifier", data["identifier"]), zap.Any("renewal", data["renewal"]),
					zap.Any("issuer", data["issuer"]), zap.Any("error", data["error"]))
			}
			return nil
		},
	})
	iss := certmagic.ACMEIssuer{
		CA:     a.CA,
		Email:  a.Email,
		Agreed: true, // configuring the CA is the operator's agreement to its terms
		// Each challenge is answered on our own listener: certmagic finds the port taken
		// (by us) and leaves it to the handlers below, instead of binding its own.
		DisableHTTPChallenge:    !slices.Contains(a.Challenges, "http-01"),
		DisableTLSALPNChallenge: !slices.Contains(a.Challenges, "tls-alpn-01"),
		Logger:                  log,
	}
	if httpAddr != nil {
		iss.ListenHost, iss.AltHTTPPort = hostPort(httpAddr)
	}
	if httpsAddr != nil {
		host, port := hostPort(httpsAddr)
		if iss.ListenHost == "" {
			iss.ListenHost = host
		}
		iss.AltTLSALPNPort = port
	}
	if a.CARoot != "" {
		pool, err := configs.LoadCertPool(a.CARoot)
		if err != nil {
			f.cache.Stop()
			return nil, fmt.Errorf("tls.acme.ca_root: %w", err)
		}
		iss.TrustedRoots = pool
	}
	f.issuer = certmagic.NewACMEIssuer(f.magic, iss)
	f.magic.Issuers = []certmagic.Issuer{f.issuer}
	f.getCert = f.magic.GetCertificate
	if !iss.DisableTLSALPNChallenge {
		f.protos = []string{"acme-tls/1"}
	}
	return f, nil
}

// hostPort splits a listener's address into its host and port number.
func hostPort(a net.Addr) (string, int) {
	host, port, _ := net.SplitHostPort(a.String())
	n, _ := strconv.Atoi(port)
	return host, n
}

// WrapHTTP answers ACME HTTP-01 challenges on the plain listener before h sees the request.
func (f *Certs) WrapHTTP(h http.Handler) http.Handler {
	if f.issuer == nil {
		return h
	}
	return f.issuer.HTTPChallengeHandler(h)
}

// Start begins obtaining (or loading from storage) the ACME certificates, on a goroutine
// that Stop ends and waits for. Failures are logged and retried with backoff; renewals are
// certmagic's cache's, which stop also stops. For static certificates it does nothing.
func (f *Certs) Start(ctx context.Context) {
	if f.magic == nil {
		return
	}
	ctx, f.cancel = context.WithCancel(ctx)
	go func() {
		defer close(f.done)
		wait := acmeRetryFirst
		for {
			err := f.magic.ManageSync(ctx, f.domains)
			if err == nil {
				f.log.Info("certificates ready", zap.Strings("domains", f.domains))
				return
			}
			if ctx.Err() != nil {
				return
			}
			f.log.Error("could not obtain certificates; retrying", zap.Strings("domains", f.domains),
				zap.Duration("in", wait), zap.Error(err))
			timer := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-timer.C:
			}
			wait = min(2*wait, acmeRetryMax)
		}
	}()
}

// Stop ends what Start began and the certificate cache's maintenance, and waits for them.
// It may be called more than once, and without Start.
func (f *Certs) Stop() {
	if f.magic == nil {
		return
	}
	f.once.Do(func() {
		if f.cancel != nil {
			f.cancel()
			<-f.done
		}
		f.cache.Stop()
	})
}
