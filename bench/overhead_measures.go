package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The overhead scenario's two other measures (issue 17): CPU per request at saturation, and
// the memory an idle keep-alive client connection holds.

// saturate drives url closed-loop from conc workers for d (and at most maxRequests in all)
// and returns how many answered 200 and how many failed.
func saturate(ctx context.Context, url string, conc int, d time.Duration, maxRequests int64) (ok, failed int64) {
	tr := &http.Transport{Proxy: nil, MaxIdleConns: conc, MaxIdleConnsPerHost: conc, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var sent, okN, failN atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for ctx.Err() == nil && sent.Add(1) <= maxRequests {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				res, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						failN.Add(1)
					}
					continue
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					okN.Add(1)
				} else {
					failN.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return okN.Load(), failN.Load()
}

// idleConns opens n client connections to addr, sends one GET on each and reads its answer,
// and returns them open and idle (keep-alive). The caller closes them.
func idleConns(ctx context.Context, addr string, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	req := "GET / HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: spillway-bench\r\n\r\n"
	for range n {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("connection %d: %w", len(conns)+1, err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, req); err != nil {
			closeAll()
			return nil, err
		}
		res, err := http.ReadResponse(bufio.NewReaderSize(c, 4096), nil)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("connection %d: %w", len(conns), err)
		}
		_, err = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK || res.Close {
			closeAll()
			return nil, fmt.Errorf("connection %d: status %d, close %v, %v", len(conns), res.StatusCode, res.Close, err)
		}
		c.SetDeadline(time.Time{})
	}
	return conns, nil
}

// procRSS is the resident memory of process pid and its children (nginx's workers), from
// /proc/PID/status.
func procRSS(pid int) (int64, error) {
	var total int64
	err := eachOfProcess(pid, func(p string) error {
		rss, err := statusRSS(p)
		total += rss
		return err
	})
	return total, err
}

// statusRSS reads VmRSS (bytes) from /proc/PID/status.
func statusRSS(pid string) (int64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("/proc/%s/status: VmRSS %q", pid, v)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("/proc/" + pid + "/status: no VmRSS")
}

// idleKiB measures what n idle keep-alive connections cost the proxy process pid: its
// resident memory with them open, less before, over n. The connections are closed after.
func idleKiB(ctx context.Context, pid int, addr string, n int) (float64, error) {
	before, err := procRSS(pid)
	if err != nil {
		return 0, err
	}
	conns, err := idleConns(ctx, addr, n)
	if err != nil {
		return 0, err
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Let the proxy settle (a garbage collection, idle buffers released) as a real idle
	// connection would, then read.
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(time.Second):
	}
	after, err := procRSS(pid)
	if err != nil {
		return 0, err
	}
	return float64(after-before) / 1024 / float64(n), nil
}
