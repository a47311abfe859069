package configs

import (
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
)

// Cluster makes this proxy one replica of a fleet: replicas with the same name and etcd share
// their runtime state (weight overrides and ramps, drains, the audit trail) and every
// backend's limit, each enforcing its share (README, "Running a fleet").
type Cluster struct {
	// Name is the fleet's: its keys in etcd are under /spillway/<name>/.
	Name string `yaml:"name"`
	// Node is this replica, unique in the fleet; default the host name (a pod's name).
	Node string `yaml:"node"`
	Etcd Etcd   `yaml:"etcd"`
	// Lease is how long a replica that stopped answering stays a member: after it, the
	// others take its shares of the limits back. Whole seconds.
	Lease time.Duration `yaml:"lease"`
	// Shares is how each backend's limit is divided among the replicas: "equal" (default)
	// or "demand" (in proportion to each replica's requests in flight and waiting,
	// reported once a second).
	Shares string `yaml:"shares"`
}

// Etcd is how a replica reaches the fleet's etcd cluster.
type Etcd struct {
	Endpoints []string `yaml:"endpoints"` // client URLs, http:// or https://
	TLS       *EtcdTLS `yaml:"tls"`       // client TLS for https:// endpoints
}

// EtcdTLS is a replica's TLS to etcd: the CA that signed etcd's certificates (empty: the
// system roots) and, for etcd's client certificate authentication, a certificate and key.
type EtcdTLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Defaults and bounds of the cluster section and of timeouts.drain_delay.
const (
	DefaultClusterLease  = 5 * time.Second
	DefaultClusterShares = "equal"
	MinClusterLease      = 2 * time.Second // etcd's own shortest lease with its default timing
	MaxClusterLease      = 5 * time.Minute
	MaxDrainDelay        = 5 * time.Minute
)

var (
	clusterNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	nodeNameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)
)

// hostname is os.Hostname; a variable so that a test can make it fail.
var hostname = os.Hostname

// setClusterDefaults fills the cluster section's left-out keys.
func (c *Config) setClusterDefaults() {
	cl := c.Cluster
	if cl == nil {
		return
	}
	if cl.Node == "" && !c.Has("cluster.node") {
		if h, err := hostname(); err == nil {
			cl.Node = h
		}
	}
	setDefault(c, "cluster.lease", &cl.Lease, DefaultClusterLease)
	setDefault(c, "cluster.shares", &cl.Shares, DefaultClusterShares)
}

// resolveClusterPaths makes the etcd TLS files relative to dir, like every file path.
func (c *Config) resolveClusterPaths(dir string) {
	if c.Cluster == nil || c.Cluster.Etcd.TLS == nil {
		return
	}
	// Reuse resolvePaths's rule on a config that holds just these three paths.
	t := c.Cluster.Etcd.TLS
	tmp := Config{TLS: &TLS{CertFile: t.CertFile, KeyFile: t.KeyFile, ACME: &ACME{CARoot: t.CAFile}}}
	tmp.resolvePaths(dir)
	t.CertFile, t.KeyFile, t.CAFile = tmp.TLS.CertFile, tmp.TLS.KeyFile, tmp.TLS.ACME.CARoot
}

// cluster checks the cluster section and timeouts.drain_delay.
func (v *validator) cluster() {
	c := v.c
	if d := c.Timeouts.DrainDelay; d < 0 || d > MaxDrainDelay {
		v.add("timeouts.drain_delay", "must be between 0s and %s, got %s", MaxDrainDelay, d)
	}
	cl := c.Cluster
	if cl == nil {
		return
	}
	if c.State != nil {
		v.add("cluster", "use either state (one node's file) or cluster (a fleet's etcd), not both")
	}
	if cl.Name == "" {
		v.add("cluster", "set name: replicas with the same name and etcd act as one fleet")
	} else if !clusterNameRE.MatchString(cl.Name) {
		v.add("cluster.name", "want lower-case letters, digits, '-' and '_' (up to 63, a letter or digit first), got %s", Quote(cl.Name))
	}
	switch {
	case cl.Node == "" && !c.Has("cluster.node"):
		v.add("cluster", "set node: the host name, its default, cannot be read")
	case !nodeNameRE.MatchString(cl.Node):
		v.add("cluster.node", "want letters, digits, '.', '-' and '_' (up to 253, a letter or digit first), got %s", Quote(cl.Node))
	}
	switch l := cl.Lease; {
	case l < MinClusterLease || l > MaxClusterLease:
		v.add("cluster.lease", "must be between %s and %s, got %s", MinClusterLease, MaxClusterLease, l)
	case l%time.Second != 0:
		v.add("cluster.lease", "must be whole seconds (etcd's leases are), got %s", l)
	}
	if cl.Shares != "equal" && cl.Shares != "demand" {
		v.add("cluster.shares", "want equal or demand, got %s", Quote(cl.Shares))
	}
	e := cl.Etcd
	if len(e.Endpoints) == 0 {
		v.add("cluster.etcd", "list the etcd cluster's client URLs in endpoints (e.g. [\"https://10.0.1.5:2379\"])")
	}
	seen := map[string]int{}
	https := false
	for i, ep := range e.Endpoints {
		p := fmt.Sprintf("cluster.etcd.endpoints[%d]", i)
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") ||
			u.RawQuery != "" || u.Fragment != "" || strings.Contains(ep, "#") {
			v.add(p, "want http://host:port or https://host:port, got %s", Quote(ep))
			continue
		}
		if u.User != nil {
			// etcd's client drops it silently, and the endpoint as written goes to the logs.
			v.add(p, "has a user name or password: etcd takes neither in its URLs (use tls client certificates)")
			continue
		}
		if msg := hostPortProblem(u.Host, 1, false); msg != "" {
			v.add(p, "%s", msg)
			continue
		}
		if first, dup := seen[u.Host]; dup {
			v.add(p, "%s is listed twice (first as endpoints[%d])", Quote(ep), first)
		}
		seen[u.Host] = i
		if i > 0 && (u.Scheme == "https") != https {
			// etcd's client dials every endpoint with the first one's scheme: a mix would
			// reach https members in clear text, or http ones with TLS.
			v.add(p, "%s mixes http:// and https:// with the endpoints before it: use one scheme for every member", Quote(ep))
		}
		https = u.Scheme == "https"
	}
	if t := e.TLS; t != nil {
		if !https && len(e.Endpoints) > 0 {
			v.add("cluster.etcd.tls", "is for https:// endpoints; these are all http://")
		}
		if (t.CertFile == "") != (t.KeyFile == "") {
			v.add("cluster.etcd.tls", "cert_file and key_file go together")
		}
	}
}
