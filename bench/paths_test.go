package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestReadPaths(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "body.json"), []byte(`{"a":1}`), 0o644)
	os.Mkdir(filepath.Join(dir, "adir"), 0o755)
	big := make([]byte, maxBodyFile+1)
	os.WriteFile(filepath.Join(dir, "big.bin"), big, 0o644)
	const target = "https://bank.example:8443"
	for _, tc := range []struct {
		name, in string
		want     []string // entries as "METHOD URL bodylen"
		errs     []string // each must appear, with its file:line
	}{
		{name: "paths and URLs", in: "GET /\n  # comment\n\nPOST /pay?x=1 body.json\r\nPUT\thttp://other:80/x\n",
			want: []string{"GET https://bank.example:8443/ 0", "POST https://bank.example:8443/pay?x=1 7", "PUT http://other:80/x 0"}},
		{name: "empty", in: "# nothing\n\n", errs: []string{"paths.txt: no request listed"}},
		{name: "every problem at once", in: strings.Join([]string{
			"get /lower",            // 1
			"GET",                   // 2
			"GET / body.json extra", // 3
			"GET ftp://x/",          // 4
			"GET relative/path",     // 5
			"GET //evil.example/",   // 6
			"GET http://u:p@host/",  // 7
			"POST / missing.json",   // 8
			"POST / adir",           // 9
			"POST / big.bin",        // 10
			"GET /\x00nul",          // 11
			"GET /\xff\xfe",         // 12
			"G{T /",                 // 13
			"GET http://",           // 14
			"GET /%zz",              // 15
			"GET /ok",               // 16: fine
		}, "\n"), errs: []string{
			"paths.txt:1: method", "paths.txt:2: want METHOD URL [BODYFILE], got 1", "paths.txt:3: want METHOD URL [BODYFILE], got 4",
			"paths.txt:4: url", "paths.txt:5: url", "paths.txt:6: url", "paths.txt:7: url", "paths.txt:8: body file",
			"paths.txt:9: body file", "paths.txt:10: body file", "paths.txt:11: control character", "paths.txt:12: not valid UTF-8",
			"paths.txt:13: method", "paths.txt:14: url", "paths.txt:15: path"}},
		{name: "a line too long", in: "GET /\nGET /" + strings.Repeat("a", maxPathsLine) + "\n", errs: []string{"paths.txt:2: line longer than"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "paths.txt")
			os.WriteFile(p, []byte(tc.in), 0o644)
			got, err := ReadPaths(p, target)
			if len(tc.errs) > 0 {
				if err == nil {
					t.Fatalf("accepted: %v", got)
				}
				lines := strings.Split(err.Error(), "\n")
				if len(lines) != len(tc.errs) {
					t.Errorf("%d errors, want %d:\n%v", len(lines), len(tc.errs), err)
				}
				for _, want := range tc.errs {
					if !strings.Contains(err.Error(), filepath.Join(dir, want)) {
						t.Errorf("no %q in\n%v", want, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var have []string
			for _, e := range got {
				have = append(have, e.Method+" "+e.URL+" "+strconv.Itoa(len(e.Body)))
			}
			if strings.Join(have, "|") != strings.Join(tc.want, "|") {
				t.Errorf("got %v, want %v", have, tc.want)
			}
		})
	}
	if _, err := ReadPaths(filepath.Join(dir, "absent.txt"), target); err == nil {
		t.Error("a missing paths file was accepted")
	}
	if _, err := ReadPaths(filepath.Join(dir, "body.json"), "not a url"); err == nil || !strings.Contains(err.Error(), "target") {
		t.Errorf("bad target: %v", err)
	}
}

func TestParseHeader(t *testing.T) {
	for in, want := range map[string]string{
		"X-Channel: mobile":        "X-Channel=mobile",
		"x-channel:mobile ":        "X-Channel=mobile",
		"Authorization: Bearer ab": "Authorization=Bearer ab",
		"Empty:":                   "Empty=",
		"no colon":                 "error",
		": value":                  "error",
		"Bad Name: x":              "error",
		"X-A: line\nbreak":         "error",
		"X-(: x":                   "error",
	} {
		n, v, err := ParseHeader(in)
		got := n + "=" + v
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

// The metrics parser reads what Spillway serves and refuses what it cannot read, naming
// the line, rather than reading it as zero.
func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(`# HELP spillway_shed_total x
# TYPE spillway_shed_total counter
spillway_shed_total{reason="queue_full"} 3
spillway_shed_total{reason="queue_timeout"} 4 1700000000000
spillway_build_info{goversion="go1.26.8",revision="abc\"d\\e",version="(devel)"} 1
go_goroutines 42
spillway_spillover_total{from="idc1",reason="full",to="aws",} 5
process_resident_memory_bytes 1.5e+07
odd NaN
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Sum("spillway_shed_total", nil); got != 7 {
		t.Errorf("sheds %v", got)
	}
	if bi, _ := m.Find("spillway_build_info"); bi["revision"] != `abc"d\e` || bi["version"] != "(devel)" {
		t.Errorf("build info %v", bi)
	}
	if got := m.By("spillway_spillover_total", "to"); got["aws"] != 5 {
		t.Errorf("spills %v", got)
	}
	if m.Sum("go_goroutines", nil) != 42 || m.Sum("process_resident_memory_bytes", nil) != 1.5e7 || !m.Has("odd") {
		t.Errorf("%v", m)
	}
	for _, bad := range []string{
		"<html><body>Bad Gateway</body></html>",
		`x{a="b} 1`,
		`x{a=b} 1`,
		"x 1 2 3",
		"x one",
		"9x 1",
		strings.Repeat("x", maxMetricLine+1) + " 1",
	} {
		if _, err := parseMetrics(strings.NewReader("ok 1\n" + bad + "\n")); err == nil || !strings.Contains(err.Error(), "line 2") && !strings.Contains(err.Error(), "too long") {
			t.Errorf("%.50q: %v", bad, err)
		}
	}
}
