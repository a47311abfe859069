package main

// Tests of the operations side of `spillway run` (issue 5), through run(ctx, args, stdout,
// stderr) on real loopback sockets: readiness and the graceful stop, reloads (admin API,
// SIGHUP, file watch) that may not move the listeners, and the admin listener's token rule.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spillway/spillway/configs"
)

// opsLiveness bounds every wait of these tests; ordering is done by polling, never sleeps.
const opsLiveness = 10 * time.Second

const opsToken = "ops-test-token-0123456789"

// opsLog collects the JSON log lines run writes to stderr.
type opsLog struct {
	mu      sync.Mutex
	raw     bytes.Buffer
	entries []map[string]any
}

func (l *opsLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.raw.Write(p)
	for _, line := range bytes.Split(p, []byte("\n")) {
		var e map[string]any
		if json.Unmarshal(line, &e) == nil {
			l.entries = append(l.entries, e)
		}
	}
	return len(p), nil
}

func (l *opsLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw.String()
}

// find returns the first entry with message msg whose fields include want (pairs), if any.
func (l *opsLog) find(msg string, want ...string) map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.entries {
		if e["msg"] != msg {
			continue
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			match = match && fmt.Sprint(e[want[i]]) == want[i+1]
		}
		if match {
			return e
		}
	}
	return nil
}

// wait polls for an entry as find returns it.
func (l *opsLog) wait(t *testing.T, msg string, want ...string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(opsLiveness)
	for {
		if e := l.find(msg, want...); e != nil {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log entry %q %v within %v; log:\n%s", msg, want, opsLiveness, l.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// opsRun is `spillway run` in the background.
type opsRun struct {
	cancel context.CancelFunc
	done   chan error
	log    *opsLog
	proxy  string // http://host:port
	admin  string // http://host:port; "" without an admin listener
	client *http.Client
}

// startRun runs `spillway run -config path` until the test ends (or stop), and waits until
// it listens.
func startRun(t *testing.T, path string) *opsRun {
	t.Helper()
	return startRunWithin(t, path, opsLiveness)
}

// startRunWithin is startRun waiting up to wait for the listeners (a fleet's replica that
// waits for the others' requests to settle before it listens takes up to
// cluster.DefaultSettleTimeout), and as long again for run to return at the end.
func startRunWithin(t *testing.T, path string, wait time.Duration) *opsRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &opsRun{cancel: cancel, done: make(chan error, 1), log: &opsLog{}}
	go func() { r.done <- run(ctx, []string{"run", "-config", path}, io.Discard, r.log) }()
	tr := &http.Transport{}
	r.client = &http.Client{Transport: tr, Timeout: opsLiveness}
	t.Cleanup(func() {
		cancel()
		tr.CloseIdleConnections()
		select {
		case <-r.done:
		case <-time.After(max(wait, opsLiveness)):
			t.Errorf("run did not return within %v of its context's end", max(wait, opsLiveness))
		}
	})
	deadline := time.Now().Add(wait)
	for r.proxy == "" {
		for _, scheme := range []string{"http", "<nil>"} {
			if e := r.log.find("listening", "scheme", scheme); e != nil {
				r.proxy = "http://" + e["addr"].(string)
			}
		}
		select {
		case err := <-r.done:
			t.Fatalf("run returned %v before listening; log:\n%s", err, r.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("run is not listening after %v; log:\n%s", wait, r.log.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if e := r.log.wait(t, "admin API listening"); e != nil {
		r.admin = "http://" + e["addr"].(string)
	}
	return r
}

// call sends a request and returns the status and body (status 0 and the error's text when
// there is no answer).
func (r *opsRun) call(method, url, token, body string) (int, string) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, err.Error()
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// siteWeight reads a site's weight in effect from the admin API's state.
func (r *opsRun) siteWeight(t *testing.T, name string) float64 {
	t.Helper()
	status, body := r.call(http.MethodGet, r.admin+"/api/v1/state", "", "")
	if status != http.StatusOK {
		t.Fatalf("GET state: %d %s", status, body)
	}
	var st struct {
		Sites []struct {
			Name   string  `json:"name"`
			Weight float64 `json:"weight"`
		} `json:"sites"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Sites {
		if s.Name == name {
			return s.Weight
		}
	}
	t.Fatalf("no site %s in %s", name, body)
	return 0
}

// opsConfig is a two-site config on loopback with an admin listener.
func opsConfig(backend string, w1, w2 int, extra string) string {
	return fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: %d, backends: [%q]}
  - {name: idc2, weight: %d, backends: [%q]}
timeouts: {shutdown: 30s}
%s`, w1, backend, w2, backend, extra)
}

func opsWriteConfig(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "spillway.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// /readyz is 200 while serving and stops being 200 once the stop begins; a request in
// flight then finishes, and run returns nil (exit status 0) after it.
func TestRunReadyzAndGracefulStop(t *testing.T) {
	t.Setenv("SPILLWAY_ADMIN_TOKEN", "")
	arrived, release := make(chan struct{}), make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(arrived)
			<-release
		}
		fmt.Fprint(w, "ok ", r.URL.Path)
	}))
	defer backend.Close()
	r := startRun(t, opsWriteConfig(t, opsConfig(backend.URL, 1, 1, "")))

	for _, path := range []string{"/readyz", "/healthz"} {
		if status, body := r.call(http.MethodGet, r.admin+path, "", ""); status != http.StatusOK {
			t.Fatalf("GET %s while serving: %d %s", path, status, body)
		}
	}
	if status, body := r.call(http.MethodGet, r.proxy+"/hello", "", ""); status != http.StatusOK || body != "ok /hello" {
		t.Fatalf("GET /hello: %d %q", status, body)
	}

	slow := make(chan string, 1)
	go func() {
		status, body := r.call(http.MethodGet, r.proxy+"/slow", "", "")
		slow <- fmt.Sprintf("%d %s", status, body)
	}()
	select {
	case <-arrived:
	case <-time.After(opsLiveness):
		t.Fatal("the slow request did not reach the backend")
	}
	r.cancel()
	r.log.wait(t, "shutting down")
	// Not ready any more: 503 while the admin API still answers, or no answer once it closed.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: opsLiveness}
	if resp, err := fresh.Get(r.admin + "/readyz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("/readyz is 200 after the stop began")
		}
	}
	select {
	case err := <-r.done:
		t.Fatalf("run returned %v with a request in flight", err)
	default:
	}
	close(release)
	select {
	case got := <-slow:
		if got != "200 ok /slow" {
			t.Errorf("the request in flight at the stop got %q, want 200 ok /slow", got)
		}
	case <-time.After(opsLiveness):
		t.Fatal("the in-flight request did not finish")
	}
	select {
	case err := <-r.done:
		if code := exitCode(err, io.Discard); code != 0 {
			t.Errorf("run returned %v (exit %d), want exit 0", err, code)
		}
		r.done <- err // for the cleanup
	case <-time.After(opsLiveness):
		t.Fatal("run did not return after the in-flight request finished")
	}
	r.log.wait(t, "stopped")
}

// A non-loopback admin listener without a token refuses to start, with a clear error; a
// token that is too short is refused too.
func TestRunRefusesUnprotectedAdmin(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer backend.Close()
	for _, tc := range []struct {
		name, listen, env, want string
	}{
		{"wildcard v4 without token", "0.0.0.0:0", "", "not a loopback address"},
		{"all interfaces without token", ":0", "", "not a loopback address"},
		{"wildcard v6 without token", "[::]:0", "", "not a loopback address"},
		{"short token", "127.0.0.1:0", "short", "shorter than 16 characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SPILLWAY_ADMIN_TOKEN", tc.env)
			path := opsWriteConfig(t, fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
admin: {listen: %q}
sites:
  - {name: idc1, weight: 1, backends: [%q]}
`, tc.listen, backend.URL))
			log := &opsLog{}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- run(ctx, []string{"run", "-config", path}, io.Discard, log) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(opsLiveness):
				cancel()
				<-done
				t.Fatalf("run started instead of refusing; log:\n%s", log.String())
			}
			// A config problem, with its place in the file, on stderr (which is the log
			// here); validate refuses it with the same line (issue 14).
			var out bytes.Buffer
			if code := exitCode(err, &out); code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			out.WriteString(log.String())
			var vout bytes.Buffer
			if code := exitCode(run(context.Background(), []string{"validate", path}, io.Discard, &vout), &vout); code != 1 || !strings.Contains(out.String(), strings.SplitN(vout.String(), "\n", 2)[0]) {
				t.Errorf("validate: exit %d, output %q; want 1 and the line run printed", code, vout.String())
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Errorf("error %q, want it to say %q", out.String(), tc.want)
			}
			if tc.env == "" && !strings.Contains(out.String(), "SPILLWAY_ADMIN_TOKEN") {
				t.Errorf("error %q does not say how to set a token", out.String())
			}
		})
	}
}

// sameServers refuses a config that changes what the running servers were built with
// (listeners, admin, front TLS, client limits and timeouts), and accepts anything else; its
// problems point into the new file.
func TestSameServers(t *testing.T) {
	parse := func(name, yaml string) *configs.Config {
		t.Helper()
		cfg, err := configs.Parse(name, []byte(yaml))
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		return cfg
	}
	base := `listen: {http: "127.0.0.1:8080"}
admin: {listen: "127.0.0.1:9901", token_file: admin.token}
sites:
  - {name: idc1, weight: 5, backends: ["http://127.0.0.1:1"]}
`
	first := parse("first.yaml", base)
	for _, tc := range []struct {
		name, yaml string
		want       []string // a problem per entry, each containing it
	}{
		{"unchanged", base, nil},
		{"weights and sites", strings.Replace(base, "weight: 5", "weight: 7", 1) + `  - {name: idc2, weight: 3, backends: ["http://127.0.0.1:2"]}` + "\n", nil},
		{"listen.http", strings.Replace(base, "127.0.0.1:8080", "127.0.0.1:8081", 1), []string{"next.yaml:1:"}},
		{"admin.listen", strings.Replace(base, "127.0.0.1:9901", "127.0.0.1:9902", 1), []string{"next.yaml:2:"}},
		{"admin.token_file", strings.Replace(base, "admin.token", "other.token", 1), []string{"next.yaml:2:"}},
		{"both", strings.Replace(strings.Replace(base, "127.0.0.1:8080", "127.0.0.1:8081", 1), "127.0.0.1:9901", "127.0.0.1:9902", 1),
			[]string{"next.yaml:1:", "next.yaml:2:"}},
		{"limits", base + "limits: {max_header_bytes: 2048}\n", []string{"next.yaml:5:"}},
		{"client timeouts", base + "timeouts: {read_header: 3s, idle: 5s}\n", []string{"next.yaml:5:", "next.yaml:5:"}},
		{"backend timeouts apply", base + "timeouts: {connect: 1s, response_header: 5s, shutdown: 3s}\n", nil},
		{"state file", base + "state: {file: state.json}\n", []string{"next.yaml:5:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := sameServers(first, parse("next.yaml", tc.yaml))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var errs configs.Errors
			if !errors.As(err, &errs) || len(errs) != len(tc.want) {
				t.Fatalf("got %v, want %d problem(s)", err, len(tc.want))
			}
			for i, w := range tc.want {
				if msg := errs[i].Error(); !strings.HasPrefix(msg, w) || !strings.Contains(msg, "restart Spillway") {
					t.Errorf("problem %q, want it at %s and to say restart Spillway", msg, w)
				}
			}
		})
	}
	if err := sameServers(nil, first); err != nil {
		t.Errorf("sameServers(nil, …) = %v, want nil (the first load)", err)
	}
}

// A reload through the admin API that would move the proxy's or the admin listener is
// refused (422) and the running config stays; other changes reload.
func TestRunReloadMayNotMoveListeners(t *testing.T) {
	t.Setenv("SPILLWAY_ADMIN_TOKEN", opsToken)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	defer backend.Close()
	path := opsWriteConfig(t, opsConfig(backend.URL, 5, 3, ""))
	r := startRun(t, path)

	for _, tc := range []struct{ name, from, to string }{
		{"listen.http", `listen: {http: "127.0.0.1:0"}`, `listen: {http: "127.0.0.1:1"}`},
		{"admin.listen", `admin: {listen: "127.0.0.1:0"}`, `admin: {listen: "127.0.0.1:1"}`},
	} {
		moved := strings.Replace(opsConfig(backend.URL, 6, 3, ""), tc.from, tc.to, 1)
		if err := os.WriteFile(path, []byte(moved), 0o600); err != nil {
			t.Fatal(err)
		}
		status, body := r.call(http.MethodPost, r.admin+"/api/v1/reload", opsToken, "")
		if status != http.StatusUnprocessableEntity || !strings.Contains(body, "restart Spillway") || !strings.Contains(body, path+":") {
			t.Errorf("reload moving %s: %d %s, want 422 naming the file and saying restart Spillway", tc.name, status, body)
		}
		if w := r.siteWeight(t, "idc1"); w != 5 {
			t.Errorf("idc1 weight %g after a refused reload, want 5", w)
		}
	}
	if err := os.WriteFile(path, []byte(opsConfig(backend.URL, 6, 3, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if status, body := r.call(http.MethodPost, r.admin+"/api/v1/reload", opsToken, ""); status != http.StatusOK {
		t.Fatalf("reload of a weight change: %d %s", status, body)
	}
	if w := r.siteWeight(t, "idc1"); w != 6 {
		t.Errorf("idc1 weight %g after the reload, want 6", w)
	}
	if status, body := r.call(http.MethodGet, r.proxy+"/", "", ""); status != http.StatusOK || body != "ok" {
		t.Errorf("the proxy after reloads: %d %q", status, body)
	}
	if status, _ := r.call(http.MethodPost, r.admin+"/api/v1/reload", "", ""); status != http.StatusUnauthorized {
		t.Errorf("reload without a token: %d, want 401", status)
	}
}

// SIGHUP reloads the config (even unchanged) and the watched file reloads on a change; a
// bad config is refused and logged with its problems.
func TestRunReloadsOnSIGHUPAndFileChange(t *testing.T) {
	t.Setenv("SPILLWAY_ADMIN_TOKEN", "")
	catchSignal(t, syscall.SIGHUP)

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	defer backend.Close()
	path := opsWriteConfig(t, opsConfig(backend.URL, 5, 3, ""))
	r := startRun(t, path)

	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e := r.log.wait(t, "config reloaded", "source", "sighup")
	if e["generation"] != 2.0 {
		t.Errorf("SIGHUP reload made generation %v, want 2", e["generation"])
	}

	// The file watch: replace the file by rename until the watch (started asynchronously)
	// has seen it.
	deadline := time.Now().Add(opsLiveness)
	for i := 0; r.log.find("config reloaded", "source", "file") == nil; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("the changed file was not reloaded; log:\n%s", r.log.String())
		}
		if i%100 == 0 { // every half second or so
			tmp := path + ".new"
			if err := os.WriteFile(tmp, []byte(opsConfig(backend.URL, 7, 3, "")), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if w := r.siteWeight(t, "idc1"); w != 7 {
		t.Errorf("idc1 weight %g after the file changed, want 7", w)
	}

	// A bad file: SIGHUP is refused with the problem's file:line; the config stays.
	bad := strings.Replace(opsConfig(backend.URL, 7, 3, ""), "weight: 3", "weight: -3", 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e = r.log.wait(t, "config refused; the running config stays", "source", "sighup")
	if msg, _ := e["error"].(string); !strings.Contains(msg, path+":5:") || !strings.Contains(msg, "sites[1].weight") {
		t.Errorf("refusal logged as %q, want the problem at %s:5", msg, path)
	}
	if w := r.siteWeight(t, "idc2"); w != 3 {
		t.Errorf("idc2 weight %g after a refused reload, want 3", w)
	}

	// Each reload is in the audit trail with its source and what it changed; the refused
	// one with its reason.
	status, body := r.call(http.MethodGet, r.admin+"/api/v1/changes?limit=1000", "", "")
	if status != http.StatusOK {
		t.Fatalf("GET changes: %d %s", status, body)
	}
	var trail struct {
		Changes []struct {
			Who, Action, Result, Reason, Before, After string
			Items                                      []struct{ Path, Before, After string }
		}
	}
	if err := json.Unmarshal([]byte(body), &trail); err != nil {
		t.Fatal(err)
	}
	var sighup, file, refused bool
	for _, c := range trail.Changes {
		switch {
		case c.Action != "reload":
			t.Errorf("entry %+v, want only reloads", c)
		case c.Who == "sighup" && c.Result == "" && c.Before == "generation 1" && c.After == "generation 2" && len(c.Items) == 0:
			sighup = true
		case c.Who == "file" && c.Result == "" && len(c.Items) == 1 && c.Items[0].Path == "sites.idc1.weight" && c.Items[0].Before == "5" && c.Items[0].After == "7":
			file = true
		case c.Who == "sighup" && c.Result == "refused" && strings.Contains(c.Reason, "sites[1].weight"):
			refused = true
		}
	}
	if !sighup || !file || !refused {
		t.Errorf("trail %s\nwant the SIGHUP reload (%v), the file's with sites.idc1.weight 5 → 7 (%v), the refused SIGHUP with its reason (%v)", body, sighup, file, refused)
	}
}

// SIGUSR1 reopens the access log file, as logrotate's postrotate asks: after a rename the
// next lines land in a new file at the configured path, and none is lost. With the access
// log on stderr it does nothing but say so.
func TestRunReopensAccessLogOnSIGUSR1(t *testing.T) {
	t.Setenv("SPILLWAY_ADMIN_TOKEN", "")
	catchSignal(t, syscall.SIGUSR1)

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	defer backend.Close()
	out := filepath.Join(t.TempDir(), "access.log")
	path := opsWriteConfig(t, opsConfig(backend.URL, 5, 3, fmt.Sprintf("access_log: {output: %q, sample_2xx: 1}\n", out)))
	r := startRun(t, path)
	get := func(p string) {
		t.Helper()
		if status, body := r.call(http.MethodGet, r.proxy+p, "", ""); status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", p, status, body)
		}
	}
	lines := func(p string) []string {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(string(b)) // (no spaces in these lines' JSON)
	}
	waitLine := func(p, reqPath string) {
		t.Helper()
		deadline := time.Now().Add(opsLiveness)
		for !strings.Contains(string(must(os.ReadFile(p))), `"path":"`+reqPath+`"`) {
			if time.Now().After(deadline) {
				t.Fatalf("no line for %s in %s within %v", reqPath, p, opsLiveness)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for i := range 5 {
		get(fmt.Sprintf("/before/%d", i))
	}
	waitLine(out, "/before/4")
	rotated := out + ".1"
	if err := os.Rename(out, rotated); err != nil {
		t.Fatal(err)
	}
	get("/rotated") // recorded just before the signal or just after: in one file or the other
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	r.log.wait(t, "access log reopened", "path", out, "source", "sigusr1")
	for i := range 5 {
		get(fmt.Sprintf("/after/%d", i))
	}
	waitLine(out, "/after/4")
	old, cur := strings.Join(lines(rotated), "\n"), strings.Join(lines(out), "\n")
	for i := range 5 {
		if before := fmt.Sprintf(`"path":"/before/%d"`, i); !strings.Contains(old, before) || strings.Contains(cur, before) {
			t.Errorf("/before/%d's line is not (only) in the rotated file:\n%s\nnew file:\n%s", i, old, cur)
		}
		if after := fmt.Sprintf(`"path":"/after/%d"`, i); strings.Contains(old, after) || !strings.Contains(cur, after) {
			t.Errorf("/after/%d's line is not (only) in the new file:\n%s\nrotated file:\n%s", i, cur, old)
		}
	}
	if n := strings.Count(old+cur, `"path":"/rotated"`); n != 1 {
		t.Errorf("/rotated's line is written %d times, want once", n)
	}
	if n := len(lines(rotated)) + len(lines(out)); n != 11 {
		t.Errorf("%d lines in the two files, want 11", n)
	}

	// Access log on stderr: nothing to reopen.
	if err := os.WriteFile(path, []byte(opsConfig(backend.URL, 5, 3, "access_log: {output: stderr, sample_2xx: 0}\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	r.log.wait(t, "config reloaded", "source", "sighup")
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	r.log.wait(t, "access log not reopened: it is not a file", "output", "stderr")
	get("/still-serving")
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// catchSignal catches sig for the whole test, so that one arriving while run is not
// listening for it cannot end the test process.
func catchSignal(t *testing.T, sig os.Signal) {
	guard := make(chan os.Signal, 8)
	signal.Notify(guard, sig)
	t.Cleanup(func() { signal.Stop(guard) })
}
