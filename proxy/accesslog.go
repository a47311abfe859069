package proxy

import "github.com/spillway/spillway/configs"

// AccessLog is the access log as a Reloader drives it (config: access_log): configured
// from every config loaded, reopened for logrotate, closed with the Reloader. It is also a
// Recorder of the requests it writes. telemetry.AccessLog is the one Spillway has.
type AccessLog interface {
	Recorder
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

// noAccessLog is the access log of a Reloader given none: it writes nothing.
type noAccessLog struct{}

func (noAccessLog) Record(*RequestInfo) {}

func (noAccessLog) Prepare(*configs.Config) (commit, discard func(), err error) {
	return func() {}, func() {}, nil
}

func (noAccessLog) Reopen() (string, error) { return "", nil }
func (noAccessLog) Close()                  {}
