package configs_test

import (
	"strings"
	"testing"

	"github.com/spillway/spillway/configs"
)

// Diff names every changed key by its path, sites by name, backends one by one; an
// unchanged config has none.
func TestDiff(t *testing.T) {
	const base = `listen: {http: ":8080"}
sites:
  - {name: idc1, weight: 5, backends: ["http://10.0.1.10:8080", "http://10.0.1.11:8080"], max_inflight: 64}
  - {name: idc2, weight: 3, backends: ["http://10.0.2.10:8080"]}
  - {name: aws, weight: 2, elastic: true, backends: ["http://10.1.0.10:8080"]}
`
	parse := func(yaml string) *configs.Config {
		t.Helper()
		c, err := configs.Parse("test.yaml", []byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	old := parse(base)
	for _, tc := range []struct {
		name, edit string
		want       []string
	}{
		{"nothing", base, nil},
		{"only a comment and layout", strings.Replace(base, "sites:", "# the sites\nsites:  ", 1), nil},
		{"weights", strings.Replace(strings.Replace(base, "weight: 5", "weight: 6", 1), "weight: 3", "weight: 0", 1),
			[]string{"sites.idc1.weight 5 → 6", "sites.idc2.weight 3 → 0"}},
		{"a backend swapped", strings.Replace(base, "10.0.1.11", "10.0.1.12", 1),
			[]string{`sites.idc1.backends http://10.0.1.11:8080 → `, `sites.idc1.backends  → http://10.0.1.12:8080`}},
		{"a site removed and one added", strings.Replace(base, `  - {name: idc2, weight: 3, backends: ["http://10.0.2.10:8080"]}`,
			`  - {name: idc3, weight: 1, backends: ["http://10.0.3.10:8080", "http://10.0.3.11:8080"]}`, 1),
			[]string{"sites.idc3  → added (weight 1, 2 backends)", "sites.idc2 weight 3, 1 backend → removed"}},
		{"limits, timeouts and a new section", base + "spillover: {queue: {size: 10, timeout: 1s}}\nstate: {file: /var/lib/spillway/state.json}\n",
			[]string{"spillover.queue.size 1000 → 10", "spillover.queue.timeout 2s → 1s", "state (none) → (set)"}},
		{"a site's limit and a health check", strings.Replace(base, "max_inflight: 64}", "max_inflight: 32, health: {path: /healthz}}", 1),
			[]string{"sites.idc1.max_inflight 64 → 32", "sites.idc1.health (none) → (set)"}},
		{"a string", base + "headers: {via: edge}\n", []string{`headers.via "spillway" → "edge"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, d := range configs.Diff(old, parse(tc.edit)) {
				got = append(got, d.Path+" "+d.Before+" → "+d.After)
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("Diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}
