package configs

import (
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is one problem in a config, at a place in its file.
type Error struct {
	File         string
	Line, Column int    // 1-based; 0 when unknown (a Config built in code)
	Path         string // key path, e.g. "sites[1].weight"; empty for the whole file
	Msg          string

	// unset is, for a problem found while decoding, the key path it left without its
	// value (for an unknown key, the key it was probably meant to be); Parse leaves out
	// validation problems that follow from it.
	unset string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteByte(':')
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, "%d:", e.Column)
		}
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	if e.Path != "" {
		b.WriteString(cut(e.Path)) // an unknown key is in its path
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func (e *Error) before(o *Error) bool {
	if e.Line != o.Line {
		return e.Line < o.Line
	}
	return e.Column < o.Column
}

// Errors is every problem found in one config, in file order; its Error is one per line.
type Errors []*Error

// Sort puts es in file order (line, then column), keeping the order of problems at one place.
func (es Errors) Sort() {
	sort.SliceStable(es, func(i, j int) bool { return es[i].before(es[j]) })
}

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// source remembers where each key path stands in the file a Config came from.
type source struct {
	file  string
	nodes map[string]*yaml.Node // key path → value node
}

// Has reports whether the file set the key at path (e.g. "sites[0].health") to a value. A
// key written with no value ("connect:", "~") is not set: it takes its default like a key
// left out. A Config built in code has no file and Has reports false.
func (c *Config) Has(path string) bool {
	if c.src == nil {
		return false
	}
	n, ok := c.src.nodes[path]
	return ok && !isNull(n)
}

// Errorf returns an Error placed at path in c's file: at the key's value when the file wrote
// the key (even with no value), else at the nearest enclosing key that it did write.
func (c *Config) Errorf(path, format string, args ...any) *Error {
	e := &Error{Path: path, Msg: fmt.Sprintf(format, args...)}
	if c.src == nil {
		return e
	}
	e.File = c.src.file
	for p := path; ; p = parentPath(p) {
		if n, ok := c.src.nodes[p]; ok {
			e.Line, e.Column = n.Line, n.Column
			return e
		}
		if p == "" {
			return e
		}
	}
}

// parentPath strips the last element of a key path: "sites[1].weight" → "sites[1]" →
// "sites" → "".
func parentPath(p string) string {
	if i := strings.LastIndexAny(p, ".["); i >= 0 {
		return p[:i]
	}
	return ""
}
