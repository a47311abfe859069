package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Issue 14: validate passed what run refused (a missing token file, an access log that
// cannot be opened, ports past 65535, a backend host like 10.0.-.inf, rise: 2147483648).
// Each is now refused by both, with the same file:line:col lines.
func TestValidateRefusesWhatRunRefuses(t *testing.T) {
	t.Setenv("SPILLWAY_ADMIN_TOKEN", "")
	const sites = `sites:
  - {name: idc1, weight: 1, backends: ["http://127.0.0.1:1"]}
`
	for _, tc := range []struct {
		name, config string
		want         string // a regexp the first problem line matches, after "FILE:"
	}{
		{"missing token file", `listen: {http: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0", token_file: missing.token}
` + sites, `^2:44: admin.token_file: "missing.token" is "DIR/missing.token", relative to the config file: admin token file: open DIR/missing.token: no such file or directory$`},
		{"access log in a missing directory", `listen: {http: "127.0.0.1:0"}
access_log: {output: nodir/access.log}
` + sites, `^2:22: access_log.output: "nodir/access.log" is "DIR/nodir/access.log", relative to the config file: cannot open for appending: cannot create DIR/nodir/access.log: no such file or directory$`},
		{"access log under a file", `listen: {http: "127.0.0.1:0"}
access_log: {output: spillway.yaml/access.log}
` + sites, `^2:22: access_log.output: .*cannot open for appending: stat DIR/spillway.yaml/access.log: not a directory$`},
		{"access log is a directory", `listen: {http: "127.0.0.1:0"}
access_log: {output: DIR}
` + sites, `^2:22: access_log.output: cannot open for appending: DIR is a directory$`},
		{"admin port 2^32", `listen: {http: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:4294967296"}
` + sites, `^2:17: admin.listen: port must be a number 0-65535, got "4294967296"$`},
		{"discovery port 2^32", `listen: {http: "127.0.0.1:0"}
sites:
  - {name: aws, weight: 1, elastic: true, discovery: {dns: "app.aws.internal:4294967296"}}
`, `^3:60: sites\[0\].discovery.dns: port must be a number 1-65535, got "4294967296"$`},
		{"backend host", `listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 1, backends: ["http://10.0.-.inf:80"]}
`, `^3:40: sites\[0\].backends\[0\]: "10.0.-.inf" is neither an IP address nor a DNS name, in "http://10.0.-.inf:80"$`},
		{"rise 2^31", `listen: {http: "127.0.0.1:0"}
sites:
  - name: idc1
    weight: 1
    backends: ["http://127.0.0.1:1"]
    health: {rise: 2147483648}
`, `^6:20: sites\[0\].health.rise: must be between 1 and 100, got 2147483648$`},
		{"corrupt state file", `listen: {http: "127.0.0.1:0"}
state: {file: spillway.yaml}
` + sites, `^2:15: state.file: "spillway.yaml" is "DIR/spillway.yaml", relative to the config file: state file DIR/spillway.yaml is corrupt \(invalid character 'l' looking for beginning of value\): .*restore it from a backup, or move it away to start with none$`},
		{"state file in a missing directory", `listen: {http: "127.0.0.1:0"}
state: {file: nodir/state.json}
` + sites, `^2:15: state.file: "nodir/state.json" is "DIR/nodir/state.json", relative to the config file: cannot write beside DIR/nodir/state.json: no such file or directory$`},
		{"etcd CA file missing", `listen: {http: "127.0.0.1:0"}
cluster: {name: prod, etcd: {endpoints: ["https://127.0.0.1:1"], tls: {ca_file: etcd-ca.pem}}}
` + sites, `^2:81: cluster.etcd.tls.ca_file: "etcd-ca.pem" is "DIR/etcd-ca.pem", relative to the config file: open DIR/etcd-ca.pem: no such file or directory$`},
		{"etcd client certificate not PEM", `listen: {http: "127.0.0.1:0"}
cluster: {name: prod, etcd: {endpoints: ["https://127.0.0.1:1"], tls: {cert_file: spillway.yaml, key_file: spillway.yaml}}}
` + sites, `^2:83: cluster.etcd.tls.cert_file: "spillway.yaml" is "DIR/spillway.yaml", relative to the config file: certificate DIR/spillway.yaml and key DIR/spillway.yaml: tls: failed to find any PEM data in certificate input$`},
		{"value of 500 characters", `listen: {http: "127.0.0.1:0"}
headers: {underscores: ` + strings.Repeat("u", 500) + `}
` + sites, `^2:24: headers.underscores: want drop, reject or allow, got "u{100}"\.\.\. \(500 characters\)$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "spillway.yaml")
			if err := os.WriteFile(path, []byte(strings.ReplaceAll(tc.config, "DIR", dir)), 0o600); err != nil {
				t.Fatal(err)
			}
			want := regexp.MustCompile(strings.ReplaceAll(tc.want, "DIR", regexp.QuoteMeta(dir)))

			var vout bytes.Buffer
			verr := run(context.Background(), []string{"validate", path}, io.Discard, &vout)
			if code := exitCode(verr, &vout); code != 1 {
				t.Fatalf("validate: exit %d, want 1; stderr:\n%s", code, vout.String())
			}

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var rout bytes.Buffer
			rerr := run(ctx, []string{"run", "-config", path}, io.Discard, &rout)
			if code := exitCode(rerr, &rout); code != 1 {
				t.Fatalf("run: exit %d, want 1; stderr:\n%s", code, rout.String())
			}

			if vout.String() != rout.String() {
				t.Errorf("validate and run differ;\nvalidate:\n%s\nrun:\n%s", vout.String(), rout.String())
			}
			first, _, _ := strings.Cut(vout.String(), "\n")
			if rest, ok := strings.CutPrefix(first, path+":"); !ok || !want.MatchString(rest) {
				t.Errorf("first line %q\nwant %s:%s", first, path, want)
			}
		})
	}
}

// Issue 14: relative paths resolved against the working directory in run, not in validate.
// Both now read them relative to the config file, from any working directory.
func TestRelativePathsAreRelativeToTheConfigFile(t *testing.T) {
	t.Setenv("SPILLWAY_ADMIN_TOKEN", "")
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer backend.Close()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte("ops:0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "spillway.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0", token_file: admin.token}
access_log: {output: logs/access.log}
sites:
  - {name: idc1, weight: 1, backends: [%q]}
`, backend.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	t.Chdir(elsewhere)

	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"validate", path}, &stdout, &stderr); err != nil {
		t.Fatalf("validate from another directory: %v\n%s", err, stderr.String())
	}
	r := startRun(t, path)
	if code, body := r.call("GET", r.proxy+"/", "", ""); code != 200 {
		t.Fatalf("GET through the proxy: %d %s", code, body)
	}
	if code, body := r.call("POST", r.admin+"/api/v1/reload", "0123456789abcdef0123", ""); code != 200 {
		t.Fatalf("reload with the token from the config's directory: %d %s", code, body)
	}
	if _, err := os.Stat(filepath.Join(dir, "logs", "access.log")); err != nil {
		t.Errorf("access log not next to the config file: %v", err)
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Errorf("run wrote into the working directory: %v", entries)
	}

	// The same config with the token file only in the working directory: both refuse it.
	if err := os.Rename(filepath.Join(dir, "admin.token"), filepath.Join(elsewhere, "admin.token")); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	if code := exitCode(run(context.Background(), []string{"validate", path}, io.Discard, &stderr), &stderr); code != 1 ||
		!strings.Contains(stderr.String(), `admin.token_file: "admin.token" is "`+filepath.Join(dir, "admin.token")+`", relative to the config file`) {
		t.Errorf("validate with the token file in the working directory only: exit %d\n%s", code, stderr.String())
	}
}
