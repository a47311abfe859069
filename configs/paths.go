package configs

import (
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// resolvePaths makes every relative file path in c relative to dir, the directory of the
// config file, and absolute: a config means the same files whatever directory the proxy
// (or validate) was started in, and everything downstream sees one path. Paths already
// absolute, and the access log's "stdout" and "stderr", are left alone.
func (c *Config) resolvePaths(dir string) {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	resolve := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	resolve(&c.Admin.TokenFile)
	if t := c.TLS; t != nil {
		resolve(&t.CertFile)
		resolve(&t.KeyFile)
		if a := t.ACME; a != nil {
			resolve(&a.CARoot)
			resolve(&a.Storage)
		}
	}
	for i := range c.Sites {
		s := &c.Sites[i]
		if t := s.TLS; t != nil {
			resolve(&t.CAFile)
			resolve(&t.CertFile)
			resolve(&t.KeyFile)
		}
		if d := s.Discovery; d != nil {
			resolve(&d.File)
		}
	}
	if st := c.State; st != nil {
		resolve(&st.File)
	}
	if a := c.AccessLog; a != nil && a.Output != "stdout" && a.Output != "stderr" && !strings.Contains(a.Output, "://") {
		resolve(&a.Output)
	}
}

// Written is the value the file wrote at path, before defaults and path resolution (a
// relative file name as the user wrote it); "" when the file did not set it.
func (c *Config) Written(path string) string {
	if !c.Has(path) {
		return ""
	}
	n := c.src.nodes[path]
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n.Value
}
