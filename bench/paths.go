package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// PathEntry is one line of a -paths file: a request the target mode sends in turn.
type PathEntry struct {
	Method string
	// URL is absolute: a path of the file ("/api/x") is resolved against the target.
	URL string
	// Body is sent with the request; nil: none.
	Body []byte
	// Line is where the entry was read, "file:line".
	Line string
}

// Limits of a -paths file: it is read whole before the run, so that a mistake is found
// before any load is sent.
const (
	maxPathsLine    = 8 << 10  // bytes in one line
	maxPathsEntries = 100_000  // requests listed
	maxBodyFile     = 16 << 20 // bytes of one body file
	maxBodyTotal    = 64 << 20 // bytes of all distinct body files
)

// ReadPaths reads a -paths file: one request a line, "METHOD URL [BODYFILE]", fields
// separated by spaces or tabs; blank lines and lines starting with '#' are skipped. URL is
// a path starting with "/" (resolved against target) or an absolute http or https URL.
// BODYFILE is read relative to the paths file's directory. Every problem is reported at
// once, each as "file:line: what".
func ReadPaths(path, target string) ([]PathEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("paths file: %w", err)
	}
	defer f.Close()
	return parsePaths(f, path, target)
}

func parsePaths(r io.Reader, path, target string) ([]PathEntry, error) {
	base, err := url.Parse(target)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("target %q: want http://host:port or https://host:port", target)
	}
	pp := &pathsParser{path: path, base: base, bodies: map[string][]byte{}}
	var out []PathEntry
	var errs []error
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1024), maxPathsLine)
	n := 0
	for sc.Scan() {
		n++
		at := fmt.Sprintf("%s:%d", path, n)
		e, ok, err := pp.parseLine(sc.Text(), at)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s", at, err))
			continue
		}
		if !ok {
			continue
		}
		if len(out) == maxPathsEntries {
			errs = append(errs, fmt.Errorf("%s: more than %d requests", at, maxPathsEntries))
			break
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("line longer than %d bytes", maxPathsLine)
		}
		errs = append(errs, fmt.Errorf("%s:%d: %w", path, n+1, err))
	}
	if len(out) == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("%s: no request listed", path))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// pathsParser reads the lines of one -paths file.
type pathsParser struct {
	path      string // the file's, for its body files' directory
	base      *url.URL
	bodies    map[string][]byte // each body file is read once
	bodyBytes int               // of all distinct body files
}

// parseLine parses one line, read at at; ok is false for a blank line or a comment. The
// error says what is wrong, without where.
func (pp *pathsParser) parseLine(raw, at string) (e PathEntry, ok bool, err error) {
	line := strings.TrimSpace(strings.TrimSuffix(raw, "\r"))
	if line == "" || line[0] == '#' {
		return e, false, nil
	}
	if !utf8.ValidString(line) {
		return e, false, errors.New("not valid UTF-8")
	}
	if i := strings.IndexFunc(line, func(c rune) bool { return c < 0x20 && c != '\t' || c == 0x7f }); i >= 0 {
		return e, false, fmt.Errorf("control character %q at column %d", line[i], i+1)
	}
	fields := strings.Fields(line)
	if len(fields) < 2 || len(fields) > 3 {
		return e, false, fmt.Errorf("want METHOD URL [BODYFILE], got %d field(s)", len(fields))
	}
	method, rawURL := fields[0], fields[1]
	if !validMethod(method) {
		return e, false, fmt.Errorf("method %.40q: want an upper-case token such as GET or POST", method)
	}
	u, err := resolvePath(pp.base, rawURL)
	if err != nil {
		return e, false, err
	}
	e = PathEntry{Method: method, URL: u, Line: at}
	if len(fields) == 3 {
		if e.Body, err = pp.body(fields[2]); err != nil {
			return PathEntry{}, false, err
		}
	}
	return e, true, nil
}

// body is the content of body file name, relative to the paths file's directory; each
// file is read once, and all of them together are bounded.
func (pp *pathsParser) body(name string) ([]byte, error) {
	if !filepath.IsAbs(name) {
		name = filepath.Join(filepath.Dir(pp.path), name)
	}
	if b, ok := pp.bodies[name]; ok {
		return b, nil
	}
	b, err := readBodyFile(name)
	if err != nil {
		return nil, fmt.Errorf("body file: %v", err)
	}
	if pp.bodyBytes += len(b); pp.bodyBytes > maxBodyTotal {
		return nil, fmt.Errorf("body files total more than %d MiB", maxBodyTotal>>20)
	}
	pp.bodies[name] = b
	return b, nil
}

// validMethod is an HTTP method as a load tester writes one: an upper-case token.
func validMethod(m string) bool {
	if m == "" || len(m) > 20 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; !('A' <= c && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// resolvePath makes a path of a -paths file absolute against base, or checks an absolute
// URL.
func resolvePath(base *url.URL, raw string) (string, error) {
	if strings.HasPrefix(raw, "/") && !strings.HasPrefix(raw, "//") {
		ref, err := url.Parse(raw)
		if err != nil {
			return "", fmt.Errorf("path %.60q: %v", raw, err)
		}
		return base.ResolveReference(ref).String(), nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("url %.60q: %v", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("url %.60q: want a path starting with / or an http(s)://host URL", raw)
	}
	if u.User != nil {
		return "", fmt.Errorf("url %.60q: credentials in a URL are not sent; use -header", raw)
	}
	return u.String(), nil
}

func readBodyFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxBodyFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxBodyFile {
		return nil, fmt.Errorf("%s: larger than %d MiB", name, maxBodyFile>>20)
	}
	return b, nil
}

// ParseHeader reads a -header value, "Name: value".
func ParseHeader(s string) (name, value string, err error) {
	name, value, ok := strings.Cut(s, ":")
	name, value = strings.TrimSpace(name), strings.TrimSpace(value)
	if !ok || name == "" {
		return "", "", fmt.Errorf("header %.60q: want Name: value", s)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return "", "", fmt.Errorf("header %.60q: %q is not allowed in a header name", s, c)
		}
	}
	for i := 0; i < len(value); i++ {
		if c := value[i]; c < ' ' && c != '\t' || c == 0x7f {
			return "", "", fmt.Errorf("header %.60q: control character in the value", s)
		}
	}
	return http.CanonicalHeaderKey(name), value, nil
}
