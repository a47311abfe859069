package proxy_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/proxytest"
)

// TestRequestBodyStreamed posts 5 MiB through the proxy from a pipe. The client writes its
// first chunk and then waits until the backend has received data from it before writing the
// rest: a proxy that buffered the body would never get there. The backend checks the sha256.
func TestRequestBodyStreamed(t *testing.T) {
	const size = 5 << 20
	const chunk = 64 << 10
	// The backend signals once it holds this much of the first chunk; less than a chunk, so
	// that a write buffer on the way (32 KiB in the proxy's transport) cannot hold it back.
	const firstSeen = 16 << 10

	payload := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	want := sha256.Sum256(payload)

	for _, tc := range []struct {
		name          string
		contentLength bool
	}{
		{"chunked", false},
		{"content-length", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gotFirst := make(chan struct{})
			type upload struct {
				n   int64
				sum [32]byte
				err error
			}
			received := make(chan upload, 1)
			b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
				h := sha256.New()
				n, err := io.CopyN(h, r.Body, firstSeen)
				if err != nil {
					received <- upload{n: n, err: err}
					return
				}
				close(gotFirst)
				m, err := io.Copy(h, r.Body)
				var u upload
				u.n, u.err = n+m, err
				copy(u.sum[:], h.Sum(nil))
				received <- u
				io.WriteString(w, "stored")
			})
			e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{b.URL}}}, ""))

			pr, pw := io.Pipe()
			wrote := make(chan error, 1)
			go func() {
				if _, err := pw.Write(payload[:chunk]); err != nil {
					wrote <- err
					return
				}
				timer := time.NewTimer(proxytest.Liveness)
				defer timer.Stop()
				select {
				case <-gotFirst:
				case <-timer.C:
					err := errors.New("the backend did not receive the first chunk before the client wrote the rest")
					pw.CloseWithError(err)
					wrote <- err
					return
				}
				for off := chunk; off < size; off += chunk {
					if _, err := pw.Write(payload[off : off+chunk]); err != nil {
						wrote <- err
						return
					}
				}
				wrote <- pw.Close()
			}()

			req, err := http.NewRequest("POST", e.url+"/upload", pr)
			if err != nil {
				t.Fatal(err)
			}
			if tc.contentLength {
				req.ContentLength = size
			}
			req.Header.Set("Content-Type", "application/octet-stream")
			resp, err := e.client.Do(req)
			if err != nil {
				pw.CloseWithError(err)
				proxytest.Receive(t, wrote, "the client's writer")
				t.Fatalf("POST: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err := proxytest.Receive(t, wrote, "the client's writer"); err != nil {
				t.Fatalf("client writing the body: %v", err)
			}
			u := proxytest.Receive(t, received, "the backend's upload")
			if u.err != nil {
				t.Fatalf("backend reading the body after %d bytes: %v", u.n, u.err)
			}
			if resp.StatusCode != http.StatusOK || string(body) != "stored" {
				t.Fatalf("status %d body %q", resp.StatusCode, body)
			}
			if u.n != size || u.sum != want {
				t.Fatalf("backend got %d bytes with sha256 %x, want %d bytes with %x", u.n, u.sum, size, want)
			}
			e.checkIdle(t)
		})
	}
}

// TestResponseStreamed has the backend write a first part, flush, and wait on a channel; the
// client must read that first part through the proxy before the test lets the backend send
// the rest.
func TestResponseStreamed(t *testing.T) {
	for _, tc := range []struct {
		name        string
		contentType string
		parts       [2]string
		known       bool // send a Content-Length for the whole body
	}{
		{"chunked", "text/plain; charset=utf-8", [2]string{"chunk-1\n", "chunk-2\n"}, false},
		{"content-length", "text/plain; charset=utf-8", [2]string{"chunk-1\n", "chunk-2\n"}, true},
		{"server-sent events", "text/event-stream", [2]string{"id: 1\ndata: one\n\n", "id: 2\ndata: two\n\n"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := newGate(t)
			b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				if tc.known {
					w.Header().Set("Content-Length", strconv.Itoa(len(tc.parts[0])+len(tc.parts[1])))
				}
				io.WriteString(w, tc.parts[0])
				http.NewResponseController(w).Flush()
				if !release.wait(r.Context()) {
					return
				}
				io.WriteString(w, tc.parts[1])
			})
			t.Cleanup(release.open)
			e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{b.URL}}}, ""))

			ctx, cancel := context.WithTimeout(context.Background(), proxytest.Liveness)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, "GET", e.url+"/stream", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); ct != tc.contentType {
				t.Errorf("Content-Type %q, want %q", ct, tc.contentType)
			}
			first := make([]byte, len(tc.parts[0]))
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				t.Fatalf("first part did not arrive before the backend was released: %v", err)
			}
			if string(first) != tc.parts[0] {
				t.Fatalf("first part %q, want %q", first, tc.parts[0])
			}
			release.open()
			rest, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("rest of the body: %v", err)
			}
			if string(rest) != tc.parts[1] {
				t.Fatalf("rest %q, want %q", rest, tc.parts[1])
			}
			if tc.contentType == "text/event-stream" {
				events := strings.Split(strings.TrimSuffix(string(first)+string(rest), "\n\n"), "\n\n")
				if len(events) != 2 {
					t.Errorf("got %d events, want 2: %q", len(events), events)
				}
			}
		})
	}
}

// TestH2CPriorKnowledge speaks HTTP/2 without TLS, with prior knowledge, to the plain
// listener that also serves HTTP/1.1.
func TestH2CPriorKnowledge(t *testing.T) {
	seen := make(chan recorded, 4)
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{recordingBackend(t, seen)}}}, ""))

	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2 := &http.Transport{Protocols: &p}
	t.Cleanup(h2.CloseIdleConnections)
	client := &http.Client{Transport: h2, Timeout: proxytest.Liveness}

	for _, tc := range []struct {
		method, body string
	}{
		{"GET", ""},
		{"POST", "payment=42"},
	} {
		t.Run(tc.method, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req, err := http.NewRequest(tc.method, e.url+"/h2", body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Request-Id", "h2c-"+tc.method)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("h2c %s: %v", tc.method, err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Errorf("client spoke %s, want HTTP/2", resp.Proto)
			}
			if resp.StatusCode != http.StatusOK || string(got) != "ok" {
				t.Fatalf("status %d body %q", resp.StatusCode, got)
			}
			if v := resp.Header.Get("X-Request-Id"); v != "h2c-"+tc.method {
				t.Errorf("X-Request-Id %q, want %q", v, "h2c-"+tc.method)
			}
			r := proxytest.Receive(t, seen, "the backend's record")
			if r.body != tc.body {
				t.Errorf("backend got body %q, want %q", r.body, tc.body)
			}
			if v := r.header.Get("X-Forwarded-Proto"); v != "http" {
				t.Errorf("X-Forwarded-Proto %q, want http", v)
			}
		})
	}
	// The same listener still speaks HTTP/1.1.
	if status, body := e.get(t, "/h1"); status != http.StatusOK || body != "ok" {
		t.Fatalf("HTTP/1.1 after h2c: status %d body %q", status, body)
	}
	proxytest.Receive(t, seen, "the backend's record")
}

// TestResponseTrailersPass checks that a backend's trailers reach the client after a
// streamed body.
func TestResponseTrailersPass(t *testing.T) {
	b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, "part-1;")
		http.NewResponseController(w).Flush()
		io.WriteString(w, "part-2")
		w.Header().Set("X-Checksum", "c0ffee")
	})
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{b.URL}}}, ""))

	req, err := http.NewRequest("GET", e.url+"/trailers", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("TE", "trailers")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "part-1;part-2" {
		t.Fatalf("body %q, %v", body, err)
	}
	if v := resp.Trailer.Get("X-Checksum"); v != "c0ffee" {
		t.Errorf("trailer X-Checksum %q, want c0ffee (trailers: %v)", v, resp.Trailer)
	}
}
