package proxy_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/proxytest"
)

// earlyAnswerBackend reads a request's head, answers 413 at once without reading the body,
// and then neither reads nor closes: a backend that refuses an upload and leaves the
// connection to the client to close. It reports each request it answered on answered.
func earlyAnswerBackend(t *testing.T, answered chan<- struct{}) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 9\r\n\r\ntoo large")
				answered <- struct{}{}
				<-stop // never read the body, never close first
			}()
		}
	}()
	t.Cleanup(func() { close(stop); ln.Close(); <-done })
	return "http://" + ln.Addr().String()
}

// A backend that refuses an upload at once (413) while it is still being sent, and neither
// reads the rest nor closes, must not hold its answer until the write limit
// (timeouts.response_header, here a minute): the client gets the 413 while its upload is
// still going, and the backend saw the request once.
func TestEarlyAnswerToAnUploadReachesTheClient(t *testing.T) {
	answered := make(chan struct{}, 4)
	backend := earlyAnswerBackend(t, answered)
	e := startProxy(t, proxytest.ConfigYAML([]proxytest.Site{{Name: "idc1", Weight: 1, Backends: []string{backend}}}, "timeouts: {response_header: 60s}\n"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // liveness only, below the write limit
	defer cancel()
	body, w := io.Pipe()
	defer w.Close()
	go func() { // an endless upload, until the test ends
		buf := make([]byte, 32<<10)
		for {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/upload", body)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("POST: %v (want the backend's 413 before the 60 s write limit)", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want the backend's 413", resp.StatusCode)
	}
	proxytest.Receive(t, answered, "the backend's answer")
	select {
	case <-answered:
		t.Fatal("the backend saw the upload twice")
	default:
	}
	w.Close()
	e.checkIdle(t) // and the client's connection, whose upload was cut short, is let go
}
