package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// `spillway version` says which build this is: version, revision, Go version, platform.
func TestVersionCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`^spillway \S+ \(revision \S+, ` + regexp.QuoteMeta(runtime.Version()) + `, ` +
		regexp.QuoteMeta(runtime.GOOS+"/"+runtime.GOARCH) + `\)\n$`)
	if !want.MatchString(out.String()) {
		t.Errorf("spillway version printed %q, want it to match %s", out.String(), want)
	}
}

// A running proxy exports spillway_build_info with the same version, revision and Go
// version on its admin listener's /metrics.
func TestBuildInfoMetric(t *testing.T) {
	t.Setenv("SPILLWAY_ADMIN_TOKEN", "")
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer backend.Close()
	r := startRun(t, opsWriteConfig(t, opsConfig(backend.URL, 1, 1, "")))
	status, body := r.call(http.MethodGet, r.admin+"/metrics", "", "")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d", status)
	}
	b := readBuildInfo()
	want := fmt.Sprintf(`spillway_build_info{goversion=%q,revision=%q,version=%q} 1`, b.GoVersion, b.Revision, b.Version)
	if !strings.Contains(body, want) {
		t.Errorf("/metrics lacks %s", want)
	}
}
