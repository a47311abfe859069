package configs_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spillway/spillway/configs"
)

// Issue 14: validate passed ports past 65535, hosts that are neither an address nor a name,
// and counts with no upper bound. Each is refused at its place in the file.
func TestParseHostsPortsAndBounds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, src string
		want      []wantErr
	}{
		{"admin port 2^32", okSites + "admin: {listen: \"127.0.0.1:4294967296\"}\n",
			[]wantErr{{5, 17, "admin.listen", `port must be a number 0-65535, got "4294967296"`}}},
		{"listen host not a name", okSites + "listen: {http: \"10.0.-.inf:80\"}\n",
			[]wantErr{{5, 16, "listen.http", `"10.0.-.inf" is neither an IP address nor a DNS name`}}},
		{"listen port with a sign", okSites + "listen: {http: \":+80\"}\n",
			[]wantErr{{5, 16, "listen.http", `port must be a number 0-65535, got "+80"`}}},
		{"backend host 10.0.-.inf", "sites:\n  - {name: a, weight: 1, backends: [\"http://10.0.-.inf:80\"]}\n",
			[]wantErr{{2, 37, "sites[0].backends[0]", `"10.0.-.inf" is neither an IP address nor a DNS name, in "http://10.0.-.inf:80"`}}},
		{"backend host like a bad address", "sites:\n  - {name: a, weight: 1, backends: [\"http://10.0.0.256\"]}\n",
			[]wantErr{{2, 37, "sites[0].backends[0]", `"10.0.0.256" is neither an IP address nor a DNS name, in "http://10.0.0.256"`}}},
		{"backend label too long", "sites:\n  - {name: a, weight: 1, backends: [\"http://" + strings.Repeat("a", 64) + ".example\"]}\n",
			[]wantErr{{2, 37, "sites[0].backends[0]", `"` + strings.Repeat("a", 64) + `.example" is neither an IP address nor a DNS name, in "http://` + strings.Repeat("a", 64) + `.example"`}}},
		{"discovery port 2^32", "sites:\n  - {name: a, weight: 1, discovery: {dns: \"app.aws.internal:4294967296\"}}\n",
			[]wantErr{{2, 43, "sites[0].discovery.dns", `port must be a number 1-65535, got "4294967296"`}}},
		{"discovery port 0", "sites:\n  - {name: a, weight: 1, discovery: {dns: \"app.aws.internal:0\"}}\n",
			[]wantErr{{2, 43, "sites[0].discovery.dns", `port must be a number 1-65535, got "0"`}}},
		{"discovery host", "sites:\n  - {name: a, weight: 1, discovery: {dns: \"app..internal:80\"}}\n",
			[]wantErr{{2, 43, "sites[0].discovery.dns", `"app..internal" is neither an IP address nor a DNS name`}}},
		{"srv name", "sites:\n  - {name: a, weight: 1, discovery: {dns: \"_app._tcp.-x\"}}\n",
			[]wantErr{{2, 43, "sites[0].discovery.dns", `want an SRV name like _app._tcp.example: "_app._tcp.-x" is neither an IP address nor a DNS name`}}},
		{"resolver port", "sites:\n  - {name: a, weight: 1, discovery: {dns: \"app:80\", resolver: \"10.0.0.2:70000\"}}\n",
			[]wantErr{{2, 63, "sites[0].discovery.resolver", `want ip:port of a DNS server, e.g. 10.0.0.2:53; got "10.0.0.2:70000"`}}},
		{"rise 2^31", okSites + "    health: {rise: 2147483648, fall: 101}\n",
			[]wantErr{{5, 20, "sites[0].health.rise", "must be between 1 and 100, got 2147483648"},
				{5, 38, "sites[0].health.fall", "must be between 1 and 100, got 101"}}},
		{"health interval", okSites + "    health: {interval: 2h, timeout: 1s}\n",
			[]wantErr{{5, 24, "sites[0].health.interval", "must be at most 1h0m0s, got 2h0m0s"}}},
		{"slow start", okSites + "    slow_start: 2h\n",
			[]wantErr{{5, 17, "sites[0].slow_start", "must be at most 1h0m0s, got 2h0m0s"}}},
		{"adaptive floor", okSites + "    adaptive: {floor: 100001, cap: 100001}\n",
			[]wantErr{{5, 23, "sites[0].adaptive.floor", "must be between 1 and 100000, got 100001"}}},
		{"queue", okSites + "spillover: {queue: {size: 1000001, timeout: 6m}}\n",
			[]wantErr{{5, 27, "spillover.queue.size", "must be between 0 and 1000000, got 1000001"},
				{5, 45, "spillover.queue.timeout", "must be at most 5m0s, got 6m0s"}}},
		{"retries and outlier", okSites + "retries: {min_per_second: 10001}\noutlier: {consecutive_failures: 1001, max_ejection: 25h}\n",
			[]wantErr{{5, 27, "retries.min_per_second", "must be between 0 and 10000, got 10001"},
				{6, 33, "outlier.consecutive_failures", "must be between 0 (never eject) and 1000, got 1001"},
				{6, 53, "outlier.max_ejection", "must be at most 24h0m0s, got 25h0m0s"}}},
		{"timeouts", okSites + "timeouts: {connect: 6m, idle: 25h}\n",
			[]wantErr{{5, 21, "timeouts.connect", "must be at most 5m0s, got 6m0s"},
				{5, 31, "timeouts.idle", "must be at most 24h0m0s, got 25h0m0s"}}},
		{"valid hosts and ports", `listen: {http: ":0", https: "[::1]:8443"}
admin: {listen: "localhost:9901"}
tls: {cert_file: c.pem, key_file: k.pem}
sites:
  - {name: a, weight: 1, backends: ["http://app-1.idc.example:8080", "http://[fe80::1%25eth0]:80", "https://10.0.0.1", "http://Backend.Example."]}
  - {name: b, weight: 1, discovery: {dns: "_app._tcp.svc.cluster.local"}}
  - {name: c, weight: 1, discovery: {dns: "10.0.0.9:65535", resolver: "[::1]:53"}}
`, nil},
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

// A value pasted by mistake is quoted cut to 100 characters, and says how long it was.
func TestErrorsCutLongValues(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 500)
	for _, tc := range []struct{ name, src, path, before string }{
		{"bad value", okSites + "headers: {underscores: " + long + "}\n", "headers.underscores", "want drop, reject or allow, got "},
		{"wrong type", okSites + "retries: {attempts: " + long + "}\n", "retries.attempts", "want a whole number, got "},
		{"unknown key", okSites + long + ": 1\n", long, "unknown key "},
		{"backend", "sites:\n  - {name: a, weight: 1, backends: [\"ftp://" + long + "\"]}\n", "sites[0].backends[0]", "want http://host:port or https://host:port, got "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es := parseErrors(t, tc.src)
			var msg string
			for _, e := range es {
				if e.Path == tc.path {
					msg = e.Msg
				}
			}
			value := strings.Repeat("x", 100)
			if tc.name == "backend" {
				value = "ftp://" + strings.Repeat("x", 94)
			}
			if want := tc.before + `"` + value + `"... (` + "5"; !strings.HasPrefix(msg, want) {
				t.Fatalf("message %q, want it to start with %q", msg, want)
			}
			if len(msg) > 300 { // the unknown key's list of known keys included
				t.Errorf("message is %d bytes long: %q", len(msg), msg)
			}
			for _, e := range es {
				if len(e.Error()) > 450 {
					t.Errorf("line is %d bytes long: %q", len(e.Error()), e.Error())
				}
			}
		})
	}
	if got := configs.Quote("短" + strings.Repeat("é", 120)); got != `"短`+strings.Repeat("é", 99)+`"... (121 characters)` {
		t.Errorf("Quote cuts runes wrongly: %s", got)
	}
	if got := configs.Quote(strings.Repeat("y", 100)); got != `"`+strings.Repeat("y", 100)+`"` {
		t.Errorf("Quote cut a value of exactly 100 characters: %s", got)
	}
}

// Issue 14: relative paths were relative to the working directory. They are relative to the
// config file, made absolute once by Load, whatever directory the process runs in.
func TestLoadResolvesPathsAgainstTheConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "etc", "spillway.yaml")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(`listen: {http: ":8080", https: ":8443"}
admin: {token_file: admin.token}
tls: {cert_file: certs/front.pem, key_file: /abs/front-key.pem}
access_log: {output: ../log/access.log}
sites:
  - name: a
    weight: 1
    backends: ["https://10.0.0.1"]
    tls: {ca_file: ca.pem, cert_file: ./c.pem, key_file: k.pem}
  - {name: b, weight: 1, elastic: true, discovery: {file: targets.txt}}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir()) // anywhere else
	for _, load := range []struct {
		name string
		path string
	}{{"absolute", path}, {"relative to the working directory", mustRel(t, path)}} {
		t.Run(load.name, func(t *testing.T) {
			cfg, err := configs.Load(load.path)
			if err != nil {
				t.Fatal(err)
			}
			etc := filepath.Join(dir, "etc")
			for _, c := range []struct{ key, got, want string }{
				{"admin.token_file", cfg.Admin.TokenFile, filepath.Join(etc, "admin.token")},
				{"tls.cert_file", cfg.TLS.CertFile, filepath.Join(etc, "certs", "front.pem")},
				{"tls.key_file", cfg.TLS.KeyFile, "/abs/front-key.pem"},
				{"access_log.output", cfg.AccessLog.Output, filepath.Join(dir, "log", "access.log")},
				{"sites[0].tls.ca_file", cfg.Sites[0].TLS.CAFile, filepath.Join(etc, "ca.pem")},
				{"sites[0].tls.cert_file", cfg.Sites[0].TLS.CertFile, filepath.Join(etc, "c.pem")},
				{"sites[0].tls.key_file", cfg.Sites[0].TLS.KeyFile, filepath.Join(etc, "k.pem")},
				{"sites[1].discovery.file", cfg.Sites[1].Discovery.File, filepath.Join(etc, "targets.txt")},
			} {
				if c.got != c.want {
					t.Errorf("%s = %q, want %q", c.key, c.got, c.want)
				}
			}
			if w := cfg.Written("admin.token_file"); w != "admin.token" {
				t.Errorf("Written(admin.token_file) = %q, want what the file says", w)
			}
		})
	}
	cfg, err := configs.Parse("x.yaml", []byte(okSites+"access_log: {output: stderr}\ntls: {acme: {domains: [a.example], storage: st, ca_root: r.pem}}\nlisten: {https: \":8443\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AccessLog.Output != "stderr" {
		t.Errorf("access_log.output stderr became %q", cfg.AccessLog.Output)
	}
	if wd, _ := os.Getwd(); cfg.TLS.ACME.Storage != filepath.Join(wd, "st") || cfg.TLS.ACME.CARoot != filepath.Join(wd, "r.pem") {
		t.Errorf("acme storage %q, ca_root %q: want them in %s", cfg.TLS.ACME.Storage, cfg.TLS.ACME.CARoot, wd)
	}
}

func mustRel(t *testing.T, path string) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, path)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}
