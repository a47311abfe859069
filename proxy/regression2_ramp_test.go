package proxy_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/runtime"
)

// Regression (found by review): a persisted weight with a ramp keeps its override until the ramp ends, then the
// ramp goroutine drops it (reload.go startRamp: over && o.persisted) without putting the
// configured weight back. If the file's weight was edited meanwhile (and reloaded), the
// edit is shown as configured_weight but never applied: the picker keeps the ramp's target.
func TestRegressionPersistedRampEndIgnoresLaterFileEdit(t *testing.T) {
	a, b, c := nameBackend(t, "idc1"), nameBackend(t, "idc2"), nameBackend(t, "aws")
	clock := newTestClock()
	e := startReloader(t, threeSites(a.URL, b.URL, c.URL, 5, 3, 2, ""), runtime.ReloaderOptions{Now: clock.Now})
	if err := e.r.SetWeight("idc1", 8, 10*time.Second, "alice", true); err != nil {
		t.Fatal(err)
	}
	// The operator then edits the file: idc1 weight 2, and it is reloaded.
	e.write(t, threeSites(a.URL, b.URL, c.URL, 2, 3, 2, ""))
	if err := e.r.Reload("file", false); err != nil {
		t.Fatal(err)
	}
	clock.advance(11 * time.Second)
	waitFor(t, "the override to go at the ramp's end", func() bool { return e.site(t, "idc1").Override == nil })
	s := e.site(t, "idc1")
	if s.Weight != float64(s.ConfiguredWeight) {
		t.Fatalf("after the ramp: weight in effect %g, configured %d (the file's edit is not applied)", s.Weight, s.ConfiguredWeight)
	}
}

// persist=true only rewrites the file the running config came from: an edit made since (not
// loaded yet) is refused rather than carried along under a "weight" entry, or overwritten.
func TestRegressionPersistRefusesAnUnloadedEdit(t *testing.T) {
	a, b, c := nameBackend(t, "idc1"), nameBackend(t, "idc2"), nameBackend(t, "aws")
	e := startReloader(t, threeSites(a.URL, b.URL, c.URL, 5, 3, 2, ""), runtime.ReloaderOptions{})
	edited := threeSites(a.URL, b.URL, c.URL, 5, 4, 2, "")
	e.write(t, edited) // saved, not reloaded yet
	err := e.r.SetWeight("idc1", 9, 0, "alice", true)
	if !errors.Is(err, runtime.ErrInvalid) {
		t.Fatalf("persist over an unloaded edit: %v, want ErrInvalid", err)
	}
	if got, _ := os.ReadFile(e.path); string(got) != edited {
		t.Error("the operator's edit was overwritten")
	}
	if s := e.site(t, "idc1"); s.Weight != 5 || s.Override != nil {
		t.Errorf("idc1 changed by a refused persist: weight %g, override %+v", s.Weight, s.Override)
	}
}
