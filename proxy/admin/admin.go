// Package admin is Spillway's admin API on the admin listener: the state of the proxy, the
// operators' runtime changes (weights, ramps, drains, reload) with bearer-token auth and an
// audit trail, /metrics, health and readiness, and the live dashboard.
package admin

import (
	"bufio"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy/runtime"
	"github.com/spillway/spillway/proxy/store"
	"github.com/spillway/spillway/proxy/telemetry"
)

// Control is what the admin API reads and changes; *runtime.Reloader is one.
type Control interface {
	State() runtime.State
	Site(name string) (runtime.SiteState, bool)
	SetWeight(site string, weight int, ramp time.Duration, who string, persist bool) error
	ClearWeight(site, who string) error
	SetDrained(site string, drained bool, who string) error
	ReloadBy(who string) (runtime.Change, error)
	DryRun() (runtime.Preview, error)
	Changes(before uint64, limit int) ([]runtime.Change, int, error)
	Refused(who, action, site, reason string)
	Durable() bool
	Ready() bool
}

var _ Control = (*runtime.Reloader)(nil)

// Options configure the admin API.
type Options struct {
	Control Control
	// Tokens may make changes (and, off loopback, read); see LoadTokens.
	Tokens Tokens
	// OpenReads lets requests without a token read (GET) the state and metrics, when they
	// name a loopback host (localhost, 127.0.0.1, [::1]): set it when the admin listener is
	// on loopback.
	OpenReads bool
	// Metrics serves GET /metrics; nil: 404.
	Metrics http.Handler
	// Recent finds a recent request by its ID for GET /api/v1/explain; nil: 404.
	Recent *telemetry.Recent
	// Log gets a line per refused request; nil: none.
	Log *zap.Logger
}

// New returns the admin API's handler.
func New(o Options) http.Handler {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	a := &api{o: o}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", a.readyz)
	if o.Metrics != nil {
		mux.Handle("GET /metrics", a.read(o.Metrics.ServeHTTP))
	}
	mux.Handle("GET /api/v1/state", a.read(a.state))
	mux.Handle("GET /api/v1/explain", a.read(a.explain))
	mux.Handle("GET /api/v1/changes", a.read(a.changes))
	mux.Handle("PUT /api/v1/sites/{name}/weight", a.change(a.setWeight))
	mux.Handle("DELETE /api/v1/sites/{name}/weight", a.change(a.clearWeight))
	mux.Handle("POST /api/v1/sites/{name}/drain", a.change(a.drain(true)))
	mux.Handle("POST /api/v1/sites/{name}/undrain", a.change(a.drain(false)))
	mux.Handle("POST /api/v1/reload", a.change(a.reload))
	mux.Handle("GET /{$}", Dashboard())
	return mux
}

type api struct{ o Options }

// Tokens are the bearer tokens that may change things, by identity.
type Tokens map[string]string // identity → secret

// LoadTokens reads the admin tokens: from file (one per line, "name:secret", or a bare
// secret named "admin"; '#' comments and blank lines ignored), and from env (the value of
// SPILLWAY_ADMIN_TOKEN, named "env"). Secrets shorter than 16 characters are refused.
func LoadTokens(file, env string) (Tokens, error) {
	t := Tokens{}
	if file != "" {
		lines, err := readTokenFile(file)
		if err != nil {
			return nil, err
		}
		for _, l := range lines {
			if err := t.add(l.name, l.secret); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", file, l.n, err)
			}
		}
	}
	if env != "" {
		if err := t.add("env", env); err != nil {
			return nil, fmt.Errorf("SPILLWAY_ADMIN_TOKEN: %w", err)
		}
	}
	return t, nil
}

// FirstToken is the secret of the first token in file (written as for LoadTokens), for a
// client of the admin API such as the bench in target mode.
func FirstToken(file string) (string, error) {
	lines, err := readTokenFile(file)
	if err != nil {
		return "", err
	}
	if l := lines[0]; l.secret == "" {
		return "", fmt.Errorf("%s:%d: empty token", file, l.n)
	}
	return lines[0].secret, nil
}

// tokenLine is one token of a token file: its line number, name and secret.
type tokenLine struct {
	n            int
	name, secret string
}

// readTokenFile reads a token file: one token per line, "name:secret" or a bare secret
// named "admin"; '#' comments and blank lines skipped. A file with no token is an error.
func readTokenFile(file string) ([]tokenLine, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("admin token file: %w", err)
	}
	defer f.Close()
	var lines []tokenLine
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, secret, ok := strings.Cut(line, ":")
		if !ok {
			name, secret = "admin", line
		}
		lines = append(lines, tokenLine{n: n, name: strings.TrimSpace(name), secret: strings.TrimSpace(secret)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("admin token file: %w", err)
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("admin token file %s has no token", file)
	}
	return lines, nil
}

func (t Tokens) add(name, secret string) error {
	switch {
	case name == "":
		return errors.New("a token needs a name before the ':'")
	case len(secret) < 16:
		return fmt.Errorf("token %q is shorter than 16 characters", name)
	case t[name] != "":
		return fmt.Errorf("token name %q is used twice", name)
	}
	t[name] = secret
	return nil
}

// identify returns the identity whose secret is bearer. Every secret is compared in
// constant time, whichever matches.
func (t Tokens) identify(bearer string) (string, bool) {
	found := ""
	for name, secret := range t {
		if subtle.ConstantTimeCompare([]byte(secret), []byte(bearer)) == 1 {
			found = name
		}
	}
	return found, found != ""
}

// who authenticates r: its token's identity, or an error status and message.
func (a *api) who(r *http.Request) (string, int, string) {
	auth := r.Header.Get("Authorization")
	scheme, bearer, ok := strings.Cut(auth, " ")
	if auth == "" || !ok || !strings.EqualFold(scheme, "Bearer") || bearer == "" {
		return "", http.StatusUnauthorized, "missing bearer token (Authorization: Bearer <token>)"
	}
	name, ok := a.o.Tokens.identify(strings.TrimSpace(bearer))
	if !ok {
		return "", http.StatusForbidden, "the token is not valid"
	}
	return name + " (" + r.RemoteAddr + ")", 0, ""
}

// read guards a read: open on loopback, else a token is needed. Open reads also need the
// request to name a loopback host: a web page the operator visits could otherwise read the
// API through a name of its own that resolves to 127.0.0.1 (DNS rebinding).
func (a *api) read(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.o.OpenReads || !loopbackHost(r.Host) {
			if _, status, msg := a.who(r); status != 0 {
				a.refuse(w, r, status, msg)
				return
			}
		}
		h(w, r)
	})
}

// change guards a change: a valid token is always needed; h gets the caller's identity.
func (a *api) change(h func(w http.ResponseWriter, r *http.Request, who string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, status, msg := a.who(r)
		if status != 0 {
			a.refuse(w, r, status, msg)
			return
		}
		h(w, r, who)
	})
}

func (a *api) refuse(w http.ResponseWriter, r *http.Request, status int, msg string) {
	a.o.Log.Warn("admin request refused", zap.String("remote", r.RemoteAddr),
		zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Int("status", status))
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="spillway"`)
	}
	writeError(w, status, msg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// badChange refuses a malformed change request with 400, and records the attempt in the
// audit trail (an unauthenticated one is only logged: it could otherwise push the real
// entries out of the trail).
func (a *api) badChange(w http.ResponseWriter, who, action, site, msg string) {
	a.o.Control.Refused(who, action, site, msg)
	writeError(w, http.StatusBadRequest, msg)
}

// writeChangeError maps an error of a runtime change to its status.
func writeChangeError(w http.ResponseWriter, err error) {
	var cerrs configs.Errors
	switch {
	case errors.Is(err, store.ErrUnavailable):
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "the change was not applied: "+err.Error())
	case errors.Is(err, runtime.ErrNoSite):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, runtime.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.As(err, &cerrs):
		problems := make([]string, len(cerrs))
		for i, e := range cerrs {
			problems[i] = e.Error()
		}
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{
			"error": "the config was refused; the running config stays", "problems": problems})
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	if !a.o.Control.Ready() {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ready\n")
}

func (a *api) state(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.o.Control.State())
}

// maxBody bounds a change's request body.
const maxBody = 64 << 10

func (a *api) setWeight(w http.ResponseWriter, r *http.Request, who string) {
	var body struct {
		Weight *int   `json:"weight"`
		Ramp   string `json:"ramp"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	name := r.PathValue("name")
	if err := dec.Decode(&body); err != nil {
		a.badChange(w, who, "weight", name, `want {"weight": 7, "ramp": "30s"} (ramp optional): `+err.Error())
		return
	}
	if _, err := dec.Token(); err != io.EOF {
		a.badChange(w, who, "weight", name, `want one JSON object, {"weight": 7, "ramp": "30s"}, and nothing after it`)
		return
	}
	if body.Weight == nil {
		a.badChange(w, who, "weight", name, `"weight" is required`)
		return
	}
	var ramp time.Duration
	if body.Ramp != "" {
		var err error
		if ramp, err = time.ParseDuration(body.Ramp); err != nil {
			a.badChange(w, who, "weight", name, fmt.Sprintf("ramp: want a duration like 30s, got %s", configs.Quote(body.Ramp)))
			return
		}
	}
	persist, ok := a.flag(w, r, who, "weight", name, "persist")
	if !ok {
		return
	}
	if err := a.o.Control.SetWeight(name, *body.Weight, ramp, who, persist); err != nil {
		writeChangeError(w, err)
		return
	}
	a.site(w, name)
}

func (a *api) clearWeight(w http.ResponseWriter, r *http.Request, who string) {
	name := r.PathValue("name")
	if err := a.o.Control.ClearWeight(name, who); err != nil {
		writeChangeError(w, err)
		return
	}
	a.site(w, name)
}

func (a *api) drain(drained bool) func(http.ResponseWriter, *http.Request, string) {
	return func(w http.ResponseWriter, r *http.Request, who string) {
		name := r.PathValue("name")
		if err := a.o.Control.SetDrained(name, drained, who); err != nil {
			writeChangeError(w, err)
			return
		}
		a.site(w, name)
	}
}

// flag reads the boolean query parameter name ("true" or "false"; absent: false); a bad
// value is refused.
func (a *api) flag(w http.ResponseWriter, r *http.Request, who, action, site, name string) (bool, bool) {
	switch v := r.URL.Query().Get(name); v {
	case "", "false":
		return false, true
	case "true":
		return true, true
	default:
		a.badChange(w, who, action, site, fmt.Sprintf("%s: want true or false, got %s", name, configs.Quote(v)))
		return false, false
	}
}

// siteAnswer is a change's answer: the site as it is now, and whether the change lasts.
type siteAnswer struct {
	runtime.SiteState
	Durable bool `json:"durable"` // the change survives a restart (state.file, cluster)
}

func (a *api) site(w http.ResponseWriter, name string) {
	s, ok := a.o.Control.Site(name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such site %q", name))
		return
	}
	writeJSON(w, http.StatusOK, siteAnswer{SiteState: s, Durable: a.o.Control.Durable()})
}

func (a *api) reload(w http.ResponseWriter, r *http.Request, who string) {
	dry, ok := a.flag(w, r, who, "reload", "", "dry_run")
	if !ok {
		return
	}
	if dry {
		p, err := a.o.Control.DryRun()
		if err != nil {
			writeChangeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, p)
		return
	}
	entry, err := a.o.Control.ReloadBy(who)
	if err != nil {
		writeChangeError(w, err)
		return
	}
	st := a.o.Control.State()
	// The reload's own entry; "recorded": false when the store could not take it (the
	// reload is in effect all the same, and the audit log has it).
	writeJSON(w, http.StatusOK, map[string]any{"generation": st.Generation, "source": st.Source,
		"durable": st.Durable, "change": entry, "recorded": entry.ID != 0})
}

// maxChangesPage bounds a page of GET /api/v1/changes.
const maxChangesPage = 1000

// changes serves the audit trail, newest first, a page at a time: ?limit=N (default 50, at
// most 1000) and ?before=ID (the entries older than ID; the answer's "next" is the value for
// the next page, absent on the last).
func (a *api) changes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, before := 50, uint64(0)
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxChangesPage {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: want a number from 1 to %d, got %s", maxChangesPage, configs.Quote(v)))
			return
		}
		limit = n
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("before: want the id of an entry (a number > 0), got %s", configs.Quote(v)))
			return
		}
		before = n
	}
	// One more than asked: whether a next page exists (entries older than those kept do
	// not, whatever their IDs).
	page, total, err := a.o.Control.Changes(before, limit+1)
	if err != nil {
		writeChangeError(w, err)
		return
	}
	more := len(page) > limit
	page = page[:min(len(page), limit)]
	if page == nil {
		page = []runtime.Change{}
	}
	out := map[string]any{"changes": page, "total": total, "durable": a.o.Control.Durable()}
	if more {
		out["next"] = page[len(page)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) explain(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("request_id")
	if id == "" {
		writeError(w, http.StatusBadRequest, "want ?request_id=<the X-Request-Id of a recent request>")
		return
	}
	if a.o.Recent == nil {
		writeError(w, http.StatusNotFound, "recent requests are not kept")
		return
	}
	info, ok := a.o.Recent.Find(id)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("request %q is not among the %d most recent", id, a.o.Recent.Size()))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"request": info, "why": telemetry.Explain(&info)})
}

// loopbackHost reports whether a request's Host names this machine's loopback.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// IsLoopback reports whether addr (host:port) listens on loopback only.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
