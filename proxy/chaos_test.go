package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/proxytest"
	"go.uber.org/goleak"
)

// Scripts a chaos request can carry; the client picks one per request from a seeded RNG and
// the backend plays it back.
const (
	scriptOK           = "ok"            // 200 with X-Size bytes
	scriptFail         = "fail"          // 500
	scriptReset        = "reset"         // hijack and reset: the client gets 502
	scriptAbort        = "abort"         // 200, part of the body, then a reset
	scriptDelay        = "delay"         // 200 after X-Delay-Us microseconds
	scriptRandomCancel = "random-cancel" // a delay the client may give up on at any point
	scriptStreamCancel = "stream-cancel" // the client cancels after the first part of the body
	scriptWaitCancel   = "wait-cancel"   // the client cancels once the backend has the request
	scriptUploadCancel = "upload-cancel" // the client cancels midway through its upload
)

var chaosMix = []struct {
	script  string
	percent int
}{
	{scriptOK, 40}, {scriptFail, 10}, {scriptReset, 5}, {scriptAbort, 5}, {scriptDelay, 15},
	{scriptRandomCancel, 10}, {scriptStreamCancel, 5}, {scriptWaitCancel, 5}, {scriptUploadCancel, 5},
}

// chaosBackend plays back the script each request carries. arrivals holds, by X-Test-Id, a
// channel to close once the request has reached the backend; stuck counts handlers that
// waited the whole proxytest.Liveness bound for a cancellation the proxy should have passed on.
func chaosBackend(arrivals *sync.Map, stuck *atomic.Int64) http.HandlerFunc {
	arrived := func(r *http.Request) {
		if ch, ok := arrivals.LoadAndDelete(r.Header.Get("X-Test-Id")); ok {
			close(ch.(chan struct{}))
		}
	}
	waitCancel := func(r *http.Request) {
		timer := time.NewTimer(proxytest.Liveness)
		defer timer.Stop()
		select {
		case <-r.Context().Done():
		case <-timer.C:
			stuck.Add(1)
		}
	}
	return func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("X-Script") {
		case scriptOK:
			io.Copy(io.Discard, r.Body)
			n, _ := strconv.Atoi(r.Header.Get("X-Size"))
			io.WriteString(w, strings.Repeat("x", n))
		case scriptFail:
			io.Copy(io.Discard, r.Body)
			http.Error(w, "scripted failure", http.StatusInternalServerError)
		case scriptReset:
			resetConn(proxytest.Hijack(w))
		case scriptAbort:
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Length", "1000")
			io.WriteString(w, "part")
			http.NewResponseController(w).Flush()
			resetConn(proxytest.Hijack(w))
		case scriptDelay, scriptRandomCancel:
			io.Copy(io.Discard, r.Body)
			us, _ := strconv.Atoi(r.Header.Get("X-Delay-Us"))
			timer := time.NewTimer(time.Duration(us) * time.Microsecond)
			defer timer.Stop()
			select {
			case <-timer.C:
				io.WriteString(w, "delayed")
			case <-r.Context().Done():
			}
		case scriptStreamCancel:
			// Drain the body first: net/http notices a closed connection, and cancels the
			// request's context, only once the body has been read.
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, "first\n")
			http.NewResponseController(w).Flush()
			waitCancel(r)
		case scriptWaitCancel:
			io.Copy(io.Discard, r.Body)
			arrived(r)
			waitCancel(r)
		case scriptUploadCancel:
			buf := make([]byte, 1024)
			if _, err := io.ReadFull(r.Body, buf); err != nil {
				return
			}
			arrived(r)
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(proxytest.Liveness))
			if _, err := io.Copy(io.Discard, r.Body); errors.Is(err, os.ErrDeadlineExceeded) {
				stuck.Add(1)
			}
		default:
			http.Error(w, "no script", http.StatusTeapot)
		}
	}
}

// TestInflightReturnsToZeroUnderChaos sends 10,000 requests, 32 at a time over HTTP/1.1 and
// h2c, whose backends succeed, fail, reset, abort or delay at random and whose clients cancel
// at random points. Once the proxy has drained, every site's and backend's in-flight count
// must be zero, no backend may have waited in vain for a cancellation, and no goroutine may
// be left.
func TestInflightReturnsToZeroUnderChaos(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) }) // first registered: runs after every other cleanup

	const requests, workers = 10000, 32
	const seed = 0x5b111a7

	var arrivals sync.Map
	var stuck atomic.Int64
	// Registered before the backends, so it runs once their Close has waited for every
	// handler.
	t.Cleanup(func() {
		if n := stuck.Load(); n > 0 {
			t.Errorf("%d backend handlers waited %v for a cancellation the proxy did not pass on", n, proxytest.Liveness)
		}
	})
	names := []string{"idc1", "idc2", "aws"}
	weights := []int{5, 3, 2}
	var sites []proxytest.Site
	for i, n := range names {
		a := proxytest.NewBackend(t, chaosBackend(&arrivals, &stuck))
		b := proxytest.NewBackend(t, chaosBackend(&arrivals, &stuck))
		sites = append(sites, proxytest.Site{Name: n, Weight: weights[i], Backends: []string{a.URL, b.URL}})
	}
	e := startProxy(t, proxytest.ConfigYAML(sites, "timeouts:\n  connect: 2s\n  response_header: 10s\n"))

	// A quarter of the requests speak h2c, where a cancel resets a stream, not a connection.
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	h2tr := &http.Transport{Protocols: &protocols}
	t.Cleanup(h2tr.CloseIdleConnections)
	h2c := &http.Client{Transport: h2tr, Timeout: proxytest.Liveness}

	var (
		mu       sync.Mutex
		tally    = map[string]int{}
		failures atomic.Int64
	)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				script, outcome, err := chaosRequest(e, h2c, &arrivals, seed, i)
				if err != nil {
					if failures.Add(1) <= 10 {
						t.Errorf("request %d (%s): %v", i, script, err)
					}
					continue
				}
				mu.Lock()
				tally[script+" "+outcome]++
				mu.Unlock()
			}
		})
	}
	for i := range requests {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	t.Logf("seed %#x: %v", seed, tally)
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d requests did not end as scripted", n, requests)
	}

	e.checkIdle(t)
}

// chaosRequest sends request i with a script drawn from a generator seeded by (seed, i), so
// the run is the same whatever the scheduling. It returns the script, how the request ended,
// and an error if that was not one of the ends the script allows.
func chaosRequest(e *env, h2c *http.Client, arrivals *sync.Map, seed uint64, i int) (script, outcome string, err error) {
	rng := rand.New(rand.NewPCG(seed, uint64(i)))
	p := rng.IntN(100)
	for _, m := range chaosMix {
		if p < m.percent {
			script = m.script
			break
		}
		p -= m.percent
	}
	post := rng.IntN(2) == 0
	client := e.client
	if rng.IntN(4) == 0 {
		client = h2c
	}
	size := rng.IntN(8 << 10)
	delay := rng.IntN(3000) // µs
	id := strconv.Itoa(i)

	ctx, cancel := context.WithTimeout(context.Background(), proxytest.Liveness)
	defer cancel()
	newReq := func(body io.Reader) *http.Request {
		method := "GET"
		if body != nil {
			method = "POST"
		}
		req, _ := http.NewRequestWithContext(ctx, method, e.url+"/chaos/"+id, body)
		req.Header.Set("X-Script", script)
		req.Header.Set("X-Test-Id", id)
		req.Header.Set("X-Size", strconv.Itoa(size))
		req.Header.Set("X-Delay-Us", strconv.Itoa(delay))
		return req
	}
	var body io.Reader
	if post {
		body = strings.NewReader(strings.Repeat("p", rng.IntN(16<<10)+1))
	}

	switch script {
	case scriptOK, scriptFail, scriptReset, scriptDelay:
		want := map[string]int{scriptOK: 200, scriptFail: 500, scriptReset: 502, scriptDelay: 200}[script]
		resp, err := client.Do(newReq(body))
		if err != nil {
			return script, "", err
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return script, "", fmt.Errorf("status %d, reading body: %w", resp.StatusCode, err)
		}
		if resp.StatusCode != want {
			return script, "", fmt.Errorf("status %d body %.40q, want %d", resp.StatusCode, got, want)
		}
		if script == scriptOK && len(got) != size {
			return script, "", fmt.Errorf("body of %d bytes, want %d", len(got), size)
		}
		return script, strconv.Itoa(resp.StatusCode), nil

	case scriptAbort:
		resp, err := client.Do(newReq(body))
		if err != nil {
			return script, "", err
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err == nil {
			return script, "", fmt.Errorf("status %d, body %q, read error %v: want 200 and a body cut short", resp.StatusCode, got, err)
		}
		return script, "200 cut short", nil

	case scriptRandomCancel:
		// Give up at a random point around the backend's delay: before the request is sent,
		// while it waits, or after the response.
		after := time.Duration(rng.IntN(8000)) * time.Microsecond
		timer := time.AfterFunc(after, cancel)
		defer timer.Stop()
		resp, err := client.Do(newReq(body))
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				return script, "", err
			}
			return script, "canceled", nil
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return script, "", fmt.Errorf("status %d, want 200 or a cancel", resp.StatusCode)
		}
		if err != nil {
			return script, "canceled in body", nil
		}
		if string(got) != "delayed" {
			return script, "", fmt.Errorf("body %q", got)
		}
		return script, "200", nil

	case scriptStreamCancel:
		resp, err := client.Do(newReq(body))
		if err != nil {
			return script, "", err
		}
		defer resp.Body.Close()
		first := make([]byte, len("first\n"))
		if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first\n" {
			return script, "", fmt.Errorf("first part %q: %v", first, err)
		}
		cancel()
		if _, err := io.ReadAll(resp.Body); err == nil {
			return script, "", errors.New("body ended cleanly after the cancel")
		}
		return script, "canceled in body", nil

	case scriptWaitCancel, scriptUploadCancel:
		arrived := make(chan struct{})
		arrivals.Store(id, arrived)
		defer arrivals.Delete(id)
		var pw *io.PipeWriter
		wrote := make(chan struct{})
		if script == scriptUploadCancel {
			var pr *io.PipeReader
			pr, pw = io.Pipe()
			body = pr
			go func() {
				defer close(wrote)
				pw.Write(make([]byte, 1024))
			}()
		} else {
			close(wrote)
		}
		done := make(chan error, 1)
		go func() {
			resp, err := client.Do(newReq(body))
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				err = fmt.Errorf("got a response, status %d", resp.StatusCode)
			}
			done <- err
		}()
		// A Go client does not return from Do until its body's Read does: a client that
		// gives up stops writing, so the pipe closes with the cancel.
		stop := func() {
			cancel()
			if pw != nil {
				pw.CloseWithError(context.Canceled)
			}
		}
		select {
		case <-arrived:
			stop()
			err = <-done
			if errors.Is(err, context.Canceled) {
				err = nil
			}
		case err = <-done:
			stop()
			err = fmt.Errorf("ended before reaching the backend: %w", err)
		case <-ctx.Done():
			stop()
			err = <-done
			err = fmt.Errorf("never reached the backend: %w", err)
		}
		<-wrote
		return script, "canceled", err
	}
	return script, "", fmt.Errorf("unknown script")
}
