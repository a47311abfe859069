package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spillway/spillway/bench/sim"
)

// The fleet scenario's child processes: one etcd (Debian's etcd-server, or any etcd on
// PATH) and the spillway replicas, each a `spillway run` with a cluster section.

// lookEtcd finds the etcd binary on PATH or in /usr/bin.
func lookEtcd() (string, error) {
	if p, err := exec.LookPath("etcd"); err == nil {
		return p, nil
	}
	return exec.LookPath("/usr/bin/etcd")
}

// startEtcd starts a one-member etcd on free loopback ports with its data in dir/etcd, and
// waits until it answers /health. It returns the client URL.
func startEtcd(ctx context.Context, bin, dir string) (string, *child, error) {
	client, err := freePort()
	if err != nil {
		return "", nil, err
	}
	peer, err := freePort()
	if err != nil {
		return "", nil, err
	}
	cu, pu := "http://"+client, "http://"+peer
	c, err := startChild(dir, "etcd", bin, "--name", "bench", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", cu, "--advertise-client-urls", cu,
		"--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu,
		"--initial-cluster", "bench="+pu, "--log-level", "error")
	if err != nil {
		return "", nil, err
	}
	if err := c.waitFor(ctx, 20*time.Second, func(cl *http.Client) bool {
		var h struct{ Health string }
		return getJSON(cl, cu+"/health", &h) == nil && h.Health == "true"
	}); err != nil {
		c.stop()
		return "", nil, err
	}
	return cu, c, nil
}

// replica is one spillway replica of the fleet.
type replica struct {
	node        string
	url, admin  string // "http://127.0.0.1:port"
	*child             // nil once stopped
	metricsLast metricSet
}

// fleetConfig is a replica's config: the simulated sites, its listeners and the cluster.
func fleetConfig(sites []SiteSpec, backends map[string][]*sim.Backend, listen, admin, node, etcd string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "listen: {http: %q}\nadmin: {listen: %q}\nsites:\n", listen, admin)
	for _, s := range sites {
		fmt.Fprintf(&sb, "  - name: %s\n    weight: %d\n    max_inflight: %d\n", s.Name, s.Weight, s.Limit)
		if s.Elastic {
			sb.WriteString("    elastic: true\n")
		}
		var urls []string
		for _, b := range backends[s.Name] {
			urls = append(urls, fmt.Sprintf("%q", b.URL()))
		}
		fmt.Fprintf(&sb, "    backends: [%s]\n", strings.Join(urls, ", "))
		sb.WriteString("    health: {path: /healthz, interval: 100ms, timeout: 100ms, rise: 2, fall: 3}\n")
	}
	sb.WriteString("spillover: {resume: 0.8, queue: {size: 1000, timeout: 2s}}\n")
	sb.WriteString("retries: {attempts: 2}\n")
	sb.WriteString("timeouts: {connect: 1s, response_header: 10s, shutdown: 2s, drain_delay: 500ms}\n")
	fmt.Fprintf(&sb, "cluster: {name: bench, node: %s, etcd: {endpoints: [%q]}, lease: 2s}\n", node, etcd)
	return sb.String()
}

// startReplica writes node's config and starts `spillway run` on it; it does not wait.
func startReplica(bin, dir, node, etcd string, sites []SiteSpec, backends map[string][]*sim.Backend) (*replica, error) {
	listen, err := freePort()
	if err != nil {
		return nil, err
	}
	admin, err := freePort()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, node+".yaml")
	if err := os.WriteFile(path, []byte(fleetConfig(sites, backends, listen, admin, node, etcd)), 0o644); err != nil {
		return nil, err
	}
	c, err := startChild(dir, "spillway-"+node, bin, "run", "-config", path, "-log-level", "warn")
	if err != nil {
		return nil, err
	}
	return &replica{node: node, url: "http://" + listen, admin: "http://" + admin, child: c}, nil
}

// waitJoined waits until the replica is ready (/readyz 200), says it has joined the fleet
// (GET /api/v1/state: cluster.joined) and proxies a request to a simulated site.
func (r *replica) waitJoined(ctx context.Context, limit time.Duration) error {
	return r.waitFor(ctx, limit, func(cl *http.Client) bool {
		res, err := cl.Get(r.admin + "/readyz")
		if err != nil {
			return false
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		var st struct {
			Cluster struct{ Joined bool } `json:"cluster"`
		}
		if res.StatusCode != http.StatusOK || getJSON(cl, r.admin+"/api/v1/state", &st) != nil || !st.Cluster.Joined {
			return false
		}
		res, err = cl.Get(r.url + "/")
		if err != nil {
			return false
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode == http.StatusOK && res.Header.Get(sim.HeaderSite) != ""
	})
}

// scrape reads the replica's /metrics into metricsLast (kept from the last read that worked).
func (r *replica) scrape() error {
	tr := &http.Transport{Proxy: nil}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	res, err := cl.Get(r.admin + "/metrics")
	if err != nil {
		return err
	}
	defer res.Body.Close()
	m, err := parseMetrics(res.Body)
	if err != nil {
		return err
	}
	r.metricsLast = m
	return nil
}

func getJSON(cl *http.Client, url string, v any) error {
	res, err := cl.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		io.Copy(io.Discard, res.Body)
		return fmt.Errorf("%s: %s", url, res.Status)
	}
	return json.NewDecoder(res.Body).Decode(v)
}
