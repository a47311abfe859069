package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// version may be set at link time (-ldflags "-X main.version=v1.4.0"); otherwise it comes
// from the module's build info (a tagged `go install`), else "(devel)".
var version string

// buildInfo is what the binary knows of itself.
type buildInfo struct {
	Version   string // v1.4.0, or (devel)
	Revision  string // the VCS revision, "+dirty" when built from a modified tree; "unknown" without VCS info
	GoVersion string
	Platform  string // GOOS/GOARCH
}

func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Revision: "unknown", GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if ok && b.Version == "" && bi.Main.Version != "" {
		b.Version = bi.Main.Version
	}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	if ok {
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if dirty && b.Revision != "unknown" {
			b.Revision += "+dirty"
		}
	}
	return b
}

// cmdVersion prints the version, revision, Go version and platform.
func cmdVersion(stdout io.Writer) error {
	b := readBuildInfo()
	fmt.Fprintf(stdout, "spillway %s (revision %s, %s, %s)\n", b.Version, b.Revision, b.GoVersion, b.Platform)
	return nil
}

// registerBuildInfo exports spillway_build_info{version,revision,goversion} 1, so that a
// dashboard or the bench suite can tell which build answers.
func registerBuildInfo(reg prometheus.Registerer) {
	b := readBuildInfo()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "spillway_build_info",
		Help:        "Always 1; the labels say which build of Spillway this is.",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion}})
	g.Set(1)
	reg.MustRegister(g)
}
