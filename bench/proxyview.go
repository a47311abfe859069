package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spillway/spillway/proxy/runtime"
)

// adminClient reads a running Spillway's admin API: GET /api/v1/state, GET /metrics and
// GET /api/v1/explain. It never changes anything.
type adminClient struct {
	base   *url.URL
	token  string
	client *http.Client
}

// maxAdminBody bounds what one admin answer may be: the state API with its history is some
// hundreds of KiB for a large deployment.
const maxAdminBody = 32 << 20

func newAdminClient(base, token string, client *http.Client) (*adminClient, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("admin %q: want http://host:port or https://host:port", base)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return &adminClient{base: u, token: token, client: client}, nil
}

// get reads path (with query) from the admin API; an answer other than 200 is an error
// that says what the API said.
func (a *adminClient) get(ctx context.Context, path string) ([]byte, error) {
	ref, err := url.Parse(path)
	if err != nil {
		return nil, err
	}
	u := *a.base
	u.Path += ref.Path
	u.RawQuery = ref.RawQuery
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	res, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin GET %s: %w", ref.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxAdminBody+1))
	if err != nil {
		return nil, fmt.Errorf("admin GET %s: %w", ref.Path, err)
	}
	if len(b) > maxAdminBody {
		return nil, fmt.Errorf("admin GET %s: answer larger than %d MiB", ref.Path, maxAdminBody>>20)
	}
	if res.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(b))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		return nil, fmt.Errorf("admin GET %s: %s: %s", ref.Path, res.Status, msg)
	}
	return b, nil
}

func (a *adminClient) state(ctx context.Context) (*runtime.State, error) {
	b, err := a.get(ctx, "/api/v1/state")
	if err != nil {
		return nil, err
	}
	var st runtime.State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("admin GET /api/v1/state: %w", err)
	}
	return &st, nil
}

func (a *adminClient) metrics(ctx context.Context) (metricSet, error) {
	b, err := a.get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	m, err := parseMetrics(strings.NewReader(string(b)))
	if err != nil {
		return nil, fmt.Errorf("admin GET /metrics: %w", err)
	}
	return m, nil
}

// explained is what GET /api/v1/explain says of one request: the site that served it,
// the site the split or affinity preferred, and what chose that ("split", "affinity").
type explained struct {
	Site      string `json:"site"`
	Preferred string `json:"preferred"`
	Chosen    string `json:"chosen"`
}

// explain asks the proxy where the request with this X-Request-Id went, and why.
func (a *adminClient) explain(ctx context.Context, id string) (explained, error) {
	b, err := a.get(ctx, "/api/v1/explain?request_id="+url.QueryEscape(id))
	if err != nil {
		return explained{}, err
	}
	var ans struct {
		Request explained `json:"request"`
	}
	if err := json.Unmarshal(b, &ans); err != nil {
		return explained{}, fmt.Errorf("admin GET /api/v1/explain: %w", err)
	}
	return ans.Request, nil
}

// proxySample is the proxy's own view at one moment: the state API and /metrics of every
// replica, added up.
type proxySample struct {
	t               time.Duration
	inflight, limit []int64 // by site, in the order of proxyView.sites
	// backendPeakPct is the highest in-flight of one backend at one replica, in % of its
	// limit there, among backends with a limit; backendPeak names it.
	backendPeakPct float64
	backendPeak    string
	ok, answered   []float64 // spillway_requests_total by site: 2xx, and every code
	spills         map[string]float64
	sheds          map[string]float64
	retries        map[string]float64
	rss, goroutine []float64 // by replica; NaN: not exported
	err            error
}

// spillTotal and shedTotal sum the counters.
func (s *proxySample) spillTotal() float64 { return sumValues(s.spills) }
func (s *proxySample) shedTotal() float64  { return sumValues(s.sheds) }

func sumValues(m map[string]float64) float64 {
	t := 0.0
	for _, v := range m {
		t += v
	}
	return t
}

// proxyView is what the bench knows of the proxy from its admin API: one replica's, or
// every replica's of a fleet.
type proxyView struct {
	admins  []*adminClient // by replica
	sites   []string       // in the state API's order, at the start
	elastic []bool         // by site
	target  []float64      // each site's target share at the start, in %
}

// adminURLs splits -admin's comma-separated list.
func adminURLs(list string) []string {
	var out []string
	for _, u := range strings.Split(list, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// openProxyView reads every replica's state API and /metrics once, before any load: an
// admin API that does not answer stops the run. It fills in ti: the build, config and
// sites of the (first) replica, and each replica's when there are several.
func openProxyView(ctx context.Context, urls []string, token string, client *http.Client, ti *TargetInfo) (*proxyView, error) {
	v := &proxyView{}
	for k, u := range urls {
		a, err := newAdminClient(u, token, client)
		if err != nil {
			return nil, err
		}
		st, err := a.state(ctx)
		if err == nil {
			var m metricSet
			if m, err = a.metrics(ctx); err == nil {
				ri := ReplicaInfo{Admin: u, ConfigHash: st.ConfigHash, Generation: st.Generation, Source: st.Source}
				if ri.ConfigHash == "" { // a Spillway from before config_hash
					ri.ConfigHash = topologyHash(st)
				}
				if !st.LoadedAt.IsZero() {
					ri.LoadedAt = st.LoadedAt.UTC().Format(time.RFC3339)
				}
				ri.BuildInfo, _ = m.Find("spillway_build_info")
				ti.Replicas = append(ti.Replicas, ri)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("the admin API does not answer (run without -admin to use the client's view only): %w", err)
		}
		v.admins = append(v.admins, a)
		if k > 0 {
			if ri := ti.Replicas[k]; ri.ConfigHash != ti.Replicas[0].ConfigHash {
				ti.Note = fmt.Sprintf("the replicas do not show the same sites, weights and backends (%s at %s, %s at %s): their counts are added up all the same",
					ti.Replicas[0].ConfigHash, ti.Replicas[0].Admin, ri.ConfigHash, ri.Admin)
			}
			continue
		}
		for _, s := range st.Sites {
			v.sites = append(v.sites, s.Name)
			v.elastic = append(v.elastic, s.Elastic)
			v.target = append(v.target, 100*s.TargetShare)
			el := ""
			if s.Elastic {
				el = ", elastic"
			}
			ti.Sites = append(ti.Sites, fmt.Sprintf("%s weight %g (%.1f%%)%s, %d backends, limit %d",
				s.Name, s.Weight, 100*s.TargetShare, el, len(s.Backends), s.Limit))
		}
	}
	first := ti.Replicas[0]
	ti.BuildInfo, ti.ConfigHash, ti.Generation, ti.Source, ti.LoadedAt = first.BuildInfo, first.ConfigHash, first.Generation, first.Source, first.LoadedAt
	if len(ti.Replicas) == 1 {
		ti.Replicas = nil // all said above
	}
	return v, nil
}

// explain asks every replica in turn where the request went; the one that served it
// knows.
func (v *proxyView) explain(ctx context.Context, id string) (explained, error) {
	var last error
	for _, a := range v.admins {
		ex, err := a.explain(ctx, id)
		if err == nil {
			return ex, nil
		}
		last = err
	}
	return explained{}, last
}

// spillKey is the key of a spill counter: "from>to reason".
func spillKey(from, to, reason string) string { return from + ">" + to + " " + reason }

// sample reads every replica's state API and /metrics once and adds them up. A failed
// read is kept in err, not returned: a run goes on while an admin API hiccups.
func (v *proxyView) sample(ctx context.Context, t time.Duration) proxySample {
	s := proxySample{t: t, inflight: make([]int64, len(v.sites)), limit: make([]int64, len(v.sites)),
		ok: make([]float64, len(v.sites)), answered: make([]float64, len(v.sites)),
		spills: map[string]float64{}, sheds: map[string]float64{}, retries: map[string]float64{},
		rss: make([]float64, len(v.admins)), goroutine: make([]float64, len(v.admins))}
	for k, a := range v.admins {
		s.rss[k], s.goroutine[k] = math.NaN(), math.NaN()
		if err := v.sampleReplica(ctx, k, a, &s); err != nil {
			s.err = err
			return s
		}
	}
	return s
}

// sampleReplica adds replica k's state and metrics to s.
func (v *proxyView) sampleReplica(ctx context.Context, k int, a *adminClient, s *proxySample) error {
	st, err := a.state(ctx)
	if err != nil {
		return err
	}
	replica := ""
	if len(v.admins) > 1 {
		replica = fmt.Sprintf("replica %d (%s): ", k+1, a.base.Host)
	}
	for _, site := range st.Sites {
		i := slices.Index(v.sites, site.Name)
		if i < 0 {
			continue
		}
		s.inflight[i] += site.Inflight
		s.limit[i] += site.Limit
		for _, b := range site.Backends {
			if b.Limit <= 0 {
				continue
			}
			if pct := 100 * float64(b.Inflight) / float64(b.Limit); pct > s.backendPeakPct || s.backendPeak == "" {
				s.backendPeakPct, s.backendPeak = pct, replica+site.Name+" "+b.Addr
			}
		}
	}
	m, err := a.metrics(ctx)
	if err != nil {
		return err
	}
	for _, ms := range m {
		switch ms.Name {
		case "spillway_requests_total":
			if i := slices.Index(v.sites, ms.Labels["site"]); i >= 0 {
				s.answered[i] += ms.Value
				if c := ms.Labels["code"]; len(c) == 3 && c[0] == '2' {
					s.ok[i] += ms.Value
				}
			}
		case "spillway_spillover_total":
			s.spills[spillKey(ms.Labels["from"], ms.Labels["to"], ms.Labels["reason"])] += ms.Value
		case "spillway_shed_total":
			s.sheds[ms.Labels["reason"]] += ms.Value
		case "spillway_retries_total":
			s.retries[ms.Labels["reason"]] += ms.Value
		case "process_resident_memory_bytes":
			s.rss[k] = ms.Value
		case "go_goroutines":
			s.goroutine[k] = ms.Value
		}
	}
	return nil
}

// TargetInfo is what the report says of the deployment a target run measured.
type TargetInfo struct {
	URL   string `json:"url"`
	Admin string `json:"admin,omitempty"`
	// BuildInfo are the labels of the target's spillway_build_info (version, revision,
	// goversion), when its /metrics has one.
	BuildInfo map[string]string `json:"build_info,omitempty"`
	// ConfigHash is the state API's config_hash, the SHA-256 of the config file the target
	// runs; from a Spillway without one, a SHA-256 of the sites as its state API shows them
	// at the start (name, configured weight, elastic, backends).
	ConfigHash string `json:"config_hash,omitempty"`
	// Generation, Source and LoadedAt are the state API's: which load of which file ran.
	Generation int64    `json:"generation,omitempty"`
	Source     string   `json:"source,omitempty"`
	LoadedAt   string   `json:"loaded_at,omitempty"`
	Sites      []string `json:"sites,omitempty"` // "idc1 weight 5 (50%), 2 backends, limit 30"
	Protocol   string   `json:"protocol"`        // "HTTP/1.1" or "HTTP/2"
	// Replicas are each replica's, when -admin named several (a fleet); the fields above
	// are the first's.
	Replicas []ReplicaInfo `json:"replicas,omitempty"`
	// Note says what is amiss with the target (replicas that differ).
	Note string `json:"note,omitempty"`
}

// ReplicaInfo is one replica of a fleet, as its admin API showed it at the start.
type ReplicaInfo struct {
	Admin      string            `json:"admin"`
	BuildInfo  map[string]string `json:"build_info,omitempty"`
	ConfigHash string            `json:"config_hash"`
	Generation int64             `json:"generation"`
	Source     string            `json:"source,omitempty"`
	LoadedAt   string            `json:"loaded_at,omitempty"`
}

// topologyHash hashes what defines the deployment in st: sites, their configured weights,
// whether elastic, and their backends (sorted). Limits and live state are left out: they
// move by themselves.
func topologyHash(st *runtime.State) string {
	h := sha256.New()
	for _, s := range st.Sites {
		var addrs []string
		for _, b := range s.Backends {
			addrs = append(addrs, b.Addr)
		}
		slices.Sort(addrs)
		fmt.Fprintf(h, "site %q weight %d elastic %t backends %q\n", s.Name, s.ConfiguredWeight, s.Elastic, addrs)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:16]
}
