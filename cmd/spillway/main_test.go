package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Two goroutines of certmagic's that no owner can stop: the ACME rate limiter,
		// which certmagic keeps in a package-level map per CA and account for the life of
		// the process (see its "TODO: stop rate limiter"), and FileStorage's lock-file
		// refresher, which notices a released lock only at its next 5-second tick. Every
		// other goroutine of the ACME front is stopped by frontend.Certs.Stop.
		goleak.IgnoreTopFunction("github.com/caddyserver/certmagic.(*RingBufferRateLimiter).permit"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
	)
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidate(t *testing.T) {
	good := writeFile(t, "good.yaml", `sites:
  - {name: idc1, weight: 5, backends: ["http://127.0.0.1:1"]}
  - {name: idc2, weight: 3, backends: ["http://127.0.0.1:2"]}
`)
	bad := writeFile(t, "bad.yaml", `listen:
  http: "nonsense"
sites:
  - name: idc1
    weight: -1
    backends: ["ftp://127.0.0.1:1"]
  - name: idc1
    wieght: 3
    backends: ["http://127.0.0.1:2"]
timeouts:
  connect: 0s
`)
	for _, tc := range []struct {
		name      string
		args      []string
		code      int
		stdout    string
		stderrRE  []string // each must match a line of stderr
		stderrLen int      // lines of stderr, when > 0
	}{
		{name: "valid", args: []string{good}, stdout: good + ": ok (2 sites, split 5:3)\n"},
		{name: "every problem with its line", args: []string{bad}, code: 1, stderrRE: []string{
			`^` + regexp.QuoteMeta(bad) + `:2:9: listen.http: want host:port`,
			`^` + regexp.QuoteMeta(bad) + `:5:13: sites\[0\].weight: must be between 0 and 1000, got -1`,
			`^` + regexp.QuoteMeta(bad) + `:6:16: sites\[0\].backends\[0\]: want http://host:port`,
			`^` + regexp.QuoteMeta(bad) + `:8:5: sites\[1\].wieght: unknown key "wieght" \(did you mean "weight"\?\)`,
		}},
		{name: "missing file", args: []string{filepath.Join(t.TempDir(), "nope.yaml")}, code: 1, stderrRE: []string{`no such file`}},
		{name: "no file", args: nil, code: 2, stderrRE: []string{`usage: spillway validate FILE`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append([]string{"validate"}, tc.args...), &stdout, &stderr)
			if code := exitCode(err, &stderr); code != tc.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr.String())
			}
			if stdout.String() != tc.stdout {
				t.Fatalf("stdout %q, want %q", stdout.String(), tc.stdout)
			}
			lines := strings.Split(stderr.String(), "\n")
			for _, re := range tc.stderrRE {
				found := false
				for _, l := range lines {
					if regexp.MustCompile(re).MatchString(l) {
						found = true
					}
				}
				if !found {
					t.Errorf("no stderr line matches %s; stderr:\n%s", re, stderr.String())
				}
			}
		})
	}
}

func TestValidateExampleConfigs(t *testing.T) {
	for _, f := range []string{"../../configs/spillway.yaml", "../../configs/demo.yaml"} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), []string{"validate", f}, &stdout, &stderr); err != nil {
			t.Fatalf("validate %s: %v\n%s", f, err, stderr.String())
		}
		if !strings.Contains(stdout.String(), "split 5:3:2") {
			t.Fatalf("validate %s: %q, want split 5:3:2", f, stdout.String())
		}
	}
}

// logLines is an io.Writer for zap's JSON output that hands each entry to the test.
type logLines struct {
	mu      sync.Mutex
	entries chan map[string]any
	all     bytes.Buffer
}

func newLogLines() *logLines { return &logLines{entries: make(chan map[string]any, 100)} }

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	var e map[string]any
	if json.Unmarshal(p, &e) == nil {
		select {
		case l.entries <- e:
		default:
		}
	}
	return len(p), nil
}

// waitFor returns the first entry whose msg is msg.
func (l *logLines) waitFor(t *testing.T, msg string) map[string]any {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-l.entries:
			if e["msg"] == msg {
				return e
			}
		case <-timeout:
			t.Fatalf("no %q log entry", msg)
		}
	}
}

func TestRunServesAndStopsGracefully(t *testing.T) {
	arrived := make(chan struct{})
	release := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(arrived)
			<-release
		}
		fmt.Fprint(w, "ok ", r.URL.Path)
	}))
	defer backend.Close()
	cfg := writeFile(t, "run.yaml", fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 1, backends: [%q]}
timeouts: {shutdown: 30s}
`, backend.URL))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := newLogLines()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run", "-config", cfg}, io.Discard, logs) }()
	addr := logs.waitFor(t, "listening")["addr"].(string)

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	res, err := client.Get("http://" + addr + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(body) != "ok /hello" {
		t.Fatalf("body %q", body)
	}

	// A request in flight when the signal comes finishes; run returns after it.
	slow := make(chan string, 1)
	go func() {
		res, err := client.Get("http://" + addr + "/slow")
		if err != nil {
			slow <- err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		slow <- string(b)
	}()
	<-arrived
	cancel()
	logs.waitFor(t, "shutting down")
	select {
	case err := <-done:
		t.Fatalf("run returned %v with a request in flight", err)
	default:
	}
	close(release)
	if got := <-slow; got != "ok /slow" {
		t.Fatalf("in-flight request got %q, want ok /slow", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestRunRefusesBadConfigBeforeListening(t *testing.T) {
	// The config's port is taken: run must report the config's problems, all of them, and
	// never get as far as trying to listen.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := writeFile(t, "bad.yaml", fmt.Sprintf(`listen: {http: %q}
sites:
  - {name: idc1, weight: 0, backends: []}
  - name: idc2
    weight: 0
    slow_start: -1s
timeouts: {conect: 1s}
`, taken.Addr().String()))
	var stderr bytes.Buffer
	err = run(context.Background(), []string{"run", "-config", cfg}, io.Discard, &stderr)
	if code := exitCode(err, io.Discard); code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr.String())
	}
	want := []string{
		cfg + ":3:3: sites: every site has weight 0",
		cfg + ":3:3: sites: no site has backends or discovery",
		cfg + ":6:17: sites[1].slow_start: must be >= 0, got -1s",
		cfg + `:7:12: timeouts.conect: unknown key "conect" (did you mean "connect"?)`,
		"4 problem(s); the config was not used",
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("stderr has %d lines, want %d:\n%s", len(lines), len(want), stderr.String())
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want it to start with %q", i+1, lines[i], w)
		}
	}
}

func TestDemoLoadShowsTheSplit(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"demo", "-load", "-listen", "127.0.0.1:0", "-duration", "2s", "-rate", "100"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	total := regexp.MustCompile(`(?m)^ total +(\d+) +([\d.]+)% +([\d.]+)% +([\d.]+)% +(\d+)$`).FindStringSubmatch(out)
	if total == nil {
		t.Fatalf("no total line:\n%s", out)
	}
	// Requests in flight at the end are answered before the total; with arrivals in order
	// the split over whole periods of 10 is exact, and the last partial period moves a
	// share by at most a few tenths of a percent.
	var answers int
	var shares [3]float64
	fmt.Sscan(total[1], &answers)
	for i := range shares {
		fmt.Sscan(total[2+i], &shares[i])
	}
	if answers < 50 || total[5] != "0" {
		t.Fatalf("total line %q: want >= 50 answers and 0 errors", total[0])
	}
	for i, want := range []float64{50, 30, 20} {
		if d := shares[i] - want; d < -1 || d > 1 {
			t.Fatalf("share %d = %.1f%%, want %.0f%% ± 1:\n%s", i, shares[i], want, out)
		}
	}
	if !strings.Contains(out, "target            50.0%     30.0%     20.0%") {
		t.Fatalf("no target line:\n%s", out)
	}
}

func TestDemoRefusesNonLoopback(t *testing.T) {
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"demo", "-listen", "0.0.0.0:0"}, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "loopback only") {
		t.Fatalf("demo on 0.0.0.0: %v, want a loopback-only error", err)
	}
}

func TestUnknownCommand(t *testing.T) {
	var stderr bytes.Buffer
	if code := exitCode(run(context.Background(), []string{"frobnicate"}, io.Discard, &stderr), io.Discard); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), `unknown command "frobnicate"`) {
		t.Fatalf("stderr %q", stderr.String())
	}
}
