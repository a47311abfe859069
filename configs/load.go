package configs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Check is a further test of a decoded, defaulted config, such as whether this build of
// the proxy has every feature it asks for. Load and Parse run checks after Validate and
// report their problems in the same list, so that a file's problems all come at once. A
// Check that finds problems in the file should return Errors made with Config.Errorf.
type Check func(*Config) error

// Load reads, strictly decodes, defaults and validates the config file at path, then runs
// checks. On any problem it returns an Errors listing every one, each with
// file:line:column; the caller's running config, if any, is untouched.
func Load(path string, checks ...Check) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, checks...)
}

// Parse is Load for a file already in memory; name is used in error positions, and
// relative file paths in the config are made absolute against name's directory.
func Parse(name string, data []byte, checks ...Check) (*Config, error) {
	cfg, decodeErrs := decode(name, data)
	if cfg == nil {
		return nil, decodeErrs // not YAML, empty, or several documents: nothing to validate
	}
	cfg.SetDefaults()
	cfg.resolvePaths(filepath.Dir(name))
	cfg.resolveClusterPaths(filepath.Dir(name))
	errs := decodeErrs
	for _, check := range append([]Check{(*Config).Validate}, checks...) {
		err := check(cfg)
		if err == nil {
			continue
		}
		var found Errors
		if !errors.As(err, &found) {
			found = Errors{{File: name, Msg: err.Error()}}
		}
		// Report every problem at once, also when the file has unknown keys or values of
		// the wrong type; but drop what follows from those (a misspelt "wieght" would also
		// read as a missing weight).
		for _, e := range found {
			if !decodeErrs.cause(e.Path) {
				errs = append(errs, e)
			}
		}
	}
	if len(errs) > 0 {
		errs.Sort()
		return nil, errs
	}
	return cfg, nil
}

// cause reports whether a validation problem at path may be a consequence of one of the
// decoding problems es: it is at the key that problem left unset, inside it, or encloses it.
func (es Errors) cause(path string) bool {
	for _, e := range es {
		if within(path, e.unset) || within(e.unset, path) {
			return true
		}
	}
	return false
}

// within reports whether key path p is q or inside it ("sites[1].weight" is within
// "sites[1]", "sites" and "").
func within(p, q string) bool {
	return q == "" || p == q ||
		strings.HasPrefix(p, q) && (p[len(q)] == '.' || p[len(q)] == '[')
}

// decode parses data into a Config, refusing unknown and duplicate keys and values of the
// wrong type. It reports every such problem, not only the first.
func decode(name string, data []byte) (*Config, Errors) {
	cfg := &Config{src: &source{file: name, nodes: map[string]*yaml.Node{}}}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Errors{{File: name, Line: 1, Column: 1, Msg: "config is empty"}}
		}
		return nil, Errors{syntaxError(name, data, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := extra.Line
		if err != nil {
			return nil, Errors{syntaxError(name, data, err)}
		}
		return nil, Errors{{File: name, Line: line, Column: 1, Msg: "more than one YAML document; a config is exactly one"}}
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		// "---" or "~" alone: as empty as no text at all.
		return nil, Errors{{File: name, Line: 1, Column: 1, Msg: "config is empty"}}
	}
	root := doc.Content[0]
	cfg.src.nodes[""] = root
	d := decoder{src: cfg.src}
	d.value(root, reflect.ValueOf(cfg).Elem(), "")
	d.errs.Sort()
	return cfg, d.errs
}

// syntaxError turns a yaml.v3 parse error ("yaml: line 7: did not find expected key") into
// a positioned Error.
func syntaxError(name string, data []byte, err error) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
		if parserProblems[msg] {
			// yaml.v3 prints the 0-based line of a parser (not scanner) error: "line 1"
			// for a block that starts on line 2.
			line++
		}
	} else if readerProblems[msg] {
		// Reader errors (bad bytes) carry no position at all.
		line = badCharLine(data)
	} else {
		// yaml.v3 leaves the line out of parser and scanner errors on the first line.
		line = 1
	}
	return &Error{File: name, Line: line, Msg: "invalid YAML: " + msg}
}

// parserProblems are the messages of yaml.v3's parser errors (parserc.go); its scanner
// errors already carry a 1-based line.
var parserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"found undefined tag handle":             true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected key":              true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
}

// readerProblems are the messages of yaml.v3's reader errors (readerc.go) for UTF-8 input.
var readerProblems = map[string]bool{
	"control characters are not allowed": true,
	"invalid leading UTF-8 octet":        true,
	"invalid trailing UTF-8 octet":       true,
	"invalid length of a UTF-8 sequence": true,
	"incomplete UTF-8 octet sequence":    true,
	"invalid Unicode character":          true,
}

// badCharLine is the line of the first byte of data that YAML does not allow (invalid
// UTF-8, or a control character), or 0.
func badCharLine(data []byte) int {
	line := 1
	for len(data) > 0 {
		r, size := utf8.DecodeRune(data)
		switch {
		case r == utf8.RuneError && size == 1:
			return line
		case r == '\n':
			line++
		case r == '\t' || r == '\r' || r == 0x85 || r == 0xFEFF:
		case r < 0x20 || r > 0x7E && r < 0xA0 || r >= 0xD800 && r < 0xE000 || r == 0xFFFE || r == 0xFFFF:
			return line
		}
		data = data[size:]
	}
	return 0
}

type decoder struct {
	src    *source
	errs   Errors
	values int // decoded so far, aliases counted each time they are used
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.src.file, Line: n.Line, Column: n.Column, Path: path, Msg: fmt.Sprintf(format, args...), unset: path})
}

// maxValues bounds how many values a config may hold once its aliases are expanded. A few
// kilobytes of nested aliases can otherwise stand for billions of values ("billion laughs").
const maxValues = 100_000

// value decodes n into v, recording n's position under path.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	if d.values++; d.values > maxValues {
		if d.values == maxValues+1 {
			d.errorf(n, path, "more than %d values once aliases are expanded; write the config out", maxValues)
		}
		return
	}
	at := n // an alias is placed where it is used, not at its anchor
	if path != "" {
		d.src.nodes[path] = at
	}
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if isNull(n) {
		return // "key:" with no value keeps the zero value, and so the default
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.Type().Elem().Kind() == reflect.Struct {
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			d.value(n, v.Elem(), path)
			return
		}
	case reflect.Struct:
		d.mapping(n, v, path)
		return
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(at, path, "want a list, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.value(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
		return
	}
	if n.Kind != yaml.ScalarNode {
		d.errorf(at, path, "want a single value (%s), got %s", typeName(v.Type()), kindName(n))
		return
	}
	if v.Kind() == reflect.Int && n.ShortTag() != "!!int" {
		// yaml.v3 would truncate "weight: 2.5" to 2 without a word.
		d.errorf(at, path, "want %s, got %s", typeName(v.Type()), Quote(n.Value))
		return
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		d.errorf(at, path, "want %s, got %s", typeName(v.Type()), Quote(n.Value))
	}
}

// mapping decodes a YAML mapping into struct v by its yaml tags; unknown and repeated keys
// are errors.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "want a mapping of keys, got %s", kindName(n))
		return
	}
	fields := map[string]int{}
	t := v.Type()
	for i := range t.NumField() {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag != "" && tag != "-" {
			fields[tag] = i
		}
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		kp := k.Value
		if path != "" {
			kp = path + "." + k.Value
		}
		if first, dup := seen[k.Value]; dup {
			d.errorf(k, kp, "key repeated (first at line %d)", first.Line)
			continue
		}
		seen[k.Value] = k
		idx, ok := fields[k.Value]
		if !ok {
			// The key it was meant to be is now unset: the suggested one, or any in
			// this mapping.
			meant := closest(k.Value, fields)
			hint := fmt.Sprintf(" (did you mean %q?)", meant)
			unset := path
			if meant == "" {
				hint = " (known keys: " + strings.Join(slices.Sorted(maps.Keys(fields)), ", ") + ")"
			} else if path != "" {
				unset = path + "." + meant
			} else {
				unset = meant
			}
			d.errorf(k, kp, "unknown key %s%s", Quote(k.Value), hint)
			d.errs[len(d.errs)-1].unset = unset
			continue
		}
		d.value(val, v.Field(idx), kp)
	}
}

// closest is the known key nearest to an unknown one, for typos like "wieght"; "" when
// none is near.
func closest(key string, fields map[string]int) string {
	best, bestDist := "", 3
	for f := range fields {
		if dist := editDistance(key, f); dist < bestDist || (dist == bestDist && f < best) {
			best, bestDist = f, dist
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// isNull reports whether n is an empty value ("key:", "~", "null").
func isNull(n *yaml.Node) bool {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return Quote(n.Value)
	}
}

func typeName(t reflect.Type) string {
	switch t.String() {
	case "time.Duration":
		return "a duration like 2s or 500ms"
	case "int":
		return "a whole number"
	case "float64":
		return "a number"
	case "bool":
		return "true or false"
	case "string":
		return "a string"
	}
	return t.String()
}
