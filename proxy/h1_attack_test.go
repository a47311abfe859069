package proxy_test

// Attacks on the client-facing HTTP/1.1 engine end to end, through the proxy's Handler.

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/proxytest"
)

// A chunked upload whose one-byte chunks each carry a 4000-byte extension: the proxy
// reads 4 MB from the client to forward 1000 bytes. net/http's server would fail the body
// after 16 KiB of such overhead (CVE-2023-39326); the backend must not get the whole body,
// and the client must not get a 200 for it.
func TestAttackChunkExtensionAmplificationThroughProxy(t *testing.T) {
	got := make(chan int, 1)
	b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		got <- int(n)
	})
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "a", Weight: 1, Backends: []string{b.URL}}}, ""))
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(proxytest.Liveness))
	const chunks = 1000
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		io.WriteString(conn, "POST /up HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n")
		chunk := "1;" + strings.Repeat("x", 4000) + "\r\na\r\n"
		for range chunks {
			if _, err := io.WriteString(conn, chunk); err != nil {
				return
			}
		}
		io.WriteString(conn, "0\r\n\r\n")
	}()
	// An answer, or the close: either way the upload is over for the client.
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil && resp.StatusCode == http.StatusOK {
		t.Errorf("the upload of %d MB of extensions was answered 200", chunks*4000>>20)
	}
	conn.Close()
	<-sent
	select {
	case n := <-got:
		if n == chunks {
			t.Errorf("the backend got the whole %d-byte body", n)
		}
	default:
	}
}

// A backend answers an upload early, unread; the client had pipelined a GET after it, and
// the upload's body holds a request of its own. Through the engine and the proxy: the
// client gets the early answer, then either the GET's own answer or a close, and the
// backend never sees the request hidden in the body.
func TestAttackEarlyAnswerPipelinedThroughProxy(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	b := proxytest.NewBackend(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		if r.URL.Path == "/early" {
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		io.WriteString(w, "echo "+r.URL.Path)
	})
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "a", Weight: 1, Backends: []string{b.URL}}}, ""))
	for name, framing := range map[string]func(string) string{
		"length": func(body string) string {
			return "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
		},
		"chunked": func(body string) string {
			return "Transfer-Encoding: chunked\r\n\r\n" + strconv.FormatInt(int64(len(body)), 16) + "\r\n" + body + "\r\n0\r\nX-T: 1\r\n\r\n"
		},
	} {
		t.Run(name, func(t *testing.T) {
			conn, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(proxytest.Liveness))
			hidden := "GET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n"
			body := hidden + strings.Repeat("x", 300<<10)
			go io.WriteString(conn, "POST /early HTTP/1.1\r\nHost: example.com\r\n"+framing(body)+
				"GET /after HTTP/1.1\r\nHost: example.com\r\n\r\n")
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("first answer %d", resp.StatusCode)
			}
			if resp2, err := http.ReadResponse(br, nil); err == nil {
				got, _ := io.ReadAll(resp2.Body)
				if string(got) != "echo /after" {
					t.Fatalf("second answer %d %q", resp2.StatusCode, got)
				}
			}
			conn.Close()
			mu.Lock()
			defer mu.Unlock()
			for _, p := range paths {
				if p == "/smuggled" {
					t.Fatalf("the backend saw %v", paths)
				}
			}
		})
	}
}
