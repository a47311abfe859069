package configs_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spillway/spillway/configs"
)

// wantErr is one expected problem: its exact position, key path and message.
type wantErr struct {
	line, col int
	path      string
	msg       string
}

// parseErrors parses src as "test.yaml" and returns the Errors it must fail with.
func parseErrors(t *testing.T, src string) configs.Errors {
	t.Helper()
	cfg, err := configs.Parse("test.yaml", []byte(src))
	if err == nil {
		t.Fatalf("Parse succeeded; want errors\n%s", src)
	}
	if cfg != nil {
		t.Errorf("Parse returned a config along with its errors")
	}
	var es configs.Errors
	if !errors.As(err, &es) {
		t.Fatalf("Parse error is %T, want configs.Errors: %v", err, err)
	}
	return es
}

// checkErrors compares got with want, in order, field by field.
func checkErrors(t *testing.T, got configs.Errors, want []wantErr) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.File != "test.yaml" || g.Line != w.line || g.Column != w.col || g.Path != w.path || g.Msg != w.msg {
			t.Errorf("error %d:\n got  file %q %d:%d path %q msg %q\n want file %q %d:%d path %q msg %q",
				i, g.File, g.Line, g.Column, g.Path, g.Msg, "test.yaml", w.line, w.col, w.path, w.msg)
		}
	}
}

// abs is where a relative path in a config Parse'd as "test.yaml" points: the working
// directory, the directory of that file.
func abs(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// mustParse parses src as "test.yaml" and fails the test on any error.
func mustParse(t *testing.T, src string) *configs.Config {
	t.Helper()
	cfg, err := configs.Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, src)
	}
	if cfg == nil {
		t.Fatal("Parse returned neither a config nor an error")
	}
	return cfg
}

// okSites is a minimal valid sites section on lines 1-4. Positions in it: the sites list
// 2:3, sites[0] 2:5, its name 2:11, its weight 3:13, its backends list 4:15, backends[0] 4:16.
const okSites = `sites:
  - name: a
    weight: 1
    backends: ["http://10.0.0.1:80"]
`

// okTLSSites is okSites with an https backend, on the same lines.
const okTLSSites = `sites:
  - name: a
    weight: 1
    backends: ["https://10.0.0.1:443"]
`

func TestParseEmpty(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, src string }{
		{"no bytes", ""},
		{"blank lines", "\n  \n\n"},
		{"only a comment", "# nothing here\n"},
		{"empty document marker", "---\n"},
		{"null document", "~\n"},
		{"null word", "null\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkErrors(t, parseErrors(t, tc.src), []wantErr{{1, 1, "", "config is empty"}})
		})
	}
}

func TestParseSeveralDocuments(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, src string
		line      int
	}{
		{"second document", okSites + "---\n" + okSites, 5},
		{"both marked", "---\n" + okSites + "---\n" + okSites, 6},
		{"empty second document", okSites + "---\n", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkErrors(t, parseErrors(t, tc.src), []wantErr{
				{tc.line, 1, "", "more than one YAML document; a config is exactly one"},
			})
		})
	}
}

func TestParseSyntaxErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, src string
		line      int
		msg       string
	}{
		{"unclosed flow list", "sites:\n  - name: a\n    weight: 1\n    backends: [\"http://a\"\n",
			4, "did not find expected ',' or ']'"},
		{"unclosed flow mapping", okSites + "timeouts: {connect: 1s\n",
			5, "did not find expected ',' or '}'"},
		{"comma and no item", okSites + "retries: [1, }\n",
			5, "did not find expected node content"},
		// yaml.v3 names the block the bad line breaks, here the list that starts on line 2.
		{"key outdented into a list", "sites:\n  - name: a\n    weight: 1\n  backends: []\n",
			2, "did not find expected '-' indicator"},
		{"list item in a mapping", "listen:\n  http: \":80\"\n- x\n",
			3, "did not find expected key"},
		{"tab indentation", "listen:\n\thttp: \":8080\"\n",
			2, "found character that cannot start any token"},
		{"unclosed quote", "listen:\n  http: \":8080\n",
			2, "found unexpected end of stream"},
		{"two colons on line 1", "listen: http: \":8080\"\n",
			1, "mapping values are not allowed in this context"},
		{"two colons later", okSites + "admin:\n  listen: a: b\n",
			6, "mapping values are not allowed in this context"},
		{"undefined tag handle", okSites + "admin:\n  listen: !x!y z\n",
			6, "found undefined tag handle"},
		{"control character", "sites:\n  - name: a\x01\n",
			2, "control characters are not allowed"},
		{"invalid UTF-8", okSites + "admin:\n  listen: \"\xff\"\n",
			6, "invalid leading UTF-8 octet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es := parseErrors(t, tc.src)
			checkErrors(t, es, []wantErr{{tc.line, 0, "", "invalid YAML: " + tc.msg}})
			want := "test.yaml:" + strconv.Itoa(tc.line) + ": invalid YAML: " + tc.msg
			if got := es.Error(); got != want {
				t.Errorf("Error() = %q, want %q", got, want)
			}
		})
	}
}

func TestParseUnknownKeys(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, src string
		want      wantErr
	}{
		{"misspelt weight", "sites:\n  - name: a\n    wieght: 1\n    backends: [\"http://10.0.0.1:80\"]\n",
			wantErr{3, 5, "sites[0].wieght", `unknown key "wieght" (did you mean "weight"?)`}},
		{"singular backend", "sites:\n  - name: a\n    weight: 1\n    backend: [\"http://10.0.0.1:80\"]\n",
			wantErr{4, 5, "sites[0].backend", `unknown key "backend" (did you mean "backends"?)`}},
		{"capitalised top-level key", okSites + "Listen:\n  http: \":9000\"\n",
			wantErr{5, 1, "Listen", `unknown key "Listen" (did you mean "listen"?)`}},
		{"misspelt section", okSites + "    helth: {path: /}\n",
			wantErr{5, 5, "sites[0].helth", `unknown key "helth" (did you mean "health"?)`}},
		{"deep key", okSites + "spillover:\n  queue: {size: 10, timout: 1s}\n",
			wantErr{6, 21, "spillover.queue.timout", `unknown key "timout" (did you mean "timeout"?)`}},
		{"nothing close at the top", okSites + "frobnicate: 1\n",
			wantErr{5, 1, "frobnicate", `unknown key "frobnicate" (known keys: access_log, admin, affinity, cluster, headers, limits, listen, outlier, retries, sites, spillover, state, timeouts, tls, websocket)`}},
		{"nothing close in a section", okSites + "timeouts:\n  keepalive: 5s\n",
			wantErr{6, 3, "timeouts.keepalive", `unknown key "keepalive" (known keys: body_idle, connect, drain_delay, idle, read_header, response_header, shutdown)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Exactly one error: the missing weight or backends that the typo leaves
			// behind is not reported on top of it.
			checkErrors(t, parseErrors(t, tc.src), []wantErr{tc.want})
		})
	}
}

func TestParseRepeatedKeys(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, src string
		want      wantErr
	}{
		{"in a site", okSites + "    weight: 2\n",
			wantErr{5, 5, "sites[0].weight", "key repeated (first at line 3)"}},
		{"top level", "listen: {http: \":1000\"}\n" + okSites + "listen: {http: \":2000\"}\n",
			wantErr{6, 1, "listen", "key repeated (first at line 1)"}},
		{"in a flow mapping", okSites + "timeouts: {idle: 1s, connect: 1s, idle: 2s}\n",
			wantErr{5, 35, "timeouts.idle", "key repeated (first at line 5)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkErrors(t, parseErrors(t, tc.src), []wantErr{tc.want})
		})
	}
}

func TestParseWrongTypes(t *testing.T) {
	t.Parallel()
	site := func(line3, line4 string) string {
		return "sites:\n  - name: a\n" + line3 + "\n" + line4 + "\n"
	}
	const backends = `    backends: ["http://10.0.0.1:80"]`
	for _, tc := range []struct {
		name, src string
		want      wantErr
	}{
		{"weight as a word", site("    weight: five", backends),
			wantErr{3, 13, "sites[0].weight", `want a whole number, got "five"`}},
		{"weight as a fraction", site("    weight: 2.5", backends),
			wantErr{3, 13, "sites[0].weight", `want a whole number, got "2.5"`}},
		{"weight quoted", site(`    weight: "5"`, backends),
			wantErr{3, 13, "sites[0].weight", `want a whole number, got "5"`}},
		{"weight too big for int", site("    weight: 99999999999999999999", backends),
			wantErr{3, 13, "sites[0].weight", `want a whole number, got "99999999999999999999"`}},
		{"max_inflight in float notation", okSites + "    max_inflight: 1e3\n",
			wantErr{5, 19, "sites[0].max_inflight", `want a whole number, got "1e3"`}},
		{"backends as a string", site("    weight: 1", `    backends: "http://10.0.0.1:80"`),
			wantErr{4, 15, "sites[0].backends", `want a list, got "http://10.0.0.1:80"`}},
		{"backends as a mapping", site("    weight: 1", "    backends: {a: b}"),
			wantErr{4, 15, "sites[0].backends", "want a list, got a mapping"}},
		{"sites as a mapping", "sites: {name: a, weight: 1}\n",
			wantErr{1, 8, "sites", "want a list, got a mapping"}},
		{"section as a string", "listen: \":8080\"\n" + okSites,
			wantErr{1, 9, "listen", `want a mapping of keys, got ":8080"`}},
		{"section as a list", okSites + "    health: []\n",
			wantErr{5, 13, "sites[0].health", "want a mapping of keys, got a list"}},
		{"name as a list", "sites:\n  - name: [a]\n    weight: 1\n" + backends + "\n",
			wantErr{2, 11, "sites[0].name", "want a single value (a string), got a list"}},
		{"interval without unit", okSites + "    health: {interval: 5}\n",
			wantErr{5, 24, "sites[0].health.interval", `want a duration like 2s or 500ms, got "5"`}},
		{"slow_start without unit", okSites + "    slow_start: 30\n",
			wantErr{5, 17, "sites[0].slow_start", `want a duration like 2s or 500ms, got "30"`}},
		{"bool as a word", okSites + "    elastic: maybe\n",
			wantErr{5, 14, "sites[0].elastic", `want true or false, got "maybe"`}},
		{"number as a word", okSites + "spillover: {resume: high}\n",
			wantErr{5, 21, "spillover.resume", `want a number, got "high"`}},
		{"root as a list", "- a\n- b\n",
			wantErr{1, 1, "", "want a mapping of keys, got a list"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Exactly one error: what the refused value leaves unset is not reported too.
			checkErrors(t, parseErrors(t, tc.src), []wantErr{tc.want})
		})
	}
}

// TestParseReportsEveryProblem: decoding and validation problems come out together,
// sorted by position, although validation finds them in another order.
func TestParseReportsEveryProblem(t *testing.T) {
	t.Parallel()
	src := `retries:
  attempts: 11
sites:
  - name: idc1
    wieght: 5
    backends: ["http://10.0.1.10:8080"]
  - name: IDC2
    weight: 3
    backends: "http://10.0.2.10:8080"
timeouts:
  connect: 0s
  idle: 5
listen:
  http: "8080"
`
	es := parseErrors(t, src)
	checkErrors(t, es, []wantErr{
		{2, 13, "retries.attempts", "must be between 1 (never retry) and 10 tries, got 11"},
		{5, 5, "sites[0].wieght", `unknown key "wieght" (did you mean "weight"?)`},
		{7, 11, "sites[1].name", `"IDC2": use lower-case letters, digits, '-' and '_' (at most 63)`},
		{9, 15, "sites[1].backends", `want a list, got "http://10.0.2.10:8080"`},
		{11, 12, "timeouts.connect", "must be a duration > 0, got 0s"},
		{12, 9, "timeouts.idle", `want a duration like 2s or 500ms, got "5"`},
		{14, 9, "listen.http", `want host:port (e.g. ":8080" or "127.0.0.1:9901"), got "8080"`},
	})
	want := `test.yaml:2:13: retries.attempts: must be between 1 (never retry) and 10 tries, got 11
test.yaml:5:5: sites[0].wieght: unknown key "wieght" (did you mean "weight"?)
test.yaml:7:11: sites[1].name: "IDC2": use lower-case letters, digits, '-' and '_' (at most 63)
test.yaml:9:15: sites[1].backends: want a list, got "http://10.0.2.10:8080"
test.yaml:11:12: timeouts.connect: must be a duration > 0, got 0s
test.yaml:12:9: timeouts.idle: want a duration like 2s or 500ms, got "5"
test.yaml:14:9: listen.http: want host:port (e.g. ":8080" or "127.0.0.1:9901"), got "8080"`
	if got := es.Error(); got != want {
		t.Errorf("Errors.Error() =\n%s\nwant\n%s", got, want)
	}
}

func TestParseValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, src string
		want      []wantErr // nil: the config is valid
	}{
		// listen and admin
		{"listen without port", okSites + "listen:\n  http: localhost\n",
			[]wantErr{{6, 9, "listen.http", `want host:port (e.g. ":8080" or "127.0.0.1:9901"), got "localhost"`}}},
		{"listen port too big", okSites + "listen:\n  http: \":70000\"\n",
			[]wantErr{{6, 9, "listen.http", `port must be a number 0-65535, got "70000"`}}},
		{"listen port named", okSites + "listen:\n  http: \"localhost:http\"\n",
			[]wantErr{{6, 9, "listen.http", `port must be a number 0-65535, got "http"`}}},
		{"no listener", okSites + "listen:\n  http: \"\"\n",
			[]wantErr{{6, 3, "listen", "set listen.http or listen.https"}}},
		{"admin without port", okSites + "admin:\n  listen: \"9901\"\n",
			[]wantErr{{6, 11, "admin.listen", `want host:port (e.g. ":8080" or "127.0.0.1:9901"), got "9901"`}}},
		{"https without tls", okSites + "listen:\n  https: \":8443\"\n",
			[]wantErr{{6, 10, "listen.https", "needs a tls section (acme, or cert_file and key_file)"}}},
		{"https with null tls", okSites + "listen:\n  https: \":8443\"\ntls:\n",
			[]wantErr{{6, 10, "listen.https", "needs a tls section (acme, or cert_file and key_file)"}}},
		{"https with tls", okSites + "listen:\n  https: \":8443\"\ntls:\n  cert_file: c.pem\n  key_file: k.pem\n", nil},
		{"http and https on one address", okSites + "listen:\n  http: \":8443\"\n  https: \":8443\"\ntls:\n  cert_file: c.pem\n  key_file: k.pem\n",
			[]wantErr{{7, 10, "listen.https", "same address as listen.http"}}},
		{"admin on the default http address", okSites + "admin:\n  listen: \":8080\"\n",
			[]wantErr{{6, 11, "admin.listen", "same address as a traffic listener"}}},
		{"admin on the https address", okSites + "listen: {https: \":9443\"}\nadmin: {listen: \":9443\"}\ntls: {cert_file: c.pem, key_file: k.pem}\n",
			[]wantErr{{6, 17, "admin.listen", "same address as a traffic listener"}}},

		// tls
		{"acme and files", okSites + "listen:\n  https: \":8443\"\ntls:\n  acme: {domains: [bank.example.com], storage: st}\n  cert_file: c.pem\n  key_file: k.pem\n",
			[]wantErr{{8, 3, "tls", "use either acme or cert_file/key_file, not both"}}},
		{"empty tls", okSites + "tls: {}\nlisten: {https: \":8443\"}\n",
			[]wantErr{{5, 6, "tls", "set acme, or cert_file and key_file"}}},
		{"cert without key", okSites + "tls:\n  cert_file: c.pem\nlisten: {https: \":8443\"}\n",
			[]wantErr{{6, 3, "tls", "cert_file and key_file go together"}}},
		{"key without cert", okSites + "tls:\n  key_file: k.pem\nlisten: {https: \":8443\"}\n",
			[]wantErr{{6, 3, "tls", "cert_file and key_file go together"}}},
		{"acme without domains", okSites + "tls:\n  acme: {email: ops@example.com, storage: st}\nlisten: {https: \":8443\"}\n",
			[]wantErr{{6, 9, "tls.acme.domains", "list at least one domain"}}},
		{"acme bad domains", okSites + "tls:\n  acme:\n    domains: [bank.example.com, \"a/b\", \"\"]\n    storage: st\nlisten: {https: \":8443\"}\n",
			[]wantErr{
				{7, 33, "tls.acme.domains[1]", `want a DNS name, got "a/b"`},
				{7, 40, "tls.acme.domains[2]", `want a DNS name, got ""`},
			}},
		{"acme bad ca", okSites + "tls:\n  acme:\n    domains: [bank.example.com]\n    ca: acme.example/directory\n    storage: st\nlisten: {https: \":8443\"}\n",
			[]wantErr{{8, 9, "tls.acme.ca", `want the ACME directory URL, got "acme.example/directory"`}}},
		{"acme valid", okSites + "tls:\n  acme: {domains: [bank.example.com], email: ops@example.com, ca: \"https://acme.example/directory\", storage: /var/lib/spillway}\nlisten: {https: \":8443\"}\n", nil},

		// limits
		{"max_header_bytes too small", okSites + "limits:\n  max_header_bytes: 1023\n",
			[]wantErr{{6, 21, "limits.max_header_bytes", "must be between 1024 and 16777216, got 1023"}}},
		{"max_header_bytes too big", okSites + "limits:\n  max_header_bytes: 16777217\n",
			[]wantErr{{6, 21, "limits.max_header_bytes", "must be between 1024 and 16777216, got 16777217"}}},
		{"max_header_bytes zero", okSites + "limits:\n  max_header_bytes: 0\n",
			[]wantErr{{6, 21, "limits.max_header_bytes", "must be between 1024 and 16777216, got 0"}}},
		{"max_header_bytes smallest", okSites + "limits:\n  max_header_bytes: 1024\n", nil},
		{"max_header_bytes largest", okSites + "limits:\n  max_header_bytes: 16777216\n", nil},

		// sites
		{"no sites key", "listen:\n  http: \":8080\"\n",
			[]wantErr{{1, 1, "sites", "list at least one site"}}},
		{"empty sites", "sites: []\n",
			[]wantErr{{1, 8, "sites", "list at least one site"}}},
		{"null sites", "sites:\nlisten: {http: \":8080\"}\n",
			[]wantErr{{1, 7, "sites", "list at least one site"}}},
		{"empty name", "sites:\n  - name: \"\"\n    weight: 1\n    backends: [\"http://10.0.0.1:80\"]\n",
			[]wantErr{{2, 11, "sites[0].name", "every site needs a name"}}},
		{"no name", "sites:\n  - weight: 1\n    backends: [\"http://10.0.0.1:80\"]\n",
			[]wantErr{{2, 5, "sites[0].name", "every site needs a name"}}},
		{"upper-case name", "sites:\n  - name: IDC1\n    weight: 1\n    backends: [\"http://10.0.0.1:80\"]\n",
			[]wantErr{{2, 11, "sites[0].name", `"IDC1": use lower-case letters, digits, '-' and '_' (at most 63)`}}},
		{"name with a space", "sites:\n  - name: \"a b\"\n    weight: 1\n    backends: [\"http://10.0.0.1:80\"]\n",
			[]wantErr{{2, 11, "sites[0].name", `"a b": use lower-case letters, digits, '-' and '_' (at most 63)`}}},
		{"name starting with a dash", "sites:\n  - name: \"-a\"\n    weight: 1\n    backends: [\"http://10.0.0.1:80\"]\n",
			[]wantErr{{2, 11, "sites[0].name", `"-a": use lower-case letters, digits, '-' and '_' (at most 63)`}}},
		{"name of 64", "sites:\n  - name: " + strings.Repeat("a", 64) + "\n    weight: 1\n    backends: [\"http://10.0.0.1:80\"]\n",
			[]wantErr{{2, 11, "sites[0].name", `"` + strings.Repeat("a", 64) + `": use lower-case letters, digits, '-' and '_' (at most 63)`}}},
		{"name of 63 with all kinds", "sites:\n  - name: " + strings.Repeat("a", 59) + "0_-z\n    weight: 1\n    backends: [\"http://10.0.0.1:80\"]\n", nil},
		{"duplicate names", okSites + "  - name: a\n    weight: 1\n    backends: [\"http://10.0.0.2:80\"]\n",
			[]wantErr{{5, 11, "sites[1].name", `"a" is already the name of sites[0]`}}},
		{"weight missing", "sites:\n  - name: a\n    backends: [\"http://10.0.0.1:80\"]\n",
			[]wantErr{{2, 5, "sites[0].weight", `site "a": weight is required (0 takes no share of the split)`}}},
		{"weight null", "sites:\n  - name: a\n    weight:\n    backends: [\"http://10.0.0.1:80\"]\n",
			[]wantErr{{3, 12, "sites[0].weight", `site "a": weight is required (0 takes no share of the split)`}}},
		{"weight missing in one of two", okSites + "  - name: b\n    backends: [\"http://10.0.0.2:80\"]\n",
			[]wantErr{{5, 5, "sites[1].weight", `site "b": weight is required (0 takes no share of the split)`}}},
		{"weight negative", "sites:\n  - name: a\n    weight: -1\n    backends: [\"http://10.0.0.1:80\"]\n",
			[]wantErr{{3, 13, "sites[0].weight", "must be between 0 and 1000, got -1"}}},
		{"weight too big", "sites:\n  - name: a\n    weight: 1001\n    backends: [\"http://10.0.0.1:80\"]\n",
			[]wantErr{{3, 13, "sites[0].weight", "must be between 0 and 1000, got 1001"}}},
		{"weight largest", "sites:\n  - name: a\n    weight: 1000\n    backends: [\"http://10.0.0.1:80\"]\n", nil},
		{"weight zero beside one", "sites:\n  - name: a\n    weight: 0\n    backends: [\"http://10.0.0.1:80\"]\n  - name: b\n    weight: 1\n    backends: [\"http://10.0.0.2:80\"]\n", nil},
		{"all weights zero", "sites:\n  - name: a\n    weight: 0\n    backends: [\"http://10.0.0.1:80\"]\n  - name: b\n    weight: 0\n    backends: [\"http://10.0.0.2:80\"]\n",
			[]wantErr{{2, 3, "sites", "every site has weight 0: at least one must take traffic"}}},
		{"health tcp probe", okSites + "    health: {kind: tcp}\n", nil},
		{"health tcp with a path", okSites + "    health: {kind: tcp, path: /x}\n",
			[]wantErr{{5, 20, "sites[0].health.kind", "a tcp probe only connects: path, host and expect do not apply"}}},
		{"health unknown kind", okSites + "    health: {kind: icmp}\n",
			[]wantErr{{5, 20, "sites[0].health.kind", `want http or tcp, got "icmp"`}}},
		{"health expect range", okSites + "    health: {expect: [200, 204]}\n", nil},
		{"health expect backwards", okSites + "    health: {expect: [300, 200]}\n",
			[]wantErr{{5, 22, "sites[0].health.expect", "want [low, high] with 100 <= low <= high <= 599, got [300 200]"}}},
		{"health initial down", okSites + "    health: {initial: down}\n", nil},
		{"health initial bad", okSites + "    health: {initial: maybe}\n",
			[]wantErr{{5, 23, "sites[0].health.initial", `want up or down, got "maybe"`}}},
		{"outlier off", okSites + "outlier: {consecutive_failures: 0}\n", nil},
		{"outlier max below base", okSites + "outlier: {base_ejection: 1m, max_ejection: 10s}\n",
			[]wantErr{{5, 44, "outlier.max_ejection", "10s is shorter than base_ejection 1m0s"}}},
		{"outlier percent", okSites + "outlier: {max_ejection_percent: 101}\n",
			[]wantErr{{5, 33, "outlier.max_ejection_percent", "must be between 0 and 100, got 101"}}},
		{"retries body limit", okSites + "retries: {max_body_bytes: -1}\n",
			[]wantErr{{5, 27, "retries.max_body_bytes", "must be between 0 and 16777216, got -1"}}},
		{"admin port shared with a wildcard listener", "listen: {http: \":9901\"}\nadmin: {listen: \"127.0.0.1:9901\"}\n" + okSites,
			[]wantErr{{2, 17, "admin.listen", "same address as a traffic listener"}}},
		{"admin on another port", "listen: {http: \":9901\"}\nadmin: {listen: \"127.0.0.1:9902\"}\n" + okSites, nil},
		{"timeout without a sensible unit", "timeouts: {connect: 1ns}\n" + okSites,
			[]wantErr{{1, 21, "timeouts.connect", "must be at least 1ms, got 1ns"}}},
		{"timeout of 1ms", "timeouts: {connect: 1ms}\n" + okSites, nil},
		{"no site has members", "sites:\n  - name: a\n    weight: 0\n  - name: b\n    weight: 1\n    backends: []\n",
			[]wantErr{{2, 3, "sites", "no site has backends or discovery"},
				{4, 5, "sites[1]", `site "b" has weight 1 but no backends or discovery; list its backends, or set weight 0`}}},
		{"weighted site without members", okSites + "  - name: b\n    weight: 1\n",
			[]wantErr{{5, 5, "sites[1]", `site "b" has weight 1 but no backends or discovery; list its backends, or set weight 0`}}},
		{"standby site without members", okSites + "  - name: b\n    weight: 0\n", nil},
		{"backends and discovery", okSites + "    discovery: {dns: \"app.internal:80\"}\n",
			[]wantErr{{5, 16, "sites[0].discovery", "use either backends or discovery, not both"}}},

		// discovery
		{"discovery dns", "sites:\n  - name: a\n    weight: 1\n    discovery: {dns: \"app.aws.internal:8080\"}\n", nil},
		{"discovery srv", "sites:\n  - name: a\n    weight: 1\n    discovery: {dns: _app._tcp.example}\n", nil},
		{"discovery file", "sites:\n  - name: a\n    weight: 1\n    discovery: {file: targets.txt}\n", nil},
		{"discovery with neither", "sites:\n  - name: a\n    weight: 1\n    discovery: {interval: 5s}\n",
			[]wantErr{{4, 16, "sites[0].discovery", "set exactly one of dns or file"}}},
		{"discovery with both", "sites:\n  - name: a\n    weight: 1\n    discovery: {dns: \"a.internal:80\", file: t.txt}\n",
			[]wantErr{{4, 16, "sites[0].discovery", "set exactly one of dns or file"}}},
		{"discovery dns without port", "sites:\n  - name: a\n    weight: 1\n    discovery: {dns: app.aws.internal}\n",
			[]wantErr{{4, 22, "sites[0].discovery.dns", `want host:port for A/AAAA, or an SRV name like _app._tcp.example; got "app.aws.internal"`}}},
		{"discovery interval zero", "sites:\n  - name: a\n    weight: 1\n    discovery: {file: t.txt, interval: 0s}\n",
			[]wantErr{{4, 40, "sites[0].discovery.interval", "must be a duration > 0, got 0s"}}},

		// health, limits and tls of a site
		{"health all wrong", okSites + "    health:\n      path: healthz\n      interval: 1s\n      timeout: 2s\n      rise: 0\n      fall: 0\n",
			[]wantErr{
				{6, 13, "sites[0].health.path", `must start with /, got "healthz"`},
				{8, 16, "sites[0].health.timeout", "2s is longer than the interval 1s"},
				{9, 13, "sites[0].health.rise", "must be between 1 and 100, got 0"},
				{10, 13, "sites[0].health.fall", "must be between 1 and 100, got 0"},
			}},
		{"health interval zero", okSites + "    health:\n      interval: 0s\n",
			[]wantErr{{6, 17, "sites[0].health.interval", "must be a duration > 0, got 0s"}}},
		{"health timeout zero", okSites + "    health:\n      timeout: 0s\n",
			[]wantErr{{6, 16, "sites[0].health.timeout", "must be a duration > 0, got 0s"}}},
		{"health timeout longer than the default interval", okSites + "    health:\n      timeout: 3s\n",
			[]wantErr{{6, 16, "sites[0].health.timeout", "3s is longer than the interval 2s"}}},
		{"health timeout equal to interval", okSites + "    health: {interval: 1s, timeout: 1s}\n", nil},
		{"max_inflight negative", okSites + "    max_inflight: -1\n",
			[]wantErr{{5, 19, "sites[0].max_inflight", "must be between 0 and 100000 (0 or omitted: adaptive), got -1"}}},
		{"max_inflight zero", okSites + "    max_inflight: 0\n", nil},
		{"max_inflight too large", okSites + "    max_inflight: 100001\n",
			[]wantErr{{5, 19, "sites[0].max_inflight", "must be between 0 and 100000 (0 or omitted: adaptive), got 100001"}}},
		{"adaptive with max_inflight", okSites + "    max_inflight: 10\n    adaptive: {floor: 2}\n",
			[]wantErr{{6, 15, "sites[0].adaptive", "a site with max_inflight has a fixed limit; adaptive applies only without it"}}},
		{"adaptive floor zero", okSites + "    adaptive: {floor: 0}\n",
			[]wantErr{{5, 23, "sites[0].adaptive.floor", "must be between 1 and 100000, got 0"}}},
		{"adaptive cap below floor", okSites + "    adaptive: {floor: 10, cap: 5}\n",
			[]wantErr{{5, 32, "sites[0].adaptive.cap", "must be between floor (10) and 100000, got 5"}}},
		{"adaptive initial above cap", okSites + "    adaptive: {cap: 50, initial: 60}\n",
			[]wantErr{{5, 34, "sites[0].adaptive.initial", "must be between floor (8) and cap (50), got 60"}}},
		{"adaptive floor above the default initial", okSites + "    adaptive: {floor: 100}\n", nil},
		{"discovery resolver not an ip", "sites:\n  - name: a\n    weight: 1\n    discovery: {dns: \"app.internal:80\", resolver: \"dns.internal:53\"}\n",
			[]wantErr{{4, 51, "sites[0].discovery.resolver", `want ip:port of a DNS server, e.g. 10.0.0.2:53; got "dns.internal:53"`}}},
		{"discovery resolver for a file", "sites:\n  - name: a\n    weight: 1\n    discovery: {file: t.txt, resolver: \"127.0.0.1:53\"}\n",
			[]wantErr{{4, 40, "sites[0].discovery.resolver", "applies to dns discovery only"}}},
		{"discovery resolver ok", "sites:\n  - name: a\n    weight: 1\n    discovery: {dns: \"_app._tcp.internal\", resolver: \"[::1]:5353\"}\n", nil},
		{"slow_start negative", okSites + "    slow_start: -1s\n",
			[]wantErr{{5, 17, "sites[0].slow_start", "must be >= 0, got -1s"}}},
		{"slow_start zero", okSites + "    slow_start: 0s\n", nil},
		{"backend tls cert without key", okTLSSites + "    tls: {cert_file: c.pem}\n",
			[]wantErr{{5, 10, "sites[0].tls", "cert_file and key_file go together"}}},
		{"backend tls key without cert", okTLSSites + "    tls: {key_file: k.pem}\n",
			[]wantErr{{5, 10, "sites[0].tls", "cert_file and key_file go together"}}},
		{"backend tls ca only", okTLSSites + "    tls: {ca_file: ca.pem, server_name: app.idc}\n", nil},
		{"backend tls insecure", okTLSSites + "    tls: {insecure_skip_verify: true, cert_file: c.pem, key_file: k.pem}\n", nil},
		{"backend tls insecure with a ca", okTLSSites + "    tls: {ca_file: ca.pem, insecure_skip_verify: true}\n",
			[]wantErr{{5, 50, "sites[0].tls.insecure_skip_verify", "verifies nothing, so ca_file and server_name would be ignored; remove one or the other"}}},
		{"backend tls without https backends", okSites + "    tls: {ca_file: ca.pem}\n",
			[]wantErr{{5, 10, "sites[0].tls", `site "a" has no https:// backend for these settings to apply to`}}},

		// spillover, affinity, retries
		{"resume zero", okSites + "spillover:\n  resume: 0\n",
			[]wantErr{{6, 11, "spillover.resume", "must be in (0, 1], got 0"}}},
		{"resume above one", okSites + "spillover:\n  resume: 1.5\n",
			[]wantErr{{6, 11, "spillover.resume", "must be in (0, 1], got 1.5"}}},
		{"resume negative", okSites + "spillover:\n  resume: -0.5\n",
			[]wantErr{{6, 11, "spillover.resume", "must be in (0, 1], got -0.5"}}},
		{"resume not a number", okSites + "spillover:\n  resume: .nan\n",
			[]wantErr{{6, 11, "spillover.resume", "must be in (0, 1], got NaN"}}},
		{"resume one", okSites + "spillover:\n  resume: 1\n", nil},
		{"queue size negative", okSites + "spillover:\n  queue: {size: -1}\n",
			[]wantErr{{6, 17, "spillover.queue.size", "must be between 0 and 1000000, got -1"}}},
		{"queue size zero", okSites + "spillover:\n  queue: {size: 0}\n", nil},
		{"queue timeout zero", okSites + "spillover:\n  queue: {timeout: 0s}\n",
			[]wantErr{{6, 20, "spillover.queue.timeout", "must be a duration > 0, got 0s"}}},
		{"affinity cookie and header", okSites + "affinity: {cookie: SESSION, header: X-Session-Id}\n",
			[]wantErr{{5, 11, "affinity", "use either cookie or header, not both"}}},
		{"affinity bad cookie", okSites + "affinity: {cookie: \"SESS ION\"}\n",
			[]wantErr{{5, 20, "affinity.cookie", `not a valid cookie name: "SESS ION"`}}},
		{"affinity bad header", okSites + "affinity: {header: \"X Session\"}\n",
			[]wantErr{{5, 20, "affinity.header", `not a valid header name: "X Session"`}}},
		{"affinity cookie", okSites + "affinity: {cookie: SESSION}\n", nil},
		{"affinity header", okSites + "affinity: {header: X-Session-Id}\n", nil},
		{"retries attempts negative", okSites + "retries: {attempts: -1}\n",
			[]wantErr{{5, 21, "retries.attempts", "must be between 1 (never retry) and 10 tries, got -1"}}},
		{"retries attempts too many", okSites + "retries: {attempts: 11}\n",
			[]wantErr{{5, 21, "retries.attempts", "must be between 1 (never retry) and 10 tries, got 11"}}},
		{"retries attempts bounds", okSites + "retries: {attempts: 10, budget: 1}\n", nil},
		{"retries none", okSites + "retries: {attempts: 1, budget: 0}\n", nil},
		{"retries budget above one", okSites + "retries: {budget: 1.5}\n",
			[]wantErr{{5, 19, "retries.budget", "must be in [0, 1], got 1.5"}}},
		{"retries budget negative", okSites + "retries: {budget: -0.1}\n",
			[]wantErr{{5, 19, "retries.budget", "must be in [0, 1], got -0.1"}}},
		{"retries budget not a number", okSites + "retries: {budget: .nan}\n",
			[]wantErr{{5, 19, "retries.budget", "must be in [0, 1], got NaN"}}},
		{"retries bad idempotency header", okSites + "retries: {idempotency_header: \"Idem Key\"}\n",
			[]wantErr{{5, 31, "retries.idempotency_header", `not a valid header name: "Idem Key"`}}},
		{"headers underscores unknown", okSites + "headers: {underscores: maybe}\n",
			[]wantErr{{5, 24, "headers.underscores", `want drop, reject or allow, got "maybe"`}}},
		{"headers via with a space", okSites + "headers: {via: \"my proxy\"}\n",
			[]wantErr{{5, 16, "headers.via", "want a name of at most 64 letters, digits and !#$%&'*+-.^_`|~ (or \"\" for no Via), got \"my proxy\""}}},
		{"headers via empty", okSites + "headers: {via: \"\"}\n", nil},
		{"affinity header with an underscore dropped", okSites + "affinity: {header: X_Session}\n",
			[]wantErr{{5, 20, "affinity.header", `"X_Session" has a "_", and headers.underscores is drop: set headers.underscores: allow, or name another header`}}},
		{"affinity header with an underscore allowed", okSites + "affinity: {header: X_Session}\nheaders: {underscores: allow}\n", nil},
		{"admin explain_requests zero", okSites + "admin: {explain_requests: 0}\n",
			[]wantErr{{5, 27, "admin.explain_requests", "must be between 1 and 1000000, got 0"}}},
		{"timeouts body_idle zero", okSites + "timeouts: {body_idle: 0s}\n",
			[]wantErr{{5, 23, "timeouts.body_idle", "must be a duration > 0, got 0s"}}},
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

// TestParseZeroDurationRefused: a duration written as 0s is a mistake, not a request for
// the default.
func TestParseZeroDurationRefused(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"connect", "response_header", "idle", "read_header", "shutdown"} {
		for _, val := range []string{"0s", "-1s"} {
			t.Run(key+"="+val, func(t *testing.T) {
				src := okSites + "timeouts:\n  " + key + ": " + val + "\n"
				col := len("  "+key+": ") + 1
				checkErrors(t, parseErrors(t, src), []wantErr{
					{6, col, "timeouts." + key, "must be a duration > 0, got " + val},
				})
			})
		}
	}
}

func TestParseBackendURLs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url, msg string // msg "": valid
	}{
		{"http://10.0.0.1:8080", ""},
		{"https://app.example:8443", ""},
		{"http://[::1]:8080", ""},
		{"http://app.example", ""},
		{"http://app.example/", ""},
		{"HTTP://app.example:80", ""},
		{"", `want http://host:port or https://host:port, got ""`},
		{"10.0.0.1:8080", `not a URL: "10.0.0.1:8080"`},
		{"localhost:8080", `want http://host:port or https://host:port, got "localhost:8080"`},
		{"ftp://files.example", `want http://host:port or https://host:port, got "ftp://files.example"`},
		{"http://", `no host in "http://"`},
		{"http://:8080", `no host in "http://:8080"`},
		{"http://user:secret@app.example", `credentials in a backend URL are not allowed: "http://user:xxxxx@app.example"`},
		{"http://app.example/api", `a backend is scheme://host:port only; no path, query or fragment: "http://app.example/api"`},
		{"http://app.example?x=1", `a backend is scheme://host:port only; no path, query or fragment: "http://app.example?x=1"`},
		{"http://app.example?", `a backend is scheme://host:port only; no path, query or fragment: "http://app.example?"`},
		{"http://app.example#top", `a backend is scheme://host:port only; no path, query or fragment: "http://app.example#top"`},
		{"http://app.example:0", `port must be 1-65535 in "http://app.example:0"`},
		{"http://app.example:65536", `port must be 1-65535 in "http://app.example:65536"`},
		{"http://app.example:http", `not a URL: "http://app.example:http"`},
	} {
		t.Run(tc.url, func(t *testing.T) {
			src := "sites:\n  - name: a\n    weight: 1\n    backends: [\"" + tc.url + "\"]\n"
			if tc.msg == "" {
				cfg := mustParse(t, src)
				if got := cfg.Sites[0].Backends; len(got) != 1 || got[0] != tc.url {
					t.Errorf("backends = %q, want [%q]", got, tc.url)
				}
				return
			}
			checkErrors(t, parseErrors(t, src), []wantErr{{4, 16, "sites[0].backends[0]", tc.msg}})
		})
	}
}

func TestParseDuplicateBackends(t *testing.T) {
	t.Parallel()
	t.Run("same backend written differently", func(t *testing.T) {
		src := "sites:\n  - name: a\n    weight: 1\n" +
			`    backends: ["http://a:80", "http://A/", "http://a:8080", "http://a:80"]` + "\n"
		checkErrors(t, parseErrors(t, src), []wantErr{
			{4, 31, "sites[0].backends[1]", `"http://A/" is listed twice (first as backends[0])`},
			{4, 61, "sites[0].backends[3]", `"http://a:80" is listed twice (first as backends[0])`},
		})
	})
	t.Run("https default port", func(t *testing.T) {
		src := "sites:\n  - name: a\n    weight: 1\n" +
			`    backends: ["https://b", "https://b:443", "http://b:443"]` + "\n"
		checkErrors(t, parseErrors(t, src), []wantErr{
			{4, 29, "sites[0].backends[1]", `"https://b:443" is listed twice (first as backends[0])`},
		})
	})
	t.Run("same backend in two sites", func(t *testing.T) {
		mustParse(t, okSites+"  - name: b\n    weight: 1\n    backends: [\"http://10.0.0.1:80\"]\n")
	})
}

func TestDefaultsForOmittedKeys(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, okSites)
	if want := (configs.Listen{HTTP: configs.DefaultHTTPListen, H2C: true, Engine: configs.EngineSpillway}); cfg.Listen != want {
		t.Errorf("Listen = %+v, want %+v", cfg.Listen, want)
	}
	// No admin section, no admin address: it must not collide with a listener the config
	// never asked for (listen.http: ":9901" is fine without one).
	if want := (configs.Admin{}); cfg.Admin != want {
		t.Errorf("Admin = %+v, want %+v", cfg.Admin, want)
	}
	if _, err := configs.Parse("t.yaml", []byte("listen: {http: \"127.0.0.1:9901\"}\n"+okSites)); err != nil {
		t.Errorf("listen.http on the admin default port without an admin section: %v", err)
	}
	withAdmin := mustParse(t, okSites+"admin: {token_file: admin.token}\n")
	if off := mustParse(t, okSites+"outlier: {on_5xx: false}\n"); off.Outlier.On5xx {
		t.Error("outlier.on_5xx: false written in the file was replaced by the default true")
	}
	if withAdmin.Admin.Listen != configs.DefaultAdminListen {
		t.Errorf("admin section without listen: Admin.Listen = %q, want %q", withAdmin.Admin.Listen, configs.DefaultAdminListen)
	}
	if cfg.TLS != nil {
		t.Errorf("TLS = %+v, want nil", cfg.TLS)
	}
	if want := (configs.Timeouts{
		Connect:        configs.DefaultConnectTimeout,
		ResponseHeader: configs.DefaultResponseHeader,
		Idle:           configs.DefaultIdleTimeout,
		ReadHeader:     configs.DefaultReadHeaderTimeout,
		Shutdown:       configs.DefaultShutdownTimeout,
		BodyIdle:       configs.DefaultBodyIdle,
	}); cfg.Timeouts != want {
		t.Errorf("Timeouts = %+v, want %+v", cfg.Timeouts, want)
	}
	if want := (configs.Headers{Via: "spillway", Underscores: "drop"}); cfg.Headers != want {
		t.Errorf("Headers = %+v, want %+v", cfg.Headers, want)
	}
	if cfg.Limits.MaxHeaderBytes != configs.DefaultMaxHeaderBytes {
		t.Errorf("MaxHeaderBytes = %d, want %d", cfg.Limits.MaxHeaderBytes, configs.DefaultMaxHeaderBytes)
	}
	if want := (configs.Spillover{Resume: configs.DefaultResume, Queue: configs.Queue{
		Size: configs.DefaultQueueSize, Timeout: configs.DefaultQueueTimeout,
	}}); cfg.Spillover != want {
		t.Errorf("Spillover = %+v, want %+v", cfg.Spillover, want)
	}
	if want := (configs.Retries{
		Attempts: configs.DefaultRetryAttempts, Budget: configs.DefaultRetryBudget,
		MinPerSecond: configs.DefaultRetryMinPerSecond, IdempotencyHeader: configs.DefaultIdempotencyHeader,
		MaxBodyBytes: configs.DefaultRetryMaxBody,
	}); cfg.Retries != want {
		t.Errorf("Retries = %+v, want %+v", cfg.Retries, want)
	}
	if want := (configs.Outlier{
		ConsecutiveFailures: configs.DefaultOutlierFailures, BaseEjection: configs.DefaultBaseEjection,
		MaxEjection: configs.DefaultMaxEjection, MaxEjectionPercent: configs.DefaultMaxEjectionPct,
		On5xx: configs.DefaultOn5xx,
	}); cfg.Outlier != want {
		t.Errorf("Outlier = %+v, want %+v", cfg.Outlier, want)
	}
	if cfg.Affinity != (configs.Affinity{}) {
		t.Errorf("Affinity = %+v, want none", cfg.Affinity)
	}
	s := cfg.Sites[0]
	if s.Health != nil || s.Discovery != nil || s.TLS != nil || s.MaxInflight != 0 || s.SlowStart != 0 || s.Elastic {
		t.Errorf("site = %+v, want no health, discovery, tls, limit, slow start", s)
	}

	// The values the defaults stand for, pinned so that a change to one is deliberate
	// (README.md's config reference lists them).
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"http listen", configs.DefaultHTTPListen, ":8080"},
		{"admin listen", configs.DefaultAdminListen, "127.0.0.1:9901"},
		{"connect", configs.DefaultConnectTimeout, 2 * time.Second},
		{"response header", configs.DefaultResponseHeader, 30 * time.Second},
		{"idle", configs.DefaultIdleTimeout, 90 * time.Second},
		{"read header", configs.DefaultReadHeaderTimeout, 10 * time.Second},
		{"shutdown", configs.DefaultShutdownTimeout, 30 * time.Second},
		{"max header bytes", configs.DefaultMaxHeaderBytes, 65536},
		{"resume", configs.DefaultResume, 0.8},
		{"queue size", configs.DefaultQueueSize, 1000},
		{"queue timeout", configs.DefaultQueueTimeout, 2 * time.Second},
		{"retry attempts", configs.DefaultRetryAttempts, 2},
		{"retry budget", configs.DefaultRetryBudget, 0.2},
		{"idempotency header", configs.DefaultIdempotencyHeader, "Idempotency-Key"},
		{"health path", configs.DefaultHealthPath, "/healthz"},
		{"health interval", configs.DefaultHealthInterval, 2 * time.Second},
		{"health timeout", configs.DefaultHealthTimeout, time.Second},
		{"health rise", configs.DefaultHealthRise, 2},
		{"health fall", configs.DefaultHealthFall, 3},
		{"discovery interval", configs.DefaultDiscoveryInterval, 10 * time.Second},
	} {
		if c.got != c.want {
			t.Errorf("default %s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestDefaultsKeepWhatTheFileSets(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, `listen:
  http: ":9000"
admin:
  listen: "127.0.0.1:9999"
  token_file: admin.token
  explain_requests: 100
sites:
  - name: a
    weight: 7
    backends: ["http://10.0.0.1:80"]
    max_inflight: 0
    slow_start: 0s
    health: {path: /ping, interval: 5s, timeout: 3s, rise: 4, fall: 6}
  - name: b
    weight: 1
    elastic: true
    discovery: {dns: "b.internal:80", interval: 7s}
spillover: {resume: 0.5, queue: {size: 0, timeout: 3s}}
retries: {attempts: 1, budget: 0, idempotency_header: X-Idem}
timeouts: {connect: 1s, response_header: 2s, idle: 3s, read_header: 4s, shutdown: 5s, body_idle: 6s}
limits: {max_header_bytes: 2048}
headers: {via: "", underscores: reject}
`)
	if want := (configs.Listen{HTTP: ":9000", H2C: true, Engine: configs.EngineSpillway}); cfg.Listen != want {
		t.Errorf("Listen = %+v, want %+v", cfg.Listen, want)
	}
	if want := (configs.Admin{Listen: "127.0.0.1:9999", TokenFile: abs(t, "admin.token"), ExplainRequests: 100}); cfg.Admin != want {
		t.Errorf("Admin = %+v, want %+v", cfg.Admin, want)
	}
	if want := (configs.Timeouts{Connect: time.Second, ResponseHeader: 2 * time.Second, Idle: 3 * time.Second,
		ReadHeader: 4 * time.Second, Shutdown: 5 * time.Second, BodyIdle: 6 * time.Second}); cfg.Timeouts != want {
		t.Errorf("Timeouts = %+v, want %+v", cfg.Timeouts, want)
	}
	if want := (configs.Headers{Via: "", Underscores: "reject"}); cfg.Headers != want {
		t.Errorf("Headers = %+v, want %+v (via: \"\" means no Via, not the default)", cfg.Headers, want)
	}
	if cfg.Limits.MaxHeaderBytes != 2048 {
		t.Errorf("MaxHeaderBytes = %d, want 2048", cfg.Limits.MaxHeaderBytes)
	}
	// Zeros the file wrote are kept where zero means something: no queue, no retries.
	if want := (configs.Spillover{Resume: 0.5, Queue: configs.Queue{Size: 0, Timeout: 3 * time.Second}}); cfg.Spillover != want {
		t.Errorf("Spillover = %+v, want %+v", cfg.Spillover, want)
	}
	if want := (configs.Retries{Attempts: 1, Budget: 0, MinPerSecond: configs.DefaultRetryMinPerSecond, IdempotencyHeader: "X-Idem", MaxBodyBytes: configs.DefaultRetryMaxBody}); cfg.Retries != want {
		t.Errorf("Retries = %+v, want %+v", cfg.Retries, want)
	}
	if len(cfg.Sites) != 2 {
		t.Fatalf("got %d sites, want 2", len(cfg.Sites))
	}
	a, b := cfg.Sites[0], cfg.Sites[1]
	if a.Name != "a" || a.Weight != 7 || a.MaxInflight != 0 || a.SlowStart != 0 || a.Elastic {
		t.Errorf("sites[0] = %+v", a)
	}
	if want := (configs.Health{Kind: "http", Path: "/ping", Expect: []int{200, 399}, Interval: 5 * time.Second, Timeout: 3 * time.Second, Rise: 4, Fall: 6, Initial: "up"}); a.Health == nil || !reflect.DeepEqual(*a.Health, want) {
		t.Errorf("sites[0].health = %+v, want %+v", a.Health, want)
	}
	if b.Name != "b" || b.Weight != 1 || !b.Elastic || len(b.Backends) != 0 {
		t.Errorf("sites[1] = %+v", b)
	}
	if want := (configs.Discovery{DNS: "b.internal:80", Interval: 7 * time.Second}); b.Discovery == nil || *b.Discovery != want {
		t.Errorf("sites[1].discovery = %+v, want %+v", b.Discovery, want)
	}
}

func TestDefaultsInsideSections(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, `sites:
  - name: a
    weight: 1
    backends: ["http://10.0.0.1:80"]
    health: {}
  - name: b
    weight: 1
    backends: ["http://10.0.0.2:80"]
    health: {path: /ping, rise: 5}
  - name: c
    weight: 1
    discovery: {file: targets.txt}
`)
	want := []configs.Health{
		{Kind: "http", Path: configs.DefaultHealthPath, Expect: []int{200, 399}, Interval: configs.DefaultHealthInterval, Timeout: configs.DefaultHealthTimeout,
			Rise: configs.DefaultHealthRise, Fall: configs.DefaultHealthFall, Initial: "up"},
		{Kind: "http", Path: "/ping", Expect: []int{200, 399}, Interval: configs.DefaultHealthInterval, Timeout: configs.DefaultHealthTimeout,
			Rise: 5, Fall: configs.DefaultHealthFall, Initial: "up"},
	}
	for i, w := range want {
		if h := cfg.Sites[i].Health; h == nil || !reflect.DeepEqual(*h, w) {
			t.Errorf("sites[%d].health = %+v, want %+v", i, h, w)
		}
	}
	if cfg.Sites[2].Health != nil {
		t.Errorf("sites[2].health = %+v, want nil (no health section, no probe)", cfg.Sites[2].Health)
	}
	if d := cfg.Sites[2].Discovery; d == nil || *d != (configs.Discovery{File: abs(t, "targets.txt"), Interval: configs.DefaultDiscoveryInterval}) {
		t.Errorf("sites[2].discovery = %+v, want file targets.txt every %s", d, configs.DefaultDiscoveryInterval)
	}
}

// TestDefaultsForNullKeys: a key written with no value takes the default, as if left out.
func TestDefaultsForNullKeys(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, okSites+`timeouts:
  connect:
  idle: ~
  shutdown: null
retries:
  attempts:
spillover:
  resume:
limits:
  max_header_bytes:
admin:
  listen:
`)
	if cfg.Timeouts.Connect != configs.DefaultConnectTimeout || cfg.Timeouts.Idle != configs.DefaultIdleTimeout ||
		cfg.Timeouts.Shutdown != configs.DefaultShutdownTimeout {
		t.Errorf("Timeouts = %+v, want the defaults", cfg.Timeouts)
	}
	if cfg.Retries.Attempts != configs.DefaultRetryAttempts {
		t.Errorf("Retries.Attempts = %d, want %d", cfg.Retries.Attempts, configs.DefaultRetryAttempts)
	}
	if cfg.Spillover.Resume != configs.DefaultResume {
		t.Errorf("Spillover.Resume = %g, want %g", cfg.Spillover.Resume, configs.DefaultResume)
	}
	if cfg.Limits.MaxHeaderBytes != configs.DefaultMaxHeaderBytes {
		t.Errorf("MaxHeaderBytes = %d, want %d", cfg.Limits.MaxHeaderBytes, configs.DefaultMaxHeaderBytes)
	}
	if cfg.Admin.Listen != configs.DefaultAdminListen {
		t.Errorf("Admin.Listen = %q, want %q", cfg.Admin.Listen, configs.DefaultAdminListen)
	}
}

func TestDefaultsHTTPSOnly(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, okSites+"listen:\n  https: \":8443\"\ntls: {cert_file: c.pem, key_file: k.pem}\n")
	if want := (configs.Listen{HTTPS: ":8443", H2C: true, Engine: configs.EngineSpillway}); cfg.Listen != want {
		t.Errorf("Listen = %+v, want %+v (no plain http listener when only https is set)", cfg.Listen, want)
	}
	if want := (configs.TLS{CertFile: abs(t, "c.pem"), KeyFile: abs(t, "k.pem")}); cfg.TLS == nil || *cfg.TLS != want {
		t.Errorf("TLS = %+v, want %+v", cfg.TLS, want)
	}
}

func TestConfigBuiltInCode(t *testing.T) {
	t.Parallel()
	t.Run("defaults fill zero values", func(t *testing.T) {
		c := &configs.Config{
			Timeouts: configs.Timeouts{Connect: 5 * time.Second},
			Sites: []configs.Site{
				{Name: "a", Backends: []string{"http://10.0.0.1:80"}, Health: &configs.Health{Rise: 7}},
				{Name: "b", Weight: 1, Discovery: &configs.Discovery{DNS: "b.internal:80"}},
			},
		}
		c.SetDefaults()
		if c.Listen.HTTP != configs.DefaultHTTPListen || c.Admin.Listen != "" {
			t.Errorf("listeners = %+v %+v", c.Listen, c.Admin)
		}
		if c.Timeouts.Connect != 5*time.Second || c.Timeouts.Idle != configs.DefaultIdleTimeout {
			t.Errorf("Timeouts = %+v, want connect 5s kept and idle defaulted", c.Timeouts)
		}
		if c.Retries.Attempts != configs.DefaultRetryAttempts || c.Spillover.Resume != configs.DefaultResume {
			t.Errorf("Retries %+v Spillover %+v, want defaults", c.Retries, c.Spillover)
		}
		if h := c.Sites[0].Health; h.Rise != 7 || h.Fall != configs.DefaultHealthFall || h.Path != configs.DefaultHealthPath {
			t.Errorf("sites[0].health = %+v", h)
		}
		if d := c.Sites[1].Discovery; d.Interval != configs.DefaultDiscoveryInterval {
			t.Errorf("sites[1].discovery = %+v", d)
		}
		// No file, so no weight is "missing": site a has weight 0 and that is valid.
		if err := c.Validate(); err != nil {
			t.Errorf("Validate: %v", err)
		}
		if c.Has("sites[0].weight") || c.Has("") || c.Has("timeouts.connect") {
			t.Error("Has reports true for a Config built in code")
		}
	})
	t.Run("errors have no position", func(t *testing.T) {
		c := &configs.Config{Sites: []configs.Site{{Name: "a", Weight: 1, Backends: []string{"ftp://x"}}}}
		c.SetDefaults()
		c.Spillover.Resume = 2
		err := c.Validate()
		var es configs.Errors
		if !errors.As(err, &es) {
			t.Fatalf("Validate error is %T, want configs.Errors: %v", err, err)
		}
		want := `sites[0].backends[0]: want http://host:port or https://host:port, got "ftp://x"
spillover.resume: must be in (0, 1], got 2`
		if got := es.Error(); got != want {
			t.Errorf("Validate() =\n%s\nwant\n%s", got, want)
		}
		for _, e := range es {
			if e.File != "" || e.Line != 0 || e.Column != 0 {
				t.Errorf("error %q has position %q %d:%d, want none", e.Msg, e.File, e.Line, e.Column)
			}
		}
	})
	t.Run("errorf without a file", func(t *testing.T) {
		e := (&configs.Config{}).Errorf("sites[0].weight", "too %s", "heavy")
		if *e != (configs.Error{Path: "sites[0].weight", Msg: "too heavy"}) {
			t.Errorf("Errorf = %+v", *e)
		}
		if got, want := e.Error(), "sites[0].weight: too heavy"; got != want {
			t.Errorf("Error() = %q, want %q", got, want)
		}
	})
}

// hasSrc is a valid file with a leading comment, so that the root mapping starts on line 2.
const hasSrc = `# positions test
listen:
  http: ":9000"
timeouts:
  connect:
sites:
  - name: a
    weight: 0
    backends: ["http://10.0.0.1:80"]
    health: {}
  - name: b
    weight: 1
    backends: ["http://10.0.0.2:80"]
`

func TestHas(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, hasSrc)
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"", true},
		{"listen", true},
		{"listen.http", true},
		{"listen.https", false},
		{"admin", false},
		{"admin.listen", false},
		{"timeouts", true},
		{"timeouts.connect", false}, // written with no value
		{"timeouts.idle", false},
		{"sites", true},
		{"sites[0]", true},
		{"sites[0].weight", true}, // an explicit 0
		{"sites[0].backends[0]", true},
		{"sites[0].backends[1]", false},
		{"sites[0].health", true},
		{"sites[0].health.path", false},
		{"sites[1].health", false},
		{"sites[2]", false},
		{"sites.0", false},
	} {
		if got := cfg.Has(tc.path); got != tc.want {
			t.Errorf("Has(%q) = %v, want %v", tc.path, got, tc.want)
		}
	}
	// Defaults do not count as set.
	if cfg.Sites[0].Health.Path != configs.DefaultHealthPath || cfg.Timeouts.Connect != configs.DefaultConnectTimeout {
		t.Errorf("defaults not applied: health %+v, timeouts %+v", cfg.Sites[0].Health, cfg.Timeouts)
	}
}

func TestErrorfPositions(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, hasSrc)
	for _, tc := range []struct {
		path      string
		line, col int
	}{
		{"listen.http", 3, 9},               // the value
		{"listen.https", 3, 3},              // not set: the listen mapping
		{"timeouts.connect", 5, 11},         // written with no value: where the value would be
		{"timeouts.idle", 5, 3},             // not set: the timeouts mapping
		{"sites[0].weight", 8, 13},          // the value
		{"sites[0].health.rise", 10, 13},    // the empty health mapping
		{"sites[1].health.rise", 11, 5},     // sites[1]
		{"sites[1].backends[0]", 13, 16},    // a list item
		{"sites[5].name", 7, 3},             // no sites[5]: the sites list
		{"spillover.queue.size", 2, 1},      // nothing set: the whole file
		{"", 2, 1},                          // the whole file
		{"sites[0].backends[0].x.y", 9, 16}, // deeper than the schema
	} {
		e := cfg.Errorf(tc.path, "slot %d is %s", 3, "busy")
		want := configs.Error{File: "test.yaml", Line: tc.line, Column: tc.col, Path: tc.path, Msg: "slot 3 is busy"}
		if *e != want {
			t.Errorf("Errorf(%q) = %+v, want %+v", tc.path, *e, want)
		}
	}
	if got, want := cfg.Errorf("listen.http", "port %d is taken", 9000).Error(), "test.yaml:3:9: listen.http: port 9000 is taken"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestErrorFormat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  configs.Error
		want string
	}{
		{configs.Error{File: "f.yaml", Line: 3, Column: 7, Path: "sites[0].weight", Msg: "bad"}, "f.yaml:3:7: sites[0].weight: bad"},
		{configs.Error{File: "f.yaml", Line: 3, Path: "sites", Msg: "bad"}, "f.yaml:3: sites: bad"},
		{configs.Error{File: "f.yaml", Line: 2, Column: 1, Msg: "config is empty"}, "f.yaml:2:1: config is empty"},
		{configs.Error{File: "f.yaml", Path: "sites", Msg: "bad"}, "f.yaml: sites: bad"},
		{configs.Error{File: "f.yaml", Column: 4, Msg: "bad"}, "f.yaml: bad"}, // a column without a line means nothing
		{configs.Error{Line: 3, Column: 4, Msg: "bad"}, "3:4: bad"},
		{configs.Error{Path: "listen", Msg: "bad"}, "listen: bad"},
		{configs.Error{Msg: "bad"}, "bad"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("%+v.Error() = %q, want %q", tc.err, got, tc.want)
		}
	}
	es := configs.Errors{
		{File: "f.yaml", Line: 1, Column: 1, Path: "a", Msg: "one"},
		{File: "f.yaml", Line: 2, Column: 5, Path: "b", Msg: "two"},
	}
	if got, want := es.Error(), "f.yaml:1:1: a: one\nf.yaml:2:5: b: two"; got != want {
		t.Errorf("Errors.Error() = %q, want %q", got, want)
	}
	if got := (configs.Errors{}).Error(); got != "" {
		t.Errorf("empty Errors.Error() = %q, want \"\"", got)
	}
}

// checkExample checks one of the shipped example configs: the 5:3:2 split.
func checkExample(t *testing.T, cfg *configs.Config, backend0 string) {
	t.Helper()
	want := []struct {
		name   string
		weight int
	}{{"idc1", 5}, {"idc2", 3}, {"aws", 2}}
	if len(cfg.Sites) != len(want) {
		t.Fatalf("got %d sites, want %d", len(cfg.Sites), len(want))
	}
	for i, w := range want {
		s := cfg.Sites[i]
		if s.Name != w.name || s.Weight != w.weight || (len(s.Backends) != 2 && s.Discovery == nil) {
			t.Errorf("sites[%d] = %s weight %d with %d backends, want %s weight %d with 2 (or discovery)", i, s.Name, s.Weight, len(s.Backends), w.name, w.weight)
		}
	}
	if got := cfg.Sites[0].Backends[0]; got != backend0 {
		t.Errorf("sites[0].backends[0] = %q, want %q", got, backend0)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate after Parse: %v", err)
	}
}

func TestExampleConfigs(t *testing.T) {
	t.Parallel()
	t.Run("spillway.yaml", func(t *testing.T) {
		cfg, err := configs.Load("spillway.yaml")
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		checkExample(t, cfg, "http://10.0.1.10:8080")
		if cfg.Listen.HTTP != ":8080" || cfg.Limits.MaxHeaderBytes != 65536 || cfg.Timeouts.Shutdown != 30*time.Second {
			t.Errorf("listen %+v, limits %+v, timeouts %+v", cfg.Listen, cfg.Limits, cfg.Timeouts)
		}
		if aws := cfg.Sites[2]; !aws.Elastic || aws.Discovery == nil || aws.Discovery.DNS != "app.aws.internal:8080" || aws.SlowStart != 30*time.Second {
			t.Errorf("aws = %+v, want elastic with DNS discovery and 30s slow start", aws)
		}
	})
	t.Run("demo.yaml", func(t *testing.T) {
		cfg, err := configs.Load("demo.yaml")
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		checkExample(t, cfg, "http://127.0.0.1:18101")
		if cfg.Listen.HTTP != "127.0.0.1:8080" || cfg.Timeouts.Connect != time.Second || cfg.Timeouts.Idle != configs.DefaultIdleTimeout {
			t.Errorf("listen %+v, timeouts %+v", cfg.Listen, cfg.Timeouts)
		}
	})
	t.Run("embedded demo", func(t *testing.T) {
		file, err := os.ReadFile("demo.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(configs.Demo, file) {
			t.Error("configs.Demo differs from demo.yaml")
		}
		cfg, err := configs.Parse("demo.yaml", configs.Demo)
		if err != nil {
			t.Fatalf("Parse(Demo): %v", err)
		}
		checkExample(t, cfg, "http://127.0.0.1:18101")
	})
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	t.Run("missing file", func(t *testing.T) {
		cfg, err := configs.Load(filepath.Join(dir, "nope.yaml"))
		if cfg != nil || err == nil {
			t.Fatalf("Load = %v, %v; want an error", cfg, err)
		}
		if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "read config: ") {
			t.Errorf("error = %v, want a wrapped fs.ErrNotExist", err)
		}
		var es configs.Errors
		if errors.As(err, &es) {
			t.Errorf("a read failure is not a config Errors: %v", es)
		}
	})
	t.Run("errors name the file", func(t *testing.T) {
		path := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(path, []byte(okSites+"spillover: {resume: 0}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := configs.Load(path)
		if cfg != nil || err == nil {
			t.Fatalf("Load = %v, %v; want an error", cfg, err)
		}
		if got, want := err.Error(), path+":5:21: spillover.resume: must be in (0, 1], got 0"; got != want {
			t.Errorf("error = %q, want %q", got, want)
		}
	})
	t.Run("valid file", func(t *testing.T) {
		path := filepath.Join(dir, "good.yaml")
		if err := os.WriteFile(path, []byte(okSites), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := configs.Load(path)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if len(cfg.Sites) != 1 || cfg.Sites[0].Name != "a" || cfg.Sites[0].Weight != 1 {
			t.Errorf("sites = %+v", cfg.Sites)
		}
	})
}

// TestParseAliases: YAML anchors and aliases are resolved like any value.
func TestParseAliases(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, `sites:
  - name: a
    weight: 1
    backends: ["http://10.0.0.1:80"]
    health: &probe {path: /ping, interval: 3s}
  - name: b
    weight: 1
    backends: ["http://10.0.0.2:80"]
    health: *probe
`)
	for i, s := range cfg.Sites {
		if s.Health == nil || s.Health.Path != "/ping" || s.Health.Interval != 3*time.Second || s.Health.Timeout != configs.DefaultHealthTimeout {
			t.Errorf("sites[%d].health = %+v", i, s.Health)
		}
	}
	if cfg.Sites[0].Health == cfg.Sites[1].Health {
		t.Error("two sites share one *Health")
	}
}

func TestAliases(t *testing.T) {
	t.Parallel()
	// A value of the wrong type reached through an alias is reported where the alias is used.
	_, err := configs.Parse("a.yaml", []byte("sites:\n  - name: a\n    weight: &w five\n    backends: [\"http://10.0.0.1:80\"]\n  - name: b\n    weight: *w\n    backends: [\"http://10.0.0.2:80\"]\n"))
	var errs configs.Errors
	if !errors.As(err, &errs) || len(errs) != 2 {
		t.Fatalf("got %v, want 2 errors", err)
	}
	if errs[0].Line != 3 || errs[1].Line != 6 || errs[1].Column != 13 {
		t.Fatalf("errors at %d and %d:%d, want 3 and 6:13 (the alias):\n%v", errs[0].Line, errs[1].Line, errs[1].Column, err)
	}

	// A small file whose aliases stand for a million values is refused, not expanded.
	var b strings.Builder
	b.WriteString("sites:\n  - &s {name: a, weight: 1, backends: [")
	for i := range 1000 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("\"http://10.0.0.1:" + strconv.Itoa(i+1) + "\"")
	}
	b.WriteString("]}\n")
	for range 1000 {
		b.WriteString("  - *s\n")
	}
	_, err = configs.Parse("bomb.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "more than 100000 values once aliases are expanded") {
		t.Fatalf("alias bomb: %.300v", err)
	}
}

func TestAdaptiveDefaults(t *testing.T) {
	t.Parallel()
	cfg := mustParse(t, `sites:
  - {name: a, weight: 1, backends: ["http://10.0.0.1:80"]}
  - {name: b, weight: 1, backends: ["http://10.0.0.2:80"], max_inflight: 50}
  - {name: c, weight: 1, backends: ["http://10.0.0.3:80"], adaptive: {floor: 100}}
  - {name: d, weight: 1, backends: ["http://10.0.0.4:80"], adaptive: {cap: 10}}
`)
	want := []*configs.Adaptive{
		{Floor: configs.DefaultAdaptiveFloor, Cap: configs.DefaultAdaptiveCap, Initial: configs.DefaultAdaptiveInitial},
		nil, // a fixed limit learns nothing
		{Floor: 100, Cap: configs.DefaultAdaptiveCap, Initial: 100},
		{Floor: configs.DefaultAdaptiveFloor, Cap: 10, Initial: 10},
	}
	for i, w := range want {
		if got := cfg.Sites[i].Adaptive; !reflect.DeepEqual(got, w) {
			t.Errorf("sites[%d].adaptive = %+v, want %+v", i, got, w)
		}
	}
}
