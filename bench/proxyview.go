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

	"github.com/spillway/spillway/proxy"
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

func (a *adminClient) state(ctx context.Context) (*proxy.State, error) {
	b, err := a.get(ctx, "/api/v1/state")
	if err != nil {
		return nil, err
	}
	var st proxy.State
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

// proxySample is the proxy's own view at one moment: the state API and /metrics.
type proxySample struct {
	t               time.Duration
	inflight, limit []int64 // by site, in the order of proxyView.sites
	// backendPeakPct is the highest in-flight of one backend, in % of its limit, among
	// backends with a limit; backendPeak names it.
	backendPeakPct float64
	backendPeak    string
	ok, answered   []float64 // spillway_requests_total by site: 2xx, and every code
	spills         map[string]float64
	sheds          map[string]float64
	retries        map[string]float64
	rss, goroutine float64 // NaN: not exported
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

// proxyView is what the bench knows of the proxy from its admin API.
type proxyView struct {
	admin   *adminClient
	sites   []string  // in the state API's order, at the start
	elastic []bool    // by site
	target  []float64 // each site's target share at the start, in %
}

// spillKey is the key of a spill counter: "from>to reason".
func spillKey(from, to, reason string) string { return from + ">" + to + " " + reason }

// sample reads the state API and /metrics once. A failed read is kept in err, not
// returned: a run goes on while the admin API hiccups.
func (v *proxyView) sample(ctx context.Context, t time.Duration) proxySample {
	s := proxySample{t: t, rss: math.NaN(), goroutine: math.NaN(),
		inflight: make([]int64, len(v.sites)), limit: make([]int64, len(v.sites)),
		ok: make([]float64, len(v.sites)), answered: make([]float64, len(v.sites))}
	st, err := v.admin.state(ctx)
	if err != nil {
		s.err = err
		return s
	}
	for _, site := range st.Sites {
		i := slices.Index(v.sites, site.Name)
		if i < 0 {
			continue
		}
		s.inflight[i], s.limit[i] = site.Inflight, site.Limit
		for _, b := range site.Backends {
			if b.Limit <= 0 {
				continue
			}
			if pct := 100 * float64(b.Inflight) / float64(b.Limit); pct > s.backendPeakPct || s.backendPeak == "" {
				s.backendPeakPct, s.backendPeak = pct, site.Name+" "+b.Addr
			}
		}
	}
	m, err := v.admin.metrics(ctx)
	if err != nil {
		s.err = err
		return s
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
			if s.spills == nil {
				s.spills = map[string]float64{}
			}
			s.spills[spillKey(ms.Labels["from"], ms.Labels["to"], ms.Labels["reason"])] += ms.Value
		case "spillway_shed_total":
			if s.sheds == nil {
				s.sheds = map[string]float64{}
			}
			s.sheds[ms.Labels["reason"]] += ms.Value
		case "spillway_retries_total":
			if s.retries == nil {
				s.retries = map[string]float64{}
			}
			s.retries[ms.Labels["reason"]] += ms.Value
		case "process_resident_memory_bytes":
			s.rss = ms.Value
		case "go_goroutines":
			s.goroutine = ms.Value
		}
	}
	return s
}

// TargetInfo is what the report says of the deployment a target run measured.
type TargetInfo struct {
	URL   string `json:"url"`
	Admin string `json:"admin,omitempty"`
	// BuildInfo are the labels of the target's spillway_build_info (version, revision,
	// goversion), when its /metrics has one.
	BuildInfo map[string]string `json:"build_info,omitempty"`
	// ConfigHash is a SHA-256 of the sites as the state API shows them at the start (name,
	// configured weight, elastic, backends): two runs with the same hash met the same
	// topology. The state API exposes no hash of the config file itself.
	ConfigHash string `json:"config_hash,omitempty"`
	// Generation, Source and LoadedAt are the state API's: which load of which file ran.
	Generation int64    `json:"generation,omitempty"`
	Source     string   `json:"source,omitempty"`
	LoadedAt   string   `json:"loaded_at,omitempty"`
	Sites      []string `json:"sites,omitempty"` // "idc1 weight 5 (50%), 2 backends, limit 30"
	Protocol   string   `json:"protocol"`        // "HTTP/1.1" or "HTTP/2"
}

// topologyHash hashes what defines the deployment in st: sites, their configured weights,
// whether elastic, and their backends (sorted). Limits and live state are left out: they
// move by themselves.
func topologyHash(st *proxy.State) string {
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
