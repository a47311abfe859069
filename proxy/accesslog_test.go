package proxy_test

// Tests of the access log (issue 5): one JSON line per request with its fields, sampling of
// answers below 400, errors always written, and a reload that moves the output.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/runtime"
)

// tally is a Recorder that counts finished requests.
type tally struct{ n atomic.Int64 }

func (c *tally) Record(*proxy.RequestInfo) { c.n.Add(1) }

// accessLines reads the JSON lines of an access log file.
func accessLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("access log line %q is not JSON: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitLines waits until the access log at path has at least n lines (it is written in
// batches, at least once a second) and returns them.
func waitLines(t *testing.T, path string, n int) []map[string]any {
	t.Helper()
	var lines []map[string]any
	waitFor(t, fmt.Sprintf("%d lines in %s", n, filepath.Base(path)), func() bool {
		lines = accessLines(t, path)
		return len(lines) >= n
	})
	return lines
}

// byID indexes lines by request_id.
func byID(lines []map[string]any) map[string]map[string]any {
	m := map[string]map[string]any{}
	for _, l := range lines {
		id, _ := l["request_id"].(string)
		m[id] = l
	}
	return m
}

// sendWithID sends a GET with an X-Request-Id and returns the status.
func (e *rlEnv) sendWithID(t *testing.T, path, id string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Request-Id", id)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if got := resp.Header.Get("X-Request-Id"); got != id {
		t.Errorf("GET %s: X-Request-Id %q in the answer, want %q", path, got, id)
	}
	return resp.StatusCode
}

func TestAccessLog(t *testing.T) {
	dir := t.TempDir()
	first, second := filepath.Join(dir, "access.log"), filepath.Join(dir, "access2.log")
	idc1 := newCapBackend(t, "idc1", true)
	aws := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/err") {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "aws")
	})
	rec := &tally{}
	spillCfg := fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 1, backends: [%q], max_inflight: 1}
  - {name: aws, weight: 0, backends: [%q], elastic: true}
retries: {attempts: 1}
access_log: {output: %q, sample_2xx: 1}
`, idc1.url, aws.URL, first)
	e := startReloader(t, spillCfg, runtime.ReloaderOptions{Recorders: []proxy.Recorder{rec}})

	// Every request is written: one held at idc1, one that spills to aws, one error.
	held := make(chan int, 1)
	go func() { held <- e.sendWithID(t, "/held", "req-held") }()
	await(t, idc1.arrived, "the request at idc1")
	if s := e.sendWithID(t, "/spilled", "req-spilled"); s != http.StatusOK {
		t.Fatalf("spilled request: %d", s)
	}
	if s := e.sendWithID(t, "/err", "req-err"); s != http.StatusInternalServerError {
		t.Fatalf("error request: %d", s)
	}
	idc1.release <- struct{}{}
	if s := await(t, held, "the held answer"); s != http.StatusOK {
		t.Fatalf("held request: %d", s)
	}
	lines := waitLines(t, first, 3)
	if len(lines) != 3 {
		t.Fatalf("%d lines in the access log, want 3: %v", len(lines), lines)
	}
	host := strings.TrimPrefix(e.url, "http://")
	for _, l := range lines {
		for _, k := range []string{"request_id", "method", "host", "path", "status", "bytes", "duration_ms", "site", "backend", "spill", "retries"} {
			if _, ok := l[k]; !ok {
				t.Errorf("line %v has no %q", l, k)
			}
		}
		if d, _ := l["duration_ms"].(float64); d < 0 || d > float64(liveness.Milliseconds()) {
			t.Errorf("duration_ms %v out of range", l["duration_ms"])
		}
	}
	ids := byID(lines)
	for id, want := range map[string]map[string]any{
		"req-held":    {"method": "GET", "host": host, "path": "/held", "status": 200.0, "bytes": 4.0, "site": "idc1", "backend": idc1.url, "spill": "", "retries": 0.0},
		"req-spilled": {"method": "GET", "host": host, "path": "/spilled", "status": 200.0, "bytes": 3.0, "site": "aws", "backend": aws.URL, "spill": "saturated", "retries": 0.0},
		"req-err":     {"path": "/err", "status": 500.0, "site": "aws", "spill": "saturated"},
	} {
		l, ok := ids[id]
		if !ok {
			t.Errorf("no line for %s", id)
			continue
		}
		for k, v := range want {
			if l[k] != v {
				t.Errorf("%s: %s = %v, want %v", id, k, l[k], v)
			}
		}
	}

	// A reload moves the output and turns sampling down: answers below 400 are not written,
	// errors always are, with their retries.
	retryCfg := func(output string, sample float64) string {
		return fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 1, backends: [%q]}
  - {name: aws, weight: 0, backends: [%q], elastic: true}
retries: {attempts: 2, min_per_second: 1000, budget: 1}
outlier: {consecutive_failures: 0}
access_log: {output: %q, sample_2xx: %g}
`, refusedURL(t), aws.URL, output, sample)
	}
	e.write(t, retryCfg(second, 0))
	if err := e.r.Reload("test", false); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if s := e.sendWithID(t, fmt.Sprintf("/ok/%d", i), fmt.Sprintf("ok-%d", i)); s != http.StatusOK {
			t.Fatalf("GET /ok/%d: %d", i, s)
		}
	}
	for i := range 2 {
		if s := e.sendWithID(t, fmt.Sprintf("/err/%d", i), fmt.Sprintf("err-%d", i)); s != http.StatusInternalServerError {
			t.Fatalf("GET /err/%d: %d", i, s)
		}
	}
	// The errors come last: once their lines are out, so is anything written before them.
	lines = waitLines(t, second, 2)
	if n := len(accessLines(t, first)); n != 3 {
		t.Errorf("the old output got %d lines, want the 3 from before the reload", n)
	}
	if len(lines) != 2 {
		t.Fatalf("%d lines with sample_2xx 0, want the 2 errors: %v", len(lines), lines)
	}
	for _, l := range lines {
		if l["status"] != 500.0 || l["retries"] != 1.0 || l["site"] != "aws" {
			t.Errorf("line %v, want status 500, 1 retry, site aws", l)
		}
	}

	// Half of the answers below 400 are written.
	e.write(t, retryCfg(second, 0.5))
	if err := e.r.Reload("test", false); err != nil {
		t.Fatal(err)
	}
	const n = 400
	for i := range n {
		if s := e.sendWithID(t, fmt.Sprintf("/s/%d", i), fmt.Sprintf("s-%d", i)); s != http.StatusOK {
			t.Fatalf("GET /s/%d: %d", i, s)
		}
	}
	// An error after them, always written, flushes the sampled lines before it.
	if s := e.sendWithID(t, "/err/last", "err-last"); s != http.StatusInternalServerError {
		t.Fatalf("GET /err/last: %d", s)
	}
	lines = waitLines(t, second, 3)
	for !slices.ContainsFunc(lines, func(l map[string]any) bool { return l["request_id"] == "err-last" }) {
		lines = waitLines(t, second, len(lines)+1)
	}
	if got := rec.n.Load(); got != 16+n {
		t.Errorf("%d requests recorded, want %d", got, 16+n)
	}
	sampled := len(lines) - 3
	if sampled < n/4 || sampled > 3*n/4 { // mean 200, standard deviation 10
		t.Errorf("%d of %d answers written with sample_2xx 0.5, want about half", sampled, n)
	}
}

// Every request gets its line while reloads move the output back and forth under load:
// the lines in the two files add up to the requests.
func TestAccessLogLosesNoLineAcrossReloads(t *testing.T) {
	dir := t.TempDir()
	outputs := []string{filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")}
	backend := nameBackend(t, "idc1")
	config := func(output string) string {
		return fmt.Sprintf(`listen: {http: "127.0.0.1:0"}
sites:
  - {name: idc1, weight: 1, backends: [%q]}
access_log: {output: %q, sample_2xx: 1}
`, backend.URL, output)
	}
	rec := &tally{}
	e := startReloader(t, config(outputs[0]), runtime.ReloaderOptions{Recorders: []proxy.Recorder{rec}})
	stop := e.driveGets(t, 8, rec)
	for i := range 100 {
		e.write(t, config(outputs[(i+1)%2]))
		if err := e.r.Reload("test", false); err != nil {
			t.Fatal(err)
		}
		n := rec.n.Load()
		waitFor(t, "requests between reloads", func() bool { return rec.n.Load() >= n+2 })
	}
	stop()
	total := rec.n.Load()
	// Close the Reloader's output by moving it elsewhere, which flushes and closes it.
	e.write(t, config(filepath.Join(dir, "c.log")))
	if err := e.r.Reload("test", false); err != nil {
		t.Fatal(err)
	}
	written := len(accessLines(t, outputs[0])) + len(accessLines(t, outputs[1]))
	if int64(written) != total {
		t.Errorf("%d requests, %d access log lines across reloads that moved the output", total, written)
	}
}

// driveGets has n clients send GETs through the proxy, each after the last is answered 200,
// until the returned stop is called. stop returns once every client has stopped and every
// answered request has reached rec (a client has its answer a moment before the proxy
// records the request).
func (e *rlEnv) driveGets(t *testing.T, n int, rec *tally) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	var answered atomic.Int64
	for range n {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if status, _, err := e.send(http.MethodGet, "/", nil); err != nil || status != http.StatusOK {
					t.Errorf("GET: %d %v", status, err)
					return
				}
				answered.Add(1)
			}
		})
	}
	return func() {
		t.Helper()
		close(done)
		wg.Wait()
		waitFor(t, "every answered request recorded", func() bool { return rec.n.Load() >= answered.Load() })
	}
}
