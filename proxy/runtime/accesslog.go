package runtime

import (
	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/telemetry"
)

// AccessLog is the access log as a Reloader drives it (config: access_log): configured
// from every config loaded, reopened for logrotate, closed with the Reloader. It is also a
// Recorder of the requests it writes. telemetry.AccessLog is the one Spillway has (the default).
type AccessLog interface {
	proxy.Recorder
	// Prepare opens what cfg's access_log needs without changing what is written, so that
	// an output that cannot be opened refuses the config (a configs.Errors) before
	// anything else has changed. The caller then calls exactly one of commit (cfg is
	// served: its output and sampling are what is written from now on) and discard (cfg
	// was refused after all: what Prepare opened is closed).
	Prepare(cfg *configs.Config) (commit, discard func(), err error)
	// Reopen closes the output file and opens it again at the same path, and returns that
	// path ("" and nothing done when the output is not a file).
	Reopen() (path string, err error)
	// Close flushes and closes the output.
	Close()
}

var (
	_ AccessLog = (*telemetry.AccessLog)(nil)
	_ Live      = (*telemetry.Live)(nil)
)
