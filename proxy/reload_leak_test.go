package proxy_test

import (
	goruntime "runtime"
	"testing"
	"weak"

	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/runtime"
)

// TestReloadsLeaveOldTablesCollectable pins issue 13's leak: every reload kept the
// previous generation reachable (the new Table held Deps.Previous, and the routes whose
// transports it inherited, whose forwarders hold the old Table), so no replaced Table was
// ever collected (199 of 199 stayed reachable) and a proxy reloaded by automation grew
// without bound. After reloads under traffic, the old Tables must be garbage.
func TestReloadsLeaveOldTablesCollectable(t *testing.T) {
	b := nameBackend(t, "idc1")
	e := startReloader(t, configYAML([]site{{"idc1", 1, []string{b.URL}}}, ""), runtime.ReloaderOptions{})
	const reloads = 20
	var old []weak.Pointer[proxy.Table]
	for i := range reloads {
		e.mustGet(t, "/")
		old = append(old, weak.Make(e.r.Handler().Table()))
		// A changed file each time (a weight), so that every reload builds a new Table.
		e.write(t, configYAML([]site{{"idc1", 2 + i, []string{b.URL}}}, ""))
		if err := e.r.Reload("test", true); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
	}
	e.mustGet(t, "/")
	e.client.CloseIdleConnections()
	alive := 0
	for range 3 { // finalizers and weak pointers settle over a couple of cycles
		goruntime.GC()
	}
	for _, w := range old {
		if w.Value() != nil {
			alive++
		}
	}
	// The Table just replaced may still be held for a moment by a connection's last
	// request; every earlier one must be gone.
	if alive > 1 {
		t.Errorf("%d of %d replaced Tables still reachable after %d reloads (want at most 1)", alive, reloads, reloads)
	}
}
