package proxy_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy"
)

// TestBuildRefusesUnsupportedKeys checks that a valid config using a feature this version
// does not have is refused by Build, with every such key reported at its file:line, and that
// a config without them builds.
func TestBuildRefusesUnsupportedKeys(t *testing.T) {
	const file = "spillway-test.yaml"
	const base = `listen:
  http: "127.0.0.1:8080"
sites:
  - name: idc1
    weight: 5
    backends: ["http://127.0.0.1:18101"]
`
	for _, tc := range []struct {
		name string
		// site0 is appended to sites[0]; more sites and top-level keys follow in rest.
		site0, rest string
		// want maps each refused key path to a marker that finds its line in the file.
		want map[string]string
	}{
		{name: "nothing unsupported"},
		{name: "sites[0].max_inflight", site0: "    max_inflight: 256\n",
			want: map[string]string{"sites[0].max_inflight": "max_inflight:"}},
		{name: "sites[0].slow_start", site0: "    slow_start: 30s\n",
			want: map[string]string{"sites[0].slow_start": "slow_start:"}},
		{name: "sites[0].tls is supported", rest: "  - name: idc2\n    weight: 1\n    backends: [\"https://127.0.0.1:18201\"]\n    tls: {server_name: app.idc2}\n"},
		{name: "sites[1].elastic", rest: "  - name: aws\n    weight: 2\n    backends: [\"http://127.0.0.1:18301\"]\n    elastic: true\n",
			want: map[string]string{"sites[1].elastic": "elastic:"}},
		{name: "sites[1].discovery", rest: "  - name: aws\n    weight: 2\n    discovery: {dns: \"app.aws.internal:8080\"}\n",
			want: map[string]string{"sites[1].discovery": "discovery:"}},
		{name: "spillover", rest: "spillover: {resume: 0.5}\n", want: map[string]string{"spillover": "spillover:"}},
		{name: "affinity", rest: "affinity: {cookie: SESSION}\n", want: map[string]string{"affinity": "affinity:"}},
		{name: "admin", rest: "admin: {listen: \"127.0.0.1:9901\"}\n", want: map[string]string{"admin": "admin:"}},
		{name: "every problem at once", site0: "    slow_start: 10s\n    max_inflight: 10\n",
			rest: "spillover: {resume: 0.5}\n",
			want: map[string]string{"sites[0].slow_start": "slow_start:", "sites[0].max_inflight": "max_inflight:", "spillover": "spillover:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml := base + tc.site0 + tc.rest
			cfg, err := configs.Parse(file, []byte(yaml))
			if err != nil {
				t.Fatalf("configs.Parse refused a config Build should see:\n%v", err)
			}
			reg := balancer.NewRegistry()
			tbl, err := proxy.Build(cfg, proxy.Deps{Registry: reg})
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Build: %v", err)
				}
				tbl.Close()
				return
			}
			if err == nil {
				tbl.Close()
				t.Fatalf("Build accepted %s", tc.name)
			}
			if tbl != nil {
				t.Errorf("Build returned a Table with its error")
			}
			var errs configs.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Build error %T %q, want configs.Errors", err, err)
			}
			var paths []string
			for _, e := range errs {
				paths = append(paths, e.Path)
			}
			for path, marker := range tc.want {
				i := slices.Index(paths, path)
				if i < 0 {
					t.Errorf("no error for %s; got %q", path, err)
					continue
				}
				line := lineOf(t, yaml, marker)
				e := errs[i]
				if e.File != file || e.Line != line {
					t.Errorf("%s: reported at %s:%d, want %s:%d", path, e.File, e.Line, file, line)
				}
				if prefix := fmt.Sprintf("%s:%d:", file, line); !strings.HasPrefix(e.Error(), prefix) {
					t.Errorf("%s: message %q does not start with %q", path, e.Error(), prefix)
				}
				if !strings.Contains(err.Error(), e.Error()) {
					t.Errorf("Build's error %q leaves out %q", err, e.Error())
				}
			}
			if len(errs) != len(tc.want) {
				t.Errorf("%d errors, want %d: %q", len(errs), len(tc.want), err)
			}
		})
	}
}

// lineOf is the 1-based line of the only line of yaml that contains marker.
func lineOf(t *testing.T, yaml, marker string) int {
	t.Helper()
	found := 0
	for i, l := range strings.Split(yaml, "\n") {
		if strings.Contains(l, marker) {
			if found != 0 {
				t.Fatalf("marker %q is on lines %d and %d", marker, found, i+1)
			}
			found = i + 1
		}
	}
	if found == 0 {
		t.Fatalf("marker %q not in the config", marker)
	}
	return found
}

func TestBuildNeedsRegistry(t *testing.T) {
	cfg := mustConfig(t, configYAML([]site{{"idc1", 1, []string{"http://127.0.0.1:1"}}}, ""))
	if tbl, err := proxy.Build(cfg, proxy.Deps{}); err == nil {
		tbl.Close()
		t.Fatal("Build without a Registry succeeded")
	}
}
