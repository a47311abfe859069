package main

// Review of issue 14 through `spillway run`: a restart while a persisted ramp is in progress.

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// BUG: PUT weight?persist=true with a ramp writes the weight to the file and keeps an
// override (persisted) that the ramp goroutine drops when the ramp ends. Stop the proxy
// during the ramp and start it after the ramp's end: restore puts the override in effect with
// no ramp goroutine (proxy/controls.go:171-181 starts one only while now < End), so nothing
// ever drops it — every later edit of idc1's weight in the file is hidden by an override the
// state API shows as set by the operator an hour ago. Fix: restore drops a Persisted override
// whose ramp is over (the file has its weight), with a clear_weight entry.
func TestReview14RunRestartAfterPersistedRamp(t *testing.T) {
	t.Setenv("SPILLWAY_ADMIN_TOKEN", opsToken)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer backend.Close()
	path := opsWriteConfig(t, opsConfig(backend.URL, 5, 3, "state: {file: state.json}\n"))

	first := startRun(t, path)
	status, body := first.call(http.MethodPut, first.admin+"/api/v1/sites/idc1/weight?persist=true", opsToken, `{"weight": 9, "ramp": "1s"}`)
	if status != http.StatusOK {
		t.Fatalf("PUT persist with a ramp: %d %s", status, body)
	}
	first.cancel()
	<-first.done
	first.done <- nil // for the first run's cleanup
	if data, _ := os.ReadFile(path); !strings.Contains(string(data), "weight: 9") {
		t.Fatalf("config file after persist:\n%s", data)
	}
	time.Sleep(1500 * time.Millisecond) // the ramp ends while the proxy is down

	second := startRun(t, path)
	for _, s := range second.state(t).Sites {
		if s.Name == "idc1" && s.Override != nil {
			t.Errorf("idc1 after the restart still has an override %+v, though its persisted ramp is over and the file has 9", s.Override)
		}
	}
	data, _ := os.ReadFile(path)
	if err := os.WriteFile(path, []byte(strings.Replace(string(data), "weight: 9", "weight: 4", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if status, body := second.call(http.MethodPost, second.admin+"/api/v1/reload", opsToken, ""); status != http.StatusOK {
		t.Fatalf("reload: %d %s", status, body)
	}
	for _, s := range second.state(t).Sites {
		if s.Name == "idc1" && s.Weight != 4 {
			t.Errorf("idc1 weight %g after the file set 4 and a reload: the finished persisted ramp's override still wins", s.Weight)
		}
	}
}
