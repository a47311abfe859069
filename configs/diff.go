package configs

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Difference is one key whose value differs between two configs, by its path in the file
// with sites named rather than numbered ("sites.idc1.weight"). A site or a backend added has
// an empty Before; one removed, an empty After.
type Difference struct {
	Path   string `json:"path"`
	Before string `json:"before,omitempty"`
	After  string `json:"after,omitempty"`
}

// Diff lists what differs from old to next, every key by its path: sites by name (added,
// removed, or each changed key), backends one by one, any other key at its own path. The
// order is the file's, sites in next's order with removed ones last.
func Diff(old, next *Config) []Difference {
	var d differ
	d.value("", reflect.ValueOf(*old), reflect.ValueOf(*next))
	return d.out
}

type differ struct{ out []Difference }

func (d *differ) add(path, before, after string) {
	d.out = append(d.out, Difference{Path: path, Before: before, After: after})
}

func (d *differ) value(path string, a, b reflect.Value) {
	if a.Type() == reflect.TypeFor[[]Site]() {
		d.sites(path, a.Interface().([]Site), b.Interface().([]Site))
		return
	}
	switch a.Kind() {
	case reflect.Struct:
		t := a.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "" || name == "-" {
				continue
			}
			d.value(join(path, name), a.Field(i), b.Field(i))
		}
	case reflect.Pointer:
		switch {
		case a.IsNil() && b.IsNil():
		case a.IsNil() || b.IsNil():
			if reflect.DeepEqual(a.Interface(), b.Interface()) {
				return
			}
			d.add(path, show(a), show(b))
		default:
			d.value(path, a.Elem(), b.Elem())
		}
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			d.add(path, show(a), show(b))
		}
	}
}

// sites compares the site lists by name.
func (d *differ) sites(path string, old, next []Site) {
	for _, s := range next {
		p := join(path, s.Name)
		i := slices.IndexFunc(old, func(o Site) bool { return o.Name == s.Name })
		if i < 0 {
			d.add(p, "", fmt.Sprintf("added (weight %d, %s)", s.Weight, backends(len(s.Backends))))
			continue
		}
		o := old[i]
		d.set(join(p, "backends"), o.Backends, s.Backends)
		o.Backends, s.Backends = nil, nil
		d.value(p, reflect.ValueOf(o), reflect.ValueOf(s))
	}
	for _, o := range old {
		if !slices.ContainsFunc(next, func(s Site) bool { return s.Name == o.Name }) {
			d.add(join(path, o.Name), fmt.Sprintf("weight %d, %s", o.Weight, backends(len(o.Backends))), "removed")
		}
	}
}

// set lists the members removed from old and added in next, one by one.
func (d *differ) set(path string, old, next []string) {
	for _, v := range old {
		if !slices.Contains(next, v) {
			d.add(path, v, "")
		}
	}
	for _, v := range next {
		if !slices.Contains(old, v) {
			d.add(path, "", v)
		}
	}
}

func backends(n int) string {
	if n == 1 {
		return "1 backend"
	}
	return fmt.Sprintf("%d backends", n)
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// show formats a value of a config for the audit trail: scalars as the file would write
// them, a section that is absent as "(none)".
func show(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "(none)"
		}
		v = v.Elem()
	}
	switch x := v.Interface().(type) {
	case time.Duration:
		return x.String()
	case string:
		return Quote(x)
	}
	if v.Kind() == reflect.Struct {
		return "(set)"
	}
	return fmt.Sprint(v.Interface())
}
