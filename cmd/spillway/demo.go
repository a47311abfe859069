package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/spillway/spillway/bench/sim"
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy/admin"
)

// Bounds on the demo's load, so that a typo cannot turn it into a load test.
const (
	maxDemoRate     = 2000
	maxDemoDuration = 10 * time.Minute
	demoConcurrency = 64
)

// cmdDemo starts the simulated sites of configs/demo.yaml on loopback and the proxy on them,
// prints where they are, and either waits for Ctrl-C or, with -load, drives a light bounded
// load and prints each site's share once a second.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "", "proxy address on loopback (default: listen.http of the demo config, or a free port)")
	load := fs.Bool("load", false, "drive traffic through the proxy and print the split each second, then exit")
	rate := fs.Int("rate", 200, fmt.Sprintf("requests per second with -load (max %d)", maxDemoRate))
	duration := fs.Duration("duration", 10*time.Second, fmt.Sprintf("how long -load runs (max %s)", maxDemoDuration))
	latency := fs.Duration("latency", 2*time.Millisecond, "service time of every simulated backend")
	if err := fs.Parse(args); err != nil {
		return exitError{2}
	}
	if fs.NArg() != 0 || *rate < 1 || *rate > maxDemoRate || *duration <= 0 || *duration > maxDemoDuration || *latency < 0 {
		fmt.Fprintf(stderr, "demo: -rate must be 1..%d, -duration in (0, %s], -latency >= 0\n", maxDemoRate, maxDemoDuration)
		return exitError{2}
	}
	cfg, err := configs.Parse("demo.yaml (embedded)", configs.Demo)
	if err != nil {
		return fmt.Errorf("embedded demo config: %w", err)
	}
	log := newConsoleLogger(stderr, zapcore.WarnLevel)
	defer log.Sync()

	yaml := string(configs.Demo)
	backends, err := startSimulatedSites(cfg, *latency, stdout, &yaml)
	defer func() {
		for _, b := range backends {
			b.Close()
		}
	}()
	if err != nil {
		return err
	}
	// The demo runs like the real thing: on a config file (a copy of the embedded one, edit
	// it and the proxy reloads it), with the admin API and the dashboard.
	dir, err := os.MkdirTemp("", "spillway-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "demo.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		return err
	}
	token := rand.Text()
	proxyAddr := cfg.Listen.HTTP
	if *listen != "" {
		proxyAddr = *listen
	}
	in, err := startInstance(ctx, instanceOptions{path: path, log: log, tokens: admin.Tokens{"demo": token},
		listen: func(addr string) (net.Listener, error) {
			if addr == cfg.Listen.HTTP {
				return listenLoopback(proxyAddr, *listen == "")
			}
			return listenLoopback(addr, true)
		}})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	proxyURL := in.ls.url()
	printDemoBanner(stdout, cfg, proxyURL, backends, *load)
	if in.adminLn != nil && !*load {
		fmt.Fprintf(stdout, "Dashboard: http://%s/  (token for changes: %s)\n", in.adminLn.Addr(), token)
		fmt.Fprintf(stdout, "Config: %s  (edit it: the proxy reloads it)\n", path)
	}

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- in.serve(ctx) }()
	if *load {
		err = driveDemoLoad(ctx, proxyURL, cfg, *rate, *duration, stdout)
		stop()
		return errors.Join(err, <-served)
	}
	return <-served
}

// startSimulatedSites starts a simulated backend for every backend in cfg, at its address if
// free, else on a free port, and points cfg and the config's text yaml at where each one
// really listens.
func startSimulatedSites(cfg *configs.Config, latency time.Duration, stdout io.Writer, yaml *string) ([]*sim.Backend, error) {
	var started []*sim.Backend
	for i, s := range cfg.Sites {
		for j, raw := range s.Backends {
			u, err := url.Parse(raw)
			if err != nil {
				return started, err
			}
			name := fmt.Sprintf("%s-%d", s.Name, j+1)
			b, err := sim.Start(u.Host, s.Name, name, latency)
			if err != nil {
				fmt.Fprintf(stdout, "note: %s is taken; %s listens on a free port instead\n", u.Host, name)
				if b, err = sim.Start("127.0.0.1:0", s.Name, name, latency); err != nil {
					return started, err
				}
			}
			started = append(started, b)
			if b.URL() != raw {
				*yaml = strings.Replace(*yaml, strconv.Quote(raw), strconv.Quote(b.URL()), 1)
			}
			cfg.Sites[i].Backends[j] = b.URL()
		}
	}
	return started, nil
}

// listenLoopback listens on addr, which must be a loopback address; when it is taken and
// fallback is set, on a free loopback port instead.
func listenLoopback(addr string, fallback bool) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("the demo listens on loopback only (127.0.0.1 or ::1), not %q", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil && fallback {
		return net.Listen("tcp", net.JoinHostPort(host, "0"))
	}
	return ln, err
}

func printDemoBanner(w io.Writer, cfg *configs.Config, proxyURL string, backends []*sim.Backend, load bool) {
	fmt.Fprintf(w, "Spillway demo: proxy on %s\n", proxyURL)
	for _, s := range cfg.Sites {
		fmt.Fprintf(w, "  site %-5s weight %d  backends %s\n", s.Name, s.Weight, strings.Join(s.Backends, " "))
	}
	if load {
		return
	}
	fmt.Fprintf(w, "Try:  for i in $(seq 10); do curl -s %s/; done\n", proxyURL)
	fmt.Fprintln(w, "      (10 requests: 5 answered by idc1, 3 by idc2, 2 by aws)")
	fmt.Fprintln(w, "Ctrl-C stops the demo.")
}

// demoTally counts responses per site within the current second and overall.
type demoTally struct {
	mu            sync.Mutex
	second, total map[string]int
	secErrs, errs int
	secSent, sent int
	secBusy, busy int
}

func (t *demoTally) record(site string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.secErrs++
		t.errs++
		return
	}
	t.second[site]++
	t.total[site]++
}

// driveDemoLoad sends rate requests per second to proxyURL for duration, at most
// demoConcurrency at a time, and prints each site's share of every second's answers.
func driveDemoLoad(ctx context.Context, proxyURL string, cfg *configs.Config, rate int, duration time.Duration, w io.Writer) error {
	tr := &http.Transport{MaxIdleConnsPerHost: demoConcurrency, Proxy: nil}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	tally := &demoTally{second: map[string]int{}, total: map[string]int{}}

	fmt.Fprintf(w, "driving %d requests/s for %s\n", rate, duration)
	header := fmt.Sprintf("%6s %6s", "time", "answers")
	target := fmt.Sprintf("%6s %6s", "target", "")
	sum := 0
	for _, s := range cfg.Sites {
		sum += s.Weight
	}
	for _, s := range cfg.Sites {
		header += fmt.Sprintf("  %8s", s.Name)
		target += fmt.Sprintf("  %7.1f%%", 100*float64(s.Weight)/float64(sum))
	}
	fmt.Fprintln(w, header+"  errors")
	fmt.Fprintln(w, target)

	sem := make(chan struct{}, demoConcurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	send := func() {
		defer func() { <-sem; wg.Done() }()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, proxyURL+"/", nil)
		if err != nil {
			tally.record("", err)
			return
		}
		res, err := client.Do(req)
		if err != nil {
			tally.record("", err)
			return
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", res.StatusCode)
		}
		tally.record(res.Header.Get(sim.HeaderSite), err)
	}

	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	report := time.NewTicker(time.Second)
	defer report.Stop()
	start := time.Now()
	end := time.NewTimer(duration)
	defer end.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-end.C:
			wg.Wait()
			printDemoTotal(w, cfg, tally)
			return nil
		case <-report.C:
			printDemoSecond(w, cfg, tally, time.Since(start))
		case <-tick.C:
			select {
			case sem <- struct{}{}:
				wg.Add(1)
				go send()
			default:
				tally.mu.Lock()
				tally.busy++
				tally.mu.Unlock()
			}
		}
	}
}

func printDemoSecond(w io.Writer, cfg *configs.Config, t *demoTally, elapsed time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	answers := 0
	for _, n := range t.second {
		answers += n
	}
	line := fmt.Sprintf("%5.0fs %7d", elapsed.Seconds(), answers)
	for _, s := range cfg.Sites {
		line += fmt.Sprintf("  %7.1f%%", pct(t.second[s.Name], answers))
	}
	fmt.Fprintf(w, "%s  %6d\n", line, t.secErrs)
	clear(t.second)
	t.secErrs = 0
}

func printDemoTotal(w io.Writer, cfg *configs.Config, t *demoTally) {
	t.mu.Lock()
	defer t.mu.Unlock()
	answers := 0
	for _, n := range t.total {
		answers += n
	}
	line := fmt.Sprintf("%6s %7d", "total", answers)
	for _, s := range cfg.Sites {
		line += fmt.Sprintf("  %7.1f%%", pct(t.total[s.Name], answers))
	}
	fmt.Fprintf(w, "%s  %6d\n", line, t.errs)
	if t.busy > 0 {
		fmt.Fprintf(w, "(%d requests not sent: %d already in flight)\n", t.busy, demoConcurrency)
	}
}

func pct(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}
