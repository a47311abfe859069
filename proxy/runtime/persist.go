package runtime

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"gopkg.in/yaml.v3"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy/store"
)

// persistWeight prepares writing weight as the weight of site into the config file at path,
// changing nothing else: the value's bytes are replaced where they stand, so the operator's
// comments, blank lines, quoting and layout stay as they were. The result must load as a
// valid config, or an error says why and nothing is written. The returned write replaces
// the file atomically (a temporary file in the same directory, renamed over the old one,
// with its mode); the caller calls it once the change is stored, so that a change the store
// refuses leaves the file as it was. A symlinked file is written where the link points.
func persistWeight(path, site string, weight int, loaded [sha256.Size]byte, checks ...configs.Check) (write func() error, err error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(real)
	if err != nil {
		return nil, err
	}
	// Only the file the running config came from: an edit not loaded yet is the operator's
	// to apply (by a reload), not this change's to carry along or to overwrite.
	if sha256.Sum256(data) != loaded {
		return nil, fmt.Errorf("%w: %s changed since it was loaded; reload it (or undo the edit) first", ErrInvalid, path)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, path, err)
	}
	node := weightNode(&doc, site)
	if node == nil {
		return nil, fmt.Errorf("%w: %s: no weight for site %q in the file", ErrInvalid, path, site)
	}
	out, err := replaceScalar(data, node, strconv.Itoa(weight))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, path, err)
	}
	// The file is then loaded by a reload: it must pass every check a reload makes, or the
	// change would be written but not applied (say, the file already holds an edit that
	// waits for a restart).
	if _, err := configs.Parse(path, out, checks...); err != nil {
		return nil, fmt.Errorf("%w: the file with this change would be refused (fix or revert its other changes first): %v", ErrInvalid, err)
	}
	return func() error { return replaceFile(real, path, out, loaded) }, nil
}

// replaceFile writes out over real (the config file at path, links followed), atomically,
// unless the file no longer has the content loaded.
func replaceFile(real, path string, out []byte, loaded [sha256.Size]byte) error {
	return store.WriteAtomic(real, out, func() error {
		// The same test just before the rename narrows the window in which an operator's
		// save could be overwritten to the rename itself.
		if now, err := os.ReadFile(real); err != nil || sha256.Sum256(now) != loaded {
			return fmt.Errorf("%w: %s changed while the weight was being written; nothing was changed", ErrInvalid, path)
		}
		return nil
	})
}

// weightNode finds the value node of sites[i].weight for the site called name.
func weightNode(doc *yaml.Node, name string) *yaml.Node {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	sites := mapValue(doc.Content[0], "sites")
	if sites == nil || sites.Kind != yaml.SequenceNode {
		return nil
	}
	for _, s := range sites.Content {
		if n := mapValue(s, "name"); n != nil && n.Value == name {
			return mapValue(s, "weight")
		}
	}
	return nil
}

// mapValue is the value of key in mapping m (following an alias), or nil.
func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m.Kind == yaml.AliasNode {
		m = m.Alias
	}
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// replaceScalar replaces the plain scalar node's text in data with value.
func replaceScalar(data []byte, node *yaml.Node, value string) ([]byte, error) {
	if node.Kind != yaml.ScalarNode || node.Style != 0 {
		return nil, errors.New("the weight is not a plain number where it stands; change it by hand")
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	if node.Line < 1 || node.Line > len(lines) {
		return nil, errors.New("the weight's position is outside the file")
	}
	line := lines[node.Line-1]
	start := node.Column - 1
	end := start + len(node.Value)
	if start < 0 || end > len(line) || string(line[start:end]) != node.Value {
		return nil, errors.New("the weight is not where the parser says it is; change it by hand")
	}
	var out bytes.Buffer
	for i, l := range lines {
		if i == node.Line-1 {
			out.Write(l[:start])
			out.WriteString(value)
			out.Write(l[end:])
			continue
		}
		out.Write(l)
	}
	return out.Bytes(), nil
}
