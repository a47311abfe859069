package admin

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
)

// dashboardPage is the live dashboard: one self-contained page with its CSS in
// one <style> element and its JavaScript in one <script> element. It loads
// nothing from anywhere else: it reads GET /api/v1/state every second and draws
// its charts as SVG.
//
//go:embed dashboard.html
var dashboardPage []byte

// Dashboard returns the handler of the live dashboard page, to be served at
// "/" on the admin listener (mount it as "/{$}" on a ServeMux so that unknown
// paths stay 404s). The page talks to the admin API with paths relative to
// itself ("api/v1/state"), so it also works behind a path prefix.
//
// It answers GET and HEAD; any other method gets 405. The response is never
// cached (Cache-Control: no-store) and carries a strict Content-Security-Policy:
// the page's inline script and style are allowed by their SHA-256 hashes only,
// it may connect only to its own origin, and it cannot be framed.
//
// The handler is safe for concurrent use. Dashboard panics if the embedded page
// does not have exactly one <style> and one <script> element, which is a bug
// in the page that every test of this package catches.
func Dashboard() http.Handler {
	csp, err := dashboardCSP(dashboardPage)
	if err != nil {
		panic("admin: dashboard.html: " + err.Error())
	}
	length := strconv.Itoa(len(dashboardPage))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Length", length)
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(dashboardPage)
	})
}

// dashboardCSP builds the Content-Security-Policy of the page: the hashes of
// its one inline <style> and one inline <script> instead of 'unsafe-inline'.
// A hash, not a nonce, because the page is static: the header can be computed
// once and the page served byte for byte from the embedded file.
//
// The page never sets a style attribute (only element.style through the
// CSSOM, which style-src does not govern), never uses eval, and never assigns
// HTML strings (hence require-trusted-types-for).
func dashboardCSP(page []byte) (string, error) {
	style, err := inlineElement(page, "style")
	if err != nil {
		return "", err
	}
	script, err := inlineElement(page, "script")
	if err != nil {
		return "", err
	}
	return "default-src 'self'; " +
		"script-src '" + sha256Source(script) + "'; " +
		"style-src '" + sha256Source(style) + "'; " +
		"img-src 'self' data:; " +
		"connect-src 'self'; " +
		"object-src 'none'; " +
		"base-uri 'none'; " +
		"form-action 'none'; " +
		"frame-ancestors 'none'; " +
		"require-trusted-types-for 'script'", nil
}

// inlineElement returns the text of the only <tag> element of page, which must
// be written exactly as "<tag>" (no attributes) and closed by "</tag>".
func inlineElement(page []byte, tag string) ([]byte, error) {
	open, end := []byte("<"+tag+">"), []byte("</"+tag+">")
	if n := bytes.Count(page, open); n != 1 {
		return nil, fmt.Errorf("want exactly one <%s>, found %d", tag, n)
	}
	_, rest, _ := bytes.Cut(page, open)
	body, _, ok := bytes.Cut(rest, end)
	if !ok {
		return nil, fmt.Errorf("<%s> is not closed", tag)
	}
	return body, nil
}

func sha256Source(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}
