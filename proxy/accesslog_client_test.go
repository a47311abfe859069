package proxy_test

// Tests of the access log's client fields (issue 14: client, xff, user_agent, proto, tls,
// bytes_in) through real requests over HTTP/1.1, h2c and TLS (1.2 and 1.3), and of its
// reopening for logrotate: rename the file, Reopen, and the next lines land in a new file
// at the old path with none lost.

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/frontend"
	"github.com/spillway/spillway/proxy/runtime"
	"github.com/spillway/spillway/proxy/telemetry"
)

func TestAccessLogClientFields(t *testing.T) {
	out := filepath.Join(t.TempDir(), "access.log")
	var seenXFF sync.Map // request id -> the X-Forwarded-For the backend got
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		seenXFF.Store(r.Header.Get("X-Request-Id"), r.Header.Get("X-Forwarded-For"))
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "hello")
	})
	cfg := mustConfig(t, configYAML([]site{{"idc1", 1, []string{backend.URL}}},
		fmt.Sprintf("access_log: {output: %q, sample_2xx: 1}\n", out)))
	al := telemetry.NewAccessLog(nil)
	if err := al.Configure(cfg); err != nil {
		t.Fatal(err)
	}
	tbl, err := proxy.Build(cfg, proxy.Deps{Registry: balancer.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tbl.Close)
	rec := &tally{} // after al: a request it counted has its line
	h := proxy.NewHandler(tbl, nil, proxy.WithRecorders(al, rec))
	_, plain := serveOn(t, cfg, h)
	ca := newTestCA(t, "ca")
	secure := serve(t, frontend.NewTLSServer(cfg, h, proxyTLS(ca.issue(t, "proxy", false, "127.0.0.1")), nil))

	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	transports := map[string]*http.Transport{
		"h1":  {},
		"h2c": {Protocols: &h2c},
		// TLS 1.3 with h2, and TLS 1.2 with HTTP/1.1 only.
		"tls13": {TLSClientConfig: &tls.Config{RootCAs: ca.pool()}, ForceAttemptHTTP2: true},
		"tls12": {TLSClientConfig: &tls.Config{RootCAs: ca.pool(), MaxVersion: tls.VersionTLS12}},
	}
	for _, tr := range transports {
		t.Cleanup(tr.CloseIdleConnections)
	}
	// send sends one request with a body of n bytes and returns the client's local address.
	send := func(id string, n int, header http.Header) string {
		t.Helper()
		url, method := "http://"+plain+"/x", http.MethodPost
		if strings.HasPrefix(id, "tls") {
			url = "https://" + secure + "/x"
		}
		var body io.Reader
		if n == 0 {
			method = http.MethodGet
		} else {
			body = strings.NewReader(strings.Repeat("b", n))
		}
		var local string
		ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
			local = i.Conn.LocalAddr().String()
		}})
		req, err := http.NewRequestWithContext(ctx, method, url, body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = header
		req.Header.Set("X-Request-Id", id)
		resp, err := (&http.Client{Transport: transports[strings.TrimSuffix(id, "-xff")], Timeout: liveness}).Do(req)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", id, resp.StatusCode)
		}
		return local
	}
	client := map[string]string{
		"h1": send("h1", 10, http.Header{"User-Agent": {"ua-h1"},
			"X-Forwarded-For": {"203.0.113.7, 198.51.100.2"}}),
		"h1-xff": send("h1-xff", 0, http.Header{"User-Agent": {"ua-h1"},
			"X-Forwarded-For": {"203.0.113.7", "198.51.100.2"}}), // two header lines
		"h2c":   send("h2c", 7, http.Header{"User-Agent": {"ua-h2c"}}),
		"tls13": send("tls13", 3, http.Header{"User-Agent": {"ua-tls13"}}),
		"tls12": send("tls12", 0, http.Header{"User-Agent": {"ua-tls12"}}),
	}
	// A client has its answer a moment before the proxy has recorded the request.
	waitFor(t, "every request recorded", func() bool { return rec.n.Load() == int64(len(client)) })
	al.Close() // flushes
	lines := byID(accessLines(t, out))
	want := map[string]map[string]any{
		"h1":     {"proto": "HTTP/1.1", "tls": "", "bytes_in": 10.0, "user_agent": "ua-h1", "xff": "203.0.113.7, 198.51.100.2"},
		"h1-xff": {"proto": "HTTP/1.1", "tls": "", "bytes_in": 0.0, "user_agent": "ua-h1", "xff": "203.0.113.7, 198.51.100.2"},
		"h2c":    {"proto": "HTTP/2.0", "tls": "", "bytes_in": 7.0, "user_agent": "ua-h2c", "xff": ""},
		"tls13":  {"proto": "HTTP/2.0", "tls": "1.3", "bytes_in": 3.0, "user_agent": "ua-tls13", "xff": ""},
		"tls12":  {"proto": "HTTP/1.1", "tls": "1.2", "bytes_in": 0.0, "user_agent": "ua-tls12", "xff": ""},
	}
	for id, fields := range want {
		l, ok := lines[id]
		if !ok {
			t.Errorf("no access log line for %s", id)
			continue
		}
		fields["client"] = client[id]
		fields["bytes"] = 5.0 // bytes out
		for k, v := range fields {
			if l[k] != v {
				t.Errorf("%s: %s = %#v, want %#v", id, k, l[k], v)
			}
		}
		// The chain the backend got is the logged one with the client's address after it.
		seen, _ := seenXFF.Load(id)
		chain := "127.0.0.1"
		if x := fields["xff"].(string); x != "" {
			chain = x + ", " + chain
		}
		if seen != chain {
			t.Errorf("%s: the backend got X-Forwarded-For %q, want %q (xff then the client's host)", id, seen, chain)
		}
	}
}

// A request that names X-Forwarded-For in Connection makes it hop-by-hop: the backend gets
// only the proxy's entry, and the log has no chain.
func TestAccessLogHopByHopXFF(t *testing.T) {
	out := filepath.Join(t.TempDir(), "access.log")
	seen := make(chan string, 1)
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) { seen <- r.Header.Get("X-Forwarded-For") })
	e := startReloader(t, configYAML([]site{{"idc1", 1, []string{backend.URL}}},
		fmt.Sprintf("access_log: {output: %q, sample_2xx: 1}\n", out)), runtime.ReloaderOptions{})
	req, _ := http.NewRequest(http.MethodGet, e.url+"/", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("Connection", "X-Forwarded-For")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if s := <-seen; s != "127.0.0.1" {
		t.Errorf("backend got X-Forwarded-For %q, want 127.0.0.1", s)
	}
	if l := waitLines(t, out, 1)[0]; l["xff"] != "" {
		t.Errorf("xff %q for a hop-by-hop X-Forwarded-For, want \"\"", l["xff"])
	}
}

// logrotate: the file is renamed, Reopen, and the next lines land in a new file at the old
// path; the lines of the two files add up to the requests, with requests running
// throughout (a data race would show under -race). A reload that keeps the output keeps
// writing the new file; a path that cannot be opened keeps the old file.
func TestAccessLogReopen(t *testing.T) {
	dir := t.TempDir()
	logs := filepath.Join(dir, "logs")
	if err := os.Mkdir(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(logs, "access.log")
	backend := nameBackend(t, "idc1")
	config := configYAML([]site{{"idc1", 1, []string{backend.URL}}},
		fmt.Sprintf("access_log: {output: %q, sample_2xx: 1}\n", out))
	rec := &tally{}
	e := startReloader(t, config, runtime.ReloaderOptions{Recorders: []proxy.Recorder{rec}})
	stop := e.driveGets(t, 4, rec)
	moreRequests := func() {
		t.Helper()
		n := rec.n.Load()
		waitFor(t, "more requests", func() bool { return rec.n.Load() >= n+20 })
	}
	var rotated []string
	for i := 1; i <= 5; i++ {
		moreRequests()
		old := fmt.Sprintf("%s.%d", out, i)
		if err := os.Rename(out, old); err != nil {
			t.Fatal(err)
		}
		rotated = append(rotated, old)
		if path, err := e.r.ReopenAccessLog(); err != nil || path != out {
			t.Fatalf("ReopenAccessLog: %q %v, want %q", path, err, out)
		}
		if _, err := os.Stat(out); err != nil {
			t.Fatalf("no new file at the old path after Reopen: %v", err)
		}
		if i == 3 {
			// A reload that keeps the output (forced, of the same file) writes the
			// reopened file, and the next Reopen reopens it.
			if err := e.r.Reload("test", true); err != nil {
				t.Fatal(err)
			}
		}
	}
	moreRequests()
	stop()
	total := rec.n.Load()
	sum := 0
	for _, p := range rotated {
		n := len(accessLines(t, p))
		if n == 0 {
			t.Errorf("%s has no lines", filepath.Base(p))
		}
		sum += n
	}
	// The lines after the last rename are still buffered: closing the output by moving it
	// elsewhere flushes them.
	e.write(t, configYAML([]site{{"idc1", 1, []string{backend.URL}}}, "access_log: {output: stderr}\n"))
	if err := e.r.Reload("test", false); err != nil {
		t.Fatal(err)
	}
	current := len(accessLines(t, out))
	if current == 0 {
		t.Errorf("no lines in the file reopened at %s", out)
	}
	if int64(sum+current) != total {
		t.Errorf("%d requests, %d lines in the rotated files and %d in the current one: %d lost", total, sum, current, total-int64(sum+current))
	}
	// stdout and stderr are not reopened.
	if path, err := e.r.ReopenAccessLog(); path != "" || err != nil {
		t.Errorf("ReopenAccessLog with stderr: %q %v, want nothing done", path, err)
	}

	// A path that cannot be opened (its directory moved away): an error, and the lines keep
	// going to the file it had.
	e.write(t, config)
	if err := e.r.Reload("test", false); err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(dir, "moved")
	if err := os.Rename(logs, moved); err != nil {
		t.Fatal(err)
	}
	if path, err := e.r.ReopenAccessLog(); err == nil || path != out {
		t.Errorf("ReopenAccessLog with its directory gone: %q %v, want %q and an error", path, err, out)
	}
	e.mustGet(t, "/after-failed-reopen")
	waitFor(t, "the line after a failed reopen in the old file", func() bool {
		lines := accessLines(t, filepath.Join(moved, "access.log"))
		return len(lines) > 0 && lines[len(lines)-1]["path"] == "/after-failed-reopen"
	})
}
