package admin_test

// Issue 14: every change is in the audit trail, which GET /api/v1/changes pages; a reload
// says what it changed (and a dry run says it beforehand, applying nothing); an override
// that hides a file edit says so; a change the store cannot keep is refused, not half-made.

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spillway/spillway/proxy/runtime"
	"go.uber.org/zap"
)

type changesPage struct {
	Changes []runtime.Change `json:"changes"`
	Total   int              `json:"total"`
	Next    uint64           `json:"next"`
	Durable bool             `json:"durable"`
}

func TestAdminChangesPaged(t *testing.T) {
	a, b, c := threeBackends(t)
	e := startAdmin(t, config(a, b, c, ""), true)
	for w := 1; w <= 7; w++ {
		e.must(t, http.MethodPut, "/api/v1/sites/idc1/weight", opsToken, fmt.Sprintf(`{"weight": %d}`, w), nil)
	}
	var seen []string
	path := "/api/v1/changes?limit=3"
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatalf("more than 3 pages of 3 for 7 changes: %v", seen)
		}
		var p changesPage
		e.must(t, http.MethodGet, path, "", "", &p)
		if p.Total != 7 || p.Durable {
			t.Errorf("page %s: total %d durable %v, want 7 and false (no state file)", path, p.Total, p.Durable)
		}
		for _, ch := range p.Changes {
			seen = append(seen, ch.After)
		}
		if p.Next == 0 {
			break
		}
		path = fmt.Sprintf("/api/v1/changes?limit=3&before=%d", p.Next)
	}
	if got := strings.Join(seen, " "); got != "7 6 5 4 3 2 1" {
		t.Errorf("the trail paged newest first: %s, want 7 6 5 4 3 2 1", got)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=abc", "limit=-1", "before=0", "before=-1",
		"before=99999999999999999999", "before=1e3", "limit=" + strings.Repeat("9", 400)} {
		status, h, body := e.call(t, http.MethodGet, "/api/v1/changes?"+q, "", "")
		if status != http.StatusBadRequest {
			t.Errorf("?%s: %d %s, want 400", q, status, body)
			continue
		}
		errorBody(t, q, body, h)
		if len(body) > 400 {
			t.Errorf("?%s: a %d-byte error echoes the input", q, len(body))
		}
	}
}

func TestAdminReloadDryRun(t *testing.T) {
	a, b, c := threeBackends(t)
	e := startAdmin(t, config(a, b, c, ""), true)
	e.must(t, http.MethodPut, "/api/v1/sites/idc1/weight", opsToken, `{"weight": 8}`, nil)
	// The operator edits the file: idc1's weight (hidden by the override), a backend more
	// for aws, idc2 gone, a bigger queue.
	d := nameBackend(t, "aws-2")
	edited := strings.Replace(config(a, b, c, "spillover: {queue: {size: 50}}\n"), "weight: 5 ", "weight: 6 ", 1)
	edited = strings.Replace(edited, fmt.Sprintf("  - {name: idc2, weight: 3, backends: [%q]}   # flow style\n", b), "", 1)
	edited = strings.Replace(edited, fmt.Sprintf("      - %q\n", c), fmt.Sprintf("      - %q\n      - %q\n", c, d), 1)
	if err := os.WriteFile(e.path, []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"sites.idc1.weight: 5 → 6 (an override (8, by ops (127.0.0.1:",
		"sites.aws.backends:  → " + d,
		"sites.idc2: weight 3, 1 backend → removed",
		"spillover.queue.size: 1000 → 50",
	}
	items := func(what string, got []struct{ Path, Before, After, Note string }) {
		t.Helper()
		var lines []string
		for _, it := range got {
			l := it.Path + ": " + it.Before + " → " + it.After
			if it.Note != "" {
				l += " (" + it.Note
			}
			lines = append(lines, l)
		}
		if len(lines) != len(want) {
			t.Fatalf("%s: %d items %q, want %d", what, len(lines), lines, len(want))
		}
		for i := range want {
			if !strings.HasPrefix(lines[i], want[i]) {
				t.Errorf("%s item %d: %q, want %q...", what, i, lines[i], want[i])
			}
		}
	}

	var p struct {
		DryRun     bool  `json:"dry_run"`
		Generation int64 `json:"generation"`
		Unchanged  bool  `json:"unchanged"`
		Changes    []struct{ Path, Before, After, Note string }
	}
	e.must(t, http.MethodPost, "/api/v1/reload?dry_run=true", opsToken, "", &p)
	if !p.DryRun || p.Generation != 1 || p.Unchanged {
		t.Errorf("dry run answered %+v, want dry_run, generation 1, changed", p)
	}
	items("dry run", p.Changes)
	st := e.state(t)
	if st.Generation != 1 || len(st.Sites) != 3 || len(st.Changes) != 1 {
		t.Fatalf("after a dry run: generation %d, %d sites, %d changes; want nothing applied nor recorded", st.Generation, len(st.Sites), len(st.Changes))
	}

	// The reload then does what the preview said, and its audit entry lists the same.
	var got struct {
		Generation int64 `json:"generation"`
		Change     struct {
			Action, Who string
			Items       []struct{ Path, Before, After, Note string }
		} `json:"change"`
	}
	e.must(t, http.MethodPost, "/api/v1/reload", opsToken, "", &got)
	if got.Generation != 2 || got.Change.Action != "reload" || !strings.HasPrefix(got.Change.Who, "api: ops (") {
		t.Errorf("reload answered %+v", got)
	}
	items("reload entry", got.Change.Items)
	// Configured and in effect, side by side: the file's 6, the override's 8.
	if s := e.site(t, "idc1"); s.ConfiguredWeight != 6 || s.Weight != 8 || s.Override == nil {
		t.Errorf("idc1 after the reload: %+v, want configured 6, in effect 8 (override)", s)
	}
	if n := e.audit.FilterField(zap.String("action", "reload")).Len(); n != 1 {
		t.Errorf("%d audit lines for the reload, want 1", n)
	}

	// Now unchanged; then a file the reload would refuse, refused by the dry run alike, and
	// neither applied nor recorded.
	e.must(t, http.MethodPost, "/api/v1/reload?dry_run=true", opsToken, "", &p)
	if !p.Unchanged || len(p.Changes) != 0 {
		t.Errorf("dry run of the running file: %+v, want unchanged and no changes", p)
	}
	if err := os.WriteFile(e.path, []byte(strings.Replace(edited, "weight: 6 ", "weight: -6", 1)), 0o640); err != nil {
		t.Fatal(err)
	}
	status, h, body := e.call(t, http.MethodPost, "/api/v1/reload?dry_run=true", opsToken, "")
	if status != http.StatusUnprocessableEntity || !strings.Contains(body, "sites[0].weight: must be between 0 and 1000") {
		t.Errorf("dry run of a bad file: %d %s, want 422 with the problem", status, body)
	}
	errorBody(t, "bad dry run", body, h)
	if st := e.state(t); st.Generation != 2 || st.Reloads.Failed != 0 || len(st.Changes) != 2 {
		t.Errorf("after a refused dry run: generation %d, %d failed, %d changes; want 2, 0, 2", st.Generation, st.Reloads.Failed, len(st.Changes))
	}
	for _, tc := range []struct {
		query, token string
		want         int
	}{{"dry_run=maybe", opsToken, 400}, {"dry_run=true", "", 401}, {"dry_run=true", "not-the-token-at-all", 403}} {
		if status, _, body := e.call(t, http.MethodPost, "/api/v1/reload?"+tc.query, tc.token, ""); status != tc.want {
			t.Errorf("reload?%s: %d %s, want %d", tc.query, status, body, tc.want)
		}
	}
}

// A change the store cannot keep (here the state file's directory is gone) is refused with
// 503 and a reason, and is not in effect: a change that is in effect but would be lost on
// restart is what the state file is there to prevent.
func TestAdminChangeRefusedWhenStoreFails(t *testing.T) {
	a, b, c := threeBackends(t)
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	e := startAdmin(t, config(a, b, c, fmt.Sprintf("state: {file: %q}\n", filepath.Join(dir, "state.json"))), true)
	e.must(t, http.MethodPost, "/api/v1/sites/aws/drain", opsToken, "", nil)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ method, path, body string }{
		{http.MethodPut, "/api/v1/sites/idc1/weight", `{"weight": 9}`},
		{http.MethodPost, "/api/v1/sites/aws/undrain", ""},
		{http.MethodPost, "/api/v1/sites/idc2/drain", ""},
	} {
		status, h, body := e.call(t, tc.method, tc.path, opsToken, tc.body)
		if status != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(body, "not applied") {
			t.Errorf("%s %s with the store gone: %d %s, want 503 with Retry-After and a reason", tc.method, tc.path, status, body)
		}
		errorBody(t, tc.path, body, h)
	}
	st := e.state(t)
	if !st.Durable || st.Sites[0].Weight != 5 || !st.Sites[2].Drained || st.Sites[1].Drained {
		t.Errorf("after refused changes: durable %v, idc1 %g, aws drained %v, idc2 drained %v; want true, 5, true, false",
			st.Durable, st.Sites[0].Weight, st.Sites[2].Drained, st.Sites[1].Drained)
	}
	var raw map[string]json.RawMessage
	e.must(t, http.MethodGet, "/api/v1/state", "", "", &raw)
	if string(raw["durable"]) != "true" {
		t.Errorf("state JSON durable = %s", raw["durable"])
	}
}

// The state API's config_hash is the SHA-256 of the file the running generation loaded: it
// follows a reload, and not an edit that was not reloaded.
func TestAdminConfigHash(t *testing.T) {
	a, b, c := threeBackends(t)
	e := startAdmin(t, config(a, b, c, ""), true)
	hashOf := func() string {
		data, err := os.ReadFile(e.path)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("sha256:%x", sha256.Sum256(data))
	}
	first := hashOf()
	if got := e.state(t).ConfigHash; got != first {
		t.Fatalf("config_hash %q, want %q", got, first)
	}
	if err := os.WriteFile(e.path, []byte(config(a, b, c, "spillover: {queue: {size: 9}}\n")), 0o640); err != nil {
		t.Fatal(err)
	}
	if got := e.state(t).ConfigHash; got != first {
		t.Errorf("config_hash %q after an edit not reloaded, want the running file's %q", got, first)
	}
	e.must(t, http.MethodPost, "/api/v1/reload", opsToken, "", nil)
	if got, want := e.state(t).ConfigHash, hashOf(); got != want || got == first {
		t.Errorf("config_hash %q after the reload, want the new file's %q", got, want)
	}
}
