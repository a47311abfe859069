package configs

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// The checks of the sites section: names and weights, backends, and each site's policies
// (limits, discovery, health checks, TLS to its backends).

func sitePath(i int) string { return fmt.Sprintf("sites[%d]", i) }

func (v *validator) sites() {
	c := v.c
	if len(c.Sites) == 0 {
		v.add("sites", "list at least one site")
		return
	}
	names := map[string]int{}
	total, withMembers := 0, 0
	weightsOK := true // every weight given and in range, so a total of 0 means all are 0
	for i, s := range c.Sites {
		p := sitePath(i)
		switch {
		case s.Name == "":
			v.add(p+".name", "every site needs a name")
		case !siteNameRE.MatchString(s.Name):
			v.add(p+".name", "%s: use lower-case letters, digits, '-' and '_' (at most 63)", Quote(s.Name))
		}
		if first, dup := names[s.Name]; dup && s.Name != "" {
			v.add(p+".name", "%s is already the name of sites[%d]", Quote(s.Name), first)
		} else {
			names[s.Name] = i
		}
		if c.src != nil && !c.Has(p+".weight") {
			v.add(p+".weight", "site %s: weight is required (0 takes no share of the split)", Quote(s.Name))
			weightsOK = false
		}
		if s.Weight < 0 || s.Weight > MaxWeight {
			v.add(p+".weight", "must be between 0 and %d, got %d", MaxWeight, s.Weight)
			weightsOK = false
		} else {
			total += s.Weight
		}
		if len(s.Backends) > 0 || s.Discovery != nil {
			withMembers++
		} else if s.Weight > 0 && s.Weight <= MaxWeight {
			v.add(p, "site %s has weight %d but no backends or discovery; list its backends, or set weight 0", Quote(s.Name), s.Weight)
		}
		v.backends(p, s)
		v.site(p, s)
	}
	if total == 0 && weightsOK {
		v.add("sites", "every site has weight 0: at least one must take traffic")
	}
	if withMembers == 0 {
		v.add("sites", "no site has backends or discovery")
	}
}

func (v *validator) backends(p string, s Site) {
	if len(s.Backends) > 0 && s.Discovery != nil {
		v.add(p+".discovery", "use either backends or discovery, not both")
	}
	seen := map[string]int{}
	for j, raw := range s.Backends {
		bp := fmt.Sprintf("%s.backends[%d]", p, j)
		if msg := checkBackendURL(raw); msg != "" {
			v.add(bp, "%s", msg)
			continue
		}
		key := backendKey(raw)
		if first, dup := seen[key]; dup {
			v.add(bp, "%s is listed twice (first as backends[%d])", Quote(raw), first)
			continue
		}
		seen[key] = j
	}
}

// backendKey is what makes two valid backend URLs the same backend: "http://A:80/" is
// "http://a".
func backendKey(raw string) string {
	u, _ := url.Parse(raw)
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return u.Scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// checkBackendURL says what is wrong with a backend URL, or "".
func checkBackendURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Sprintf("not a URL: %s", Quote(raw))
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf("want http://host:port or https://host:port, got %s", Quote(raw))
	case u.Host == "" || u.Hostname() == "":
		return fmt.Sprintf("no host in %s", Quote(raw))
	case u.User != nil:
		return fmt.Sprintf("credentials in a backend URL are not allowed: %s", Quote(u.Redacted()))
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return fmt.Sprintf("a backend is scheme://host:port only; no path, query or fragment: %s", Quote(raw))
	}
	if port := u.Port(); port != "" && portProblem(port, 1) != "" {
		return fmt.Sprintf("port must be 1-65535 in %s", Quote(raw))
	}
	if msg := hostProblem(u.Hostname(), false); msg != "" {
		return fmt.Sprintf("%s, in %s", msg, Quote(raw))
	}
	return ""
}

// site checks one site's policies: its limits, discovery, health check, TLS to its
// backends and protocol.
func (v *validator) site(p string, s Site) {
	if s.MaxInflight < 0 || s.MaxInflight > MaxInflightLimit {
		v.add(p+".max_inflight", "must be between 0 and %d (0 or omitted: adaptive), got %d", MaxInflightLimit, s.MaxInflight)
	}
	if a := s.Adaptive; a != nil {
		switch {
		case s.MaxInflight > 0:
			v.add(p+".adaptive", "a site with max_inflight has a fixed limit; adaptive applies only without it")
		case a.Floor < 1 || a.Floor > MaxInflightLimit:
			v.add(p+".adaptive.floor", "must be between 1 and %d, got %d", MaxInflightLimit, a.Floor)
		case a.Cap < a.Floor || a.Cap > MaxInflightLimit:
			v.add(p+".adaptive.cap", "must be between floor (%d) and %d, got %d", a.Floor, MaxInflightLimit, a.Cap)
		case a.Initial < a.Floor || a.Initial > a.Cap:
			v.add(p+".adaptive.initial", "must be between floor (%d) and cap (%d), got %d", a.Floor, a.Cap, a.Initial)
		}
	}
	if s.SlowStart < 0 {
		v.add(p+".slow_start", "must be >= 0, got %s", s.SlowStart)
	} else if s.SlowStart > MaxSlowStart {
		v.add(p+".slow_start", "must be at most %s, got %s", MaxSlowStart, s.SlowStart)
	}
	if d := s.Discovery; d != nil {
		v.discovery(p, d)
	}
	if h := s.Health; h != nil {
		v.health(p, h)
	}
	if t := s.TLS; t != nil {
		v.siteTLS(p, s, t)
	}
	if s.Protocol != "http1" && s.Protocol != "h2" {
		v.add(p+".protocol", "want http1 or h2, got %s", Quote(s.Protocol))
	}
}

// discovery checks a site's discovery section.
func (v *validator) discovery(p string, d *Discovery) {
	if (d.DNS == "") == (d.File == "") {
		v.add(p+".discovery", "set exactly one of dns or file")
	}
	if d.DNS != "" && strings.HasPrefix(d.DNS, "_") {
		if msg := hostProblem(d.DNS, true); msg != "" {
			v.add(p+".discovery.dns", "want an SRV name like _app._tcp.example: %s", msg)
		}
	} else if d.DNS != "" {
		if _, _, err := net.SplitHostPort(d.DNS); err != nil {
			v.add(p+".discovery.dns", "want host:port for A/AAAA, or an SRV name like _app._tcp.example; got %s", Quote(d.DNS))
		} else if msg := hostPortProblem(d.DNS, 1, false); msg != "" {
			v.add(p+".discovery.dns", "%s", msg)
		}
	}
	v.positive(p+".discovery.interval", d.Interval, MaxDiscoveryInterval)
	if d.Resolver != "" {
		if host, port, err := net.SplitHostPort(d.Resolver); err != nil || net.ParseIP(host) == nil || portProblem(port, 1) != "" {
			v.add(p+".discovery.resolver", "want ip:port of a DNS server, e.g. 10.0.0.2:53; got %s", Quote(d.Resolver))
		} else if d.DNS == "" {
			v.add(p+".discovery.resolver", "applies to dns discovery only")
		}
	}
}

// health checks a site's active health check.
func (v *validator) health(p string, h *Health) {
	switch h.Kind {
	case "http":
		if !strings.HasPrefix(h.Path, "/") {
			v.add(p+".health.path", "must start with /, got %s", Quote(h.Path))
		}
		if len(h.Expect) != 2 || h.Expect[0] < 100 || h.Expect[1] > 599 || h.Expect[0] > h.Expect[1] {
			v.add(p+".health.expect", "want [low, high] with 100 <= low <= high <= 599, got %s", cut(fmt.Sprint(h.Expect)))
		}
	case "tcp":
		if h.Path != "" || h.Host != "" || v.c.Has(p+".health.expect") {
			v.add(p+".health.kind", "a tcp probe only connects: path, host and expect do not apply")
		}
	default:
		v.add(p+".health.kind", "want http or tcp, got %s", Quote(h.Kind))
	}
	if h.Initial != "up" && h.Initial != "down" {
		v.add(p+".health.initial", "want up or down, got %s", Quote(h.Initial))
	}
	v.positive(p+".health.interval", h.Interval, MaxHealthInterval)
	v.positive(p+".health.timeout", h.Timeout, MaxHealthInterval)
	if h.Timeout > h.Interval && h.Interval > 0 {
		v.add(p+".health.timeout", "%s is longer than the interval %s", h.Timeout, h.Interval)
	}
	v.between(p+".health.rise", h.Rise, 1, MaxHealthCount)
	v.between(p+".health.fall", h.Fall, 1, MaxHealthCount)
}

// siteTLS checks the TLS settings a site uses to connect to its backends.
func (v *validator) siteTLS(p string, s Site, t *BackendTLS) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		v.add(p+".tls", "cert_file and key_file go together")
	}
	https := s.Discovery != nil
	for _, b := range s.Backends {
		https = https || strings.HasPrefix(strings.ToLower(b), "https://")
	}
	if !https {
		v.add(p+".tls", "site %s has no https:// backend for these settings to apply to", Quote(s.Name))
	}
	if t.ServerName != "" {
		if msg := hostProblem(t.ServerName, false); msg != "" {
			v.add(p+".tls.server_name", "%s", msg)
		}
	}
	if t.InsecureSkipVerify && (t.CAFile != "" || t.ServerName != "") {
		v.add(p+".tls.insecure_skip_verify", "verifies nothing, so ca_file and server_name would be ignored; remove one or the other")
	}
}
