package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// liveness bounds every wait on the browser or on the server's state. It is
// generous: nothing here is timed, only bounded.
const liveness = 10 * time.Second

func TestDashboardHandler(t *testing.T) {
	srv := httptest.NewServer(Dashboard())
	t.Cleanup(srv.Close)
	c := srv.Client()

	resp, err := c.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / = %s", resp.Status)
	}
	for k, want := range map[string]string{
		"Content-Type":           "text/html; charset=utf-8",
		"Cache-Control":          "no-store",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if !bytes.Equal(page, dashboardPage) {
		t.Errorf("GET / did not serve the embedded page")
	}

	t.Run("CSP", func(t *testing.T) {
		csp := resp.Header.Get("Content-Security-Policy")
		directives := map[string]string{}
		for d := range strings.SplitSeq(csp, ";") {
			name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
			directives[name] = value
		}
		hash := func(tag string) string {
			re := regexp.MustCompile(`(?s)<` + tag + `>(.*?)</` + tag + `>`)
			m := re.FindAllSubmatch(page, -1)
			if len(m) != 1 {
				t.Fatalf("page has %d <%s> elements, want 1", len(m), tag)
			}
			sum := sha256.Sum256(m[0][1])
			return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		}
		for name, want := range map[string]string{
			"default-src":     "'self'",
			"script-src":      hash("script"),
			"style-src":       hash("style"),
			"img-src":         "'self' data:",
			"connect-src":     "'self'",
			"object-src":      "'none'",
			"frame-ancestors": "'none'",
		} {
			if got := directives[name]; got != want {
				t.Errorf("CSP %s = %q, want %q (CSP: %s)", name, got, want, csp)
			}
		}
		if strings.Contains(csp, "unsafe-") {
			t.Errorf("CSP allows something unsafe: %s", csp)
		}
	})

	t.Run("self-contained", func(t *testing.T) {
		// Nothing is loaded from elsewhere: no external src or href, no
		// imports, no fonts. (The browser test checks the requests too.)
		for _, re := range []string{`(?i)\b(src|href)\s*=\s*["']?(https?:)?//`, `(?i)@import`, `(?i)url\(`, `(?i)<link[^>]+stylesheet`} {
			if loc := regexp.MustCompile(re).FindIndex(page); loc != nil {
				t.Errorf("page matches %s: %q", re, page[loc[0]:min(len(page), loc[1]+40)])
			}
		}
		if bytes.Contains(page, []byte("innerHTML")) || bytes.Contains(page, []byte("eval(")) {
			t.Errorf("page uses innerHTML or eval, which its CSP refuses")
		}
	})

	t.Run("HEAD", func(t *testing.T) {
		resp, err := c.Head(srv.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("HEAD / = %s with CSP %q", resp.Status, resp.Header.Get("Content-Security-Policy"))
		}
	})

	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		t.Run(method, func(t *testing.T) {
			req, err := http.NewRequest(method, srv.URL+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s / = %s, Allow %q; want 405 with Allow: GET, HEAD", method, resp.Status, resp.Header.Get("Allow"))
			}
		})
	}
}

func TestDashboardCSPNeedsOneInlineElement(t *testing.T) {
	for _, page := range []string{
		"<html><script>x</script></html>",
		"<style>a</style><style>b</style><script>x</script>",
		"<style>a</style><script>x",
	} {
		if _, err := dashboardCSP([]byte(page)); err == nil {
			t.Errorf("dashboardCSP(%q) = nil error", page)
		}
	}
}

// TestDashboardBrowser drives the page in headless Chromium against the server
// of startDashboardServer, and checks it through what the page shows and what
// GET /api/v1/state says.
func TestDashboardBrowser(t *testing.T) {
	base, token, path, getState := startDashboardServer(t)
	b := startBrowser(t)

	// What the API answers to a change without a token and with a wrong one:
	// the page must show these messages.
	msg401 := apiError(t, base, "", http.StatusUnauthorized)
	msg403 := apiError(t, base, "wrong-"+token, http.StatusForbidden)

	b.do(t, chromedp.Navigate(base+"/"))
	b.do(t, chromedp.WaitVisible(chromedp.CSS(`#sites article[data-site="aws"]`)))

	t.Run("sites", func(t *testing.T) {
		sites := stateSites(t, getState(t))
		for _, want := range []struct {
			name   string
			weight float64
		}{{"idc1", 5}, {"idc2", 3}, {"aws", 2}} {
			s, ok := sites[want.name]
			if !ok {
				t.Fatalf("the state has no site %s", want.name)
			}
			if s["configured_weight"] != want.weight || s["weight"] != want.weight {
				t.Errorf("state: %s weight %v configured %v, want %v", want.name, s["weight"], s["configured_weight"], want.weight)
			}
			card := `#sites article[data-site="` + want.name + `"] `
			b.waitText(t, card+`[data-field="configured"]`, fmt.Sprint(want.weight))
			b.waitText(t, card+`[data-field="weight"]`, fmt.Sprint(want.weight))
			b.waitText(t, card+`[data-field="target"]`, fmt.Sprintf("%.1f%%", s["target_share"].(float64)*100))
		}
		if n := b.eval(t, `document.querySelectorAll("#sites article[data-site]").length`); n != "3" {
			t.Errorf("the page shows %s sites, want 3", n)
		}
	})

	t.Run("chart", func(t *testing.T) {
		// A share line and a dashed target line per site, and the share
		// lines have points.
		for _, name := range []string{"idc1", "idc2", "aws"} {
			b.waitJS(t, fmt.Sprintf(`(() => {
				const line = document.querySelector('#share-chart path.share-line[data-site=%[1]q]');
				const target = document.querySelector('#share-chart path.target-line[data-site=%[1]q]');
				return !!line && !!target && (line.getAttribute("d").match(/L/g) || []).length > 10 &&
					getComputedStyle(target).strokeDasharray !== "none";
			})()`, name))
		}
		if n := b.eval(t, `document.querySelectorAll("#share-chart path.share-line").length`); n != "3" {
			t.Errorf("the chart has %s share lines, want 3", n)
		}
	})

	idc2 := `#sites article[data-site="idc2"] `
	setWeight := func(t *testing.T, weight string) {
		t.Helper()
		// Empty the field first (a refused change leaves it filled). Not with
		// chromedp.SetValue(sel, ""): it passes undefined, which the number
		// input warns about on the console.
		b.eval(t, `document.querySelector('`+idc2+`input[data-field="new-weight"]').value = ""`)
		b.do(t,
			chromedp.SendKeys(chromedp.CSS(idc2+`input[data-field="new-weight"]`), weight),
			chromedp.Click(chromedp.CSS(idc2+`button[data-action="set"]`)),
		)
	}
	useToken := func(t *testing.T, tok string) {
		t.Helper()
		b.do(t,
			chromedp.SendKeys(chromedp.ID("token"), tok),
			chromedp.Click(chromedp.ID("token-use")),
		)
	}
	unchanged := func(t *testing.T) {
		t.Helper()
		s := stateSites(t, getState(t))["idc2"]
		if s["weight"] != 3.0 || s["override"] != nil {
			t.Errorf("a refused change changed idc2: weight %v, override %v", s["weight"], s["override"])
		}
	}

	t.Run("no token", func(t *testing.T) {
		setWeight(t, "9")
		b.waitText(t, idc2+`[data-field="msg"]`, "401")
		b.waitText(t, idc2+`[data-field="msg"]`, msg401)
		unchanged(t)
	})

	t.Run("wrong token", func(t *testing.T) {
		useToken(t, "wrong-"+token)
		setWeight(t, "9")
		b.waitText(t, idc2+`[data-field="msg"]`, "403")
		b.waitText(t, idc2+`[data-field="msg"]`, msg403)
		unchanged(t)
	})

	t.Run("set weight", func(t *testing.T) {
		b.do(t, chromedp.Click(chromedp.ID("token-forget")))
		useToken(t, token)
		setWeight(t, "7")
		waitState(t, getState, "idc2 has weight 7 and an override", func(st map[string]any) bool {
			s := stateSites(t, st)["idc2"]
			o, _ := s["override"].(map[string]any)
			return s["weight"] == 7.0 && o != nil && o["weight"] == 7.0
		})
		// The page shows the override, from its next poll.
		b.do(t, chromedp.WaitVisible(chromedp.CSS(idc2+`[data-field="override-badge"]`)))
		b.waitText(t, idc2+`[data-field="weight"]`, "7")
		b.waitText(t, idc2+`[data-field="configured"]`, "3")
		b.waitText(t, "#changes tbody", "idc2")
	})

	t.Run("token stays out of the URL", func(t *testing.T) {
		loc, err := chromedp.Run(b.timeout(t), chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(loc, token) || strings.Contains(b.eval(t, `location.href + document.cookie + JSON.stringify(localStorage)`), token) {
			t.Errorf("the token is in the URL, a cookie or localStorage: %s", loc)
		}
		if got := b.eval(t, `sessionStorage.getItem("spillway.adminToken")`); got != token {
			t.Errorf("sessionStorage has token %q, want the one entered", got)
		}
		if v := b.eval(t, `document.getElementById("token").value`); v != "" {
			t.Errorf("the token field still shows %q after use", v)
		}
	})

	if path := os.Getenv("SPILLWAY_SCREENSHOT"); path != "" {
		t.Run("screenshot", func(t *testing.T) {
			// A few more polls, so the chart has moved on since the change.
			n, err := chromedp.Run(b.timeout(t), chromedp.Evaluate[int](`+document.getElementById("updated").dataset.updates`))
			if err != nil {
				t.Fatal(err)
			}
			b.waitJS(t, fmt.Sprintf(`+document.getElementById("updated").dataset.updates >= %d`, n+3))
			png, err := chromedp.Run(b.timeout(t), chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s (%d bytes)", path, len(png))
		})
	}

	t.Run("clear override", func(t *testing.T) {
		b.do(t, chromedp.Click(chromedp.CSS(idc2+`button[data-action="clear"]`)))
		waitState(t, getState, "idc2 back to weight 3 with no override", func(st map[string]any) bool {
			s := stateSites(t, st)["idc2"]
			return s["weight"] == 3.0 && s["override"] == nil
		})
		b.do(t, chromedp.WaitNotPresent(chromedp.CSS(idc2+`[data-field="override-badge"]`)))
	})

	t.Run("drain and undrain", func(t *testing.T) {
		aws := `#sites article[data-site="aws"] `
		// Drain asks for a second click.
		b.do(t, chromedp.Click(chromedp.CSS(aws+`button[data-action="drain"]`)))
		b.waitText(t, aws+`button[data-action="drain"]`, "Confirm drain")
		if stateSites(t, getState(t))["aws"]["drained"] != false {
			t.Fatalf("one click drained aws")
		}
		b.do(t, chromedp.Click(chromedp.CSS(aws+`button[data-action="drain"]`)))
		waitState(t, getState, "aws drained", func(st map[string]any) bool {
			return stateSites(t, st)["aws"]["drained"] == true
		})
		b.do(t, chromedp.WaitVisible(chromedp.CSS(aws+`button[data-action="undrain"]`)))
		b.do(t, chromedp.Click(chromedp.CSS(aws+`button[data-action="undrain"]`)))
		waitState(t, getState, "aws serving again", func(st map[string]any) bool {
			return stateSites(t, st)["aws"]["drained"] == false
		})
	})

	t.Run("durable flag", func(t *testing.T) {
		// No state file here: the header says changes would not survive a restart.
		b.waitText(t, "#durable", "NOT durable")
		if c := b.eval(t, `document.getElementById("durable").className`); c != "bad" {
			t.Errorf("#durable has class %q, want bad", c)
		}
	})

	t.Run("preview and reload", func(t *testing.T) {
		cfg, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		edited := strings.Replace(string(cfg), "{name: idc1, weight: 5,", "{name: idc1, weight: 6,", 1)
		if edited == string(cfg) {
			t.Fatal("the edit did not apply")
		}
		if err := os.WriteFile(path, []byte(edited), 0o644); err != nil {
			t.Fatal(err)
		}
		b.press(t, "preview-btn")
		b.waitText(t, "#preview tbody", "sites.idc1.weight")
		b.waitText(t, "#reload-msg", "1 change a reload would make (nothing applied yet)")
		if st := getState(t); st["generation"] != 1.0 || stateSites(t, st)["idc1"]["configured_weight"] != 5.0 {
			t.Fatalf("the preview applied something: generation %v, idc1 configured %v", st["generation"], stateSites(t, st)["idc1"]["configured_weight"])
		}
		b.press(t, "reload-btn")
		waitState(t, getState, "generation 2 with idc1 at 6", func(st map[string]any) bool {
			return st["generation"] == 2.0 && stateSites(t, st)["idc1"]["configured_weight"] == 6.0
		})
		b.waitText(t, "#reload-msg", "Reloaded: generation 2")
		b.waitText(t, "#changes tbody", "sites.idc1.weight: 5 → 6")
	})

	t.Run("no console errors", func(t *testing.T) {
		for _, p := range b.problems() {
			t.Error(p)
		}
	})

	t.Run("no external requests", func(t *testing.T) {
		reqs := b.requestURLs()
		if len(reqs) == 0 {
			t.Fatal("saw no requests at all: the network events are not recorded")
		}
		for _, u := range reqs {
			if !strings.HasPrefix(u, base+"/") && !strings.HasPrefix(u, "data:") {
				t.Errorf("the page requested %s, outside %s", u, base)
			}
		}
	})
}

// browser is one headless Chromium with one tab, and what the tab reported.
type browser struct {
	ctx context.Context

	mu       sync.Mutex
	console  []string     // errors and warnings, from the console and the exceptions
	logs     []*log.Entry // errors and warnings of the browser log
	requests []string
}

// chromiumPath finds Debian's chromium, or another Chromium build on PATH.
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// startBrowser starts headless Chromium for t and stops it, waiting for its
// process and goroutines, when t ends. Without Chromium it skips t, unless
// SPILLWAY_REQUIRE_BROWSER is set (as CI does), where it fails.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		if os.Getenv("SPILLWAY_REQUIRE_BROWSER") != "" {
			t.Fatal("chromium is not installed and SPILLWAY_REQUIRE_BROWSER is set")
		}
		t.Skip("chromium is not installed (apt-get install chromium); set SPILLWAY_REQUIRE_BROWSER=1 to fail instead")
	}
	dir := t.TempDir() // removed after the cleanup below has stopped the browser
	b := &browser{}
	// The browser lives as long as this context, which bounds the whole test
	// in case Chromium hangs.
	root, cancelRoot := context.WithTimeout(context.Background(), 3*time.Minute)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(root,
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(1440, 1000),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("no-first-run", true),
	)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithListener(b.listen))
	t.Cleanup(func() {
		cancelTab()   // closes the tab and the browser
		cancelAlloc() // waits for the process and the allocator's goroutines
		cancelRoot()
	})
	// The first action starts the browser; it gets the long-lived context so
	// that the later, bounded ones do not bind the browser's life.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	b.ctx = ctx
	return b
}

// listen runs on the tab's event loop: it only records.
func (b *browser) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		switch ev.Type {
		case runtime.ConsoleAPICalledTypeError, runtime.ConsoleAPICalledTypeAssert, runtime.ConsoleAPICalledTypeWarning:
			var args []string
			for _, a := range ev.Args {
				if len(a.Value) > 0 {
					args = append(args, string(a.Value))
				} else {
					args = append(args, a.Description)
				}
			}
			b.console = append(b.console, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		text := d.Text
		if d.Exception != nil {
			text += " " + d.Exception.Description
		}
		b.console = append(b.console, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber+1, text))
	case *log.EventEntryAdded:
		if ev.Entry.Level == log.EntryLevelError || ev.Entry.Level == log.EntryLevelWarning {
			b.logs = append(b.logs, ev.Entry)
		}
	case *network.EventRequestWillBeSent:
		b.requests = append(b.requests, ev.Request.URL)
	}
}

// problems are the console errors and warnings, less the browser's own note
// of the 401 and 403 answers that the test provokes on purpose.
func (b *browser) problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := append([]string(nil), b.console...)
	for _, e := range b.logs {
		expected := e.Source == log.EntrySourceNetwork && strings.Contains(e.URL, "/api/v1/sites/") &&
			(strings.Contains(e.Text, "status of 401") || strings.Contains(e.Text, "status of 403"))
		if !expected {
			out = append(out, fmt.Sprintf("browser log %s/%s: %s (%s)", e.Source, e.Level, e.Text, e.URL))
		}
	}
	return out
}

func (b *browser) requestURLs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.requests...)
}

// timeout is the tab's context bounded by the liveness bound, ended with t.
func (b *browser) timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(b.ctx, liveness)
	t.Cleanup(cancel)
	return ctx
}

func (b *browser) do(t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.timeout(t), steps...); err != nil {
		t.Fatalf("browser: %v\nconsole: %v", err, b.problems())
	}
}

// eval evaluates expr in the page and returns its value as text.
func (b *browser) eval(t *testing.T, expr string) string {
	t.Helper()
	v, err := chromedp.Run(b.timeout(t), chromedp.Evaluate[any](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// waitJS waits until expr is true in the page. It polls from Go, because
// chromedp.Poll builds its predicate with new Function, which the page's CSP
// refuses.
func (b *browser) waitJS(t *testing.T, expr string) {
	t.Helper()
	if err := b.poll(t, expr); err != nil {
		t.Fatalf("not true within %v: %s (%v)\nconsole: %v", liveness, expr, err, b.problems())
	}
}

// poll evaluates the boolean expr every 50 ms until it is true, or returns the
// last error when the liveness bound ends.
func (b *browser) poll(t *testing.T, expr string) error {
	ctx := b.timeout(t)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return err
		case <-tick.C:
		}
	}
}

// press clicks the button with the given id from the page's script, once it is enabled. A
// pointer click lands at coordinates taken before it is dispatched: a button below the site
// cards, which the page re-renders as it polls (a drained site's card changes height), may
// have moved by then on a busy machine, and the click hits something else (CI saw the
// preview never happen).
func (b *browser) press(t *testing.T, id string) {
	t.Helper()
	ij, _ := json.Marshal(id)
	expr := fmt.Sprintf(`(() => { const e = document.getElementById(%s); if (!e || e.disabled) return false; e.click(); return true; })()`, ij)
	if err := b.poll(t, expr); err != nil {
		t.Fatalf("button #%s not pressed within %v (%v)", id, liveness, err)
	}
}

// waitText waits until the first element matching the CSS selector sel
// contains want.
func (b *browser) waitText(t *testing.T, sel, want string) {
	t.Helper()
	sj, _ := json.Marshal(sel)
	wj, _ := json.Marshal(want)
	expr := fmt.Sprintf(`(() => { const e = document.querySelector(%s); return !!e && e.textContent.includes(%s); })()`, sj, wj)
	if err := b.poll(t, expr); err != nil {
		got := b.eval(t, fmt.Sprintf(`(() => { const e = document.querySelector(%s); return e ? e.textContent : "(no element)"; })()`, sj))
		t.Fatalf("%s shows %q, want it to contain %q within %v (%v)", sel, got, want, liveness, err)
	}
}

// waitState polls GET /api/v1/state until ok, within the liveness bound.
func waitState(t *testing.T, getState func(*testing.T) map[string]any, what string, ok func(map[string]any) bool) {
	t.Helper()
	deadline := time.Now().Add(liveness)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		st := getState(t)
		if ok(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the state does not show %s within %v: sites %v", what, liveness, st["sites"])
		}
		<-tick.C
	}
}

// stateSites indexes the state's sites by name.
func stateSites(t *testing.T, state map[string]any) map[string]map[string]any {
	t.Helper()
	list, ok := state["sites"].([]any)
	if !ok {
		t.Fatalf("the state has no sites list: %v", state)
	}
	sites := map[string]map[string]any{}
	for _, s := range list {
		m, ok := s.(map[string]any)
		if !ok {
			t.Fatalf("a site is %T", s)
		}
		sites[m["name"].(string)] = m
	}
	return sites
}

// apiError sends a weight change for idc2 with token (none if empty), expects
// status, and returns the API's error message.
func apiError(t *testing.T, base, token string, status int) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, base+"/api/v1/sites/idc2/weight", strings.NewReader(`{"weight": 9}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("PUT weight with token %q: decode: %v", token, err)
	}
	if resp.StatusCode != status || body.Error == "" {
		t.Fatalf("PUT weight with token %q = %s %q, want %d with an error message", token, resp.Status, body.Error, status)
	}
	return body.Error
}
