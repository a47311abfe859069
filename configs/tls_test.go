package configs_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/spillway/spillway/configs"
)

// The keys of issue 7: front TLS (ACME, redirect, HSTS), HTTP/2, WebSocket limits and the
// protocol spoken to backends.

func TestTLSDefaults(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, okSites+`listen: {http: ":80", https: ":443"}
tls:
  acme: {domains: [bank.example.com], storage: /var/lib/spillway}
  hsts: {}
`)
	a := cfg.TLS.ACME
	if a.CA != configs.DefaultACMECA {
		t.Errorf("acme.ca = %q, want %q", a.CA, configs.DefaultACMECA)
	}
	if want := []string{"http-01", "tls-alpn-01"}; !reflect.DeepEqual(a.Challenges, want) {
		t.Errorf("acme.challenges = %v, want %v", a.Challenges, want)
	}
	if a.CARoot != "" || cfg.TLS.RedirectHTTP {
		t.Errorf("ca_root %q, redirect_http %v: want empty, false", a.CARoot, cfg.TLS.RedirectHTTP)
	}
	if h := cfg.TLS.HSTS; h.MaxAge != configs.DefaultHSTSMaxAge || h.IncludeSubdomains || h.Preload {
		t.Errorf("hsts = %+v, want max_age %s only", h, configs.DefaultHSTSMaxAge)
	}
	if !cfg.Listen.H2C {
		t.Error("listen.h2c = false, want true by default")
	}
	if cfg.Limits.MaxConcurrentStreams != configs.DefaultMaxStreams {
		t.Errorf("limits.max_concurrent_streams = %d, want %d", cfg.Limits.MaxConcurrentStreams, configs.DefaultMaxStreams)
	}
	if w := cfg.WebSocket; w.Idle != configs.DefaultWebSocketIdle || w.MaxLifetime != configs.DefaultWebSocketLifetime {
		t.Errorf("websocket = %+v, want idle %s, max_lifetime %s", w, configs.DefaultWebSocketIdle, configs.DefaultWebSocketLifetime)
	}
	if p := cfg.Sites[0].Protocol; p != "http1" {
		t.Errorf("sites[0].protocol = %q, want http1", p)
	}

	// Without a plain listener, http-01 cannot be answered: only tls-alpn-01 by default.
	httpsOnly := mustParse(t, okSites+"listen: {https: \":443\"}\ntls: {acme: {domains: [a.example], storage: st}}\n")
	if want := []string{"tls-alpn-01"}; !reflect.DeepEqual(httpsOnly.TLS.ACME.Challenges, want) {
		t.Errorf("https only: acme.challenges = %v, want %v", httpsOnly.TLS.ACME.Challenges, want)
	}
}

func TestTLSKeepWhatTheFileSets(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, `listen: {http: ":80", https: ":443", h2c: false}
sites:
  - name: a
    weight: 1
    backends: ["https://10.0.0.1:443"]
    protocol: h2
    tls: {ca_file: ca.pem, cert_file: c.pem, key_file: k.pem, server_name: app.idc}
tls:
  acme:
    domains: [bank.example.com]
    ca: "https://acme.internal:14000/dir"
    ca_root: /etc/spillway/acme-root.pem
    storage: st
    challenges: [tls-alpn-01]
  redirect_http: true
  hsts: {max_age: 8760h, include_subdomains: true, preload: true}
limits: {max_concurrent_streams: 100}
websocket: {idle: 30s, max_lifetime: 1h}
`)
	want := configs.TLS{
		ACME: &configs.ACME{Domains: []string{"bank.example.com"}, CA: "https://acme.internal:14000/dir",
			CARoot: "/etc/spillway/acme-root.pem", Storage: abs(t, "st"), Challenges: []string{"tls-alpn-01"}},
		RedirectHTTP: true,
		HSTS:         &configs.HSTS{MaxAge: 8760 * time.Hour, IncludeSubdomains: true, Preload: true},
	}
	if !reflect.DeepEqual(*cfg.TLS, want) {
		t.Errorf("tls = %+v, want %+v", *cfg.TLS, want)
	}
	if cfg.Listen.H2C {
		t.Error("listen.h2c: false was not kept")
	}
	if cfg.Limits.MaxConcurrentStreams != 100 || cfg.WebSocket.Idle != 30*time.Second || cfg.WebSocket.MaxLifetime != time.Hour {
		t.Errorf("limits %+v websocket %+v: not as written", cfg.Limits, cfg.WebSocket)
	}
	if s := cfg.Sites[0]; s.Protocol != "h2" || s.TLS.ServerName != "app.idc" {
		t.Errorf("site = %+v", s)
	}
}

func TestTLSValidation(t *testing.T) {
	t.Parallel()
	const both = "listen: {http: \":80\", https: \":443\"}\n" // line 5
	for _, tc := range []struct {
		name, src string
		want      []wantErr
	}{
		{"tls without https listener", okSites + "tls: {cert_file: c.pem, key_file: k.pem}\n",
			[]wantErr{{5, 6, "tls", "needs listen.https, the listener it is for"}}},
		{"redirect without http listener", okSites + "tls: {cert_file: c.pem, key_file: k.pem, redirect_http: true}\nlisten: {https: \":443\"}\n",
			[]wantErr{{5, 57, "tls.redirect_http", "needs both listen.http (where it redirects from) and listen.https"}}},
		{"acme without storage", okSites + both + "tls: {acme: {domains: [a.example]}}\n",
			[]wantErr{{6, 13, "tls.acme.storage", "set the directory that keeps certificates, keys and the ACME account across restarts"}}},
		{"acme bad challenges", okSites + both + "tls:\n  acme:\n    domains: [a.example]\n    storage: st\n    challenges: [dns-01, http-01, http-01]\n",
			[]wantErr{
				{10, 18, "tls.acme.challenges[0]", `want http-01 or tls-alpn-01, got "dns-01"`},
				{10, 35, "tls.acme.challenges[2]", `"http-01" is listed twice`},
			}},
		{"acme no challenges", okSites + both + "tls: {acme: {domains: [a.example], storage: st, challenges: []}}\n",
			[]wantErr{{6, 61, "tls.acme.challenges", "list at least one of http-01, tls-alpn-01"}}},
		{"http-01 without http listener", okSites + "listen: {https: \":443\"}\ntls: {acme: {domains: [a.example], storage: st, challenges: [http-01]}}\n",
			[]wantErr{{6, 62, "tls.acme.challenges[0]", "http-01 is answered on listen.http, which is not set"}}},
		{"acme domain twice", okSites + both + "tls: {acme: {domains: [a.example, A.example], storage: st}}\n",
			[]wantErr{{6, 35, "tls.acme.domains[1]", `"A.example" is listed twice (first as domains[0])`}}},
		{"acme email not an address", okSites + both + "tls: {acme: {domains: [a.example], storage: st, email: ops}}\n",
			[]wantErr{{6, 56, "tls.acme.email", `want an email address, got "ops"`}}},
		{"acme internal ca with root", okSites + both + "tls: {acme: {domains: [a.example], storage: st, ca: \"https://127.0.0.1:14000/dir\", ca_root: root.pem}}\n", nil},
		{"hsts zero max_age", okSites + both + "tls: {cert_file: c, key_file: k, hsts: {max_age: 0s}}\n",
			[]wantErr{{6, 50, "tls.hsts.max_age", "must be a duration > 0, got 0s"}}},
		{"hsts preload too weak", okSites + both + "tls: {cert_file: c, key_file: k, hsts: {max_age: 1h, preload: true}}\n",
			[]wantErr{{6, 63, "tls.hsts.preload", "preload needs include_subdomains and a max_age of at least 8760h (one year)"}}},
		{"max_concurrent_streams zero", okSites + "limits: {max_concurrent_streams: 0}\n",
			[]wantErr{{5, 34, "limits.max_concurrent_streams", "must be between 1 and 10000, got 0"}}},
		{"websocket zero idle", okSites + "websocket: {idle: 0s, max_lifetime: 1h}\n",
			[]wantErr{{5, 19, "websocket.idle", "must be a duration > 0, got 0s"}}},
		{"websocket zero lifetime", okSites + "websocket: {max_lifetime: 0s}\n",
			[]wantErr{{5, 27, "websocket.max_lifetime", "must be a duration > 0, got 0s"}}},
		{"unknown protocol", okSites + "    protocol: h3\n",
			[]wantErr{{5, 15, "sites[0].protocol", `want http1 or h2, got "h3"`}}},
		{"h2 protocol", okSites + "    protocol: h2\n", nil},
		{"unknown engine", okSites + "listen: {http: \":80\", engine: nginx}\n",
			[]wantErr{{5, 31, "listen.engine", `want spillway or net/http, got "nginx"`}}},
		{"net/http engine", okSites + "listen: {http: \":80\", engine: net/http}\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want == nil {
				mustParse(t, tc.src)
				return
			}
			checkErrors(t, parseErrors(t, tc.src), tc.want)
		})
	}
}
