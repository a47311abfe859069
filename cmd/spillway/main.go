// Command spillway is the Spillway reverse proxy: run it on a config, validate a config, or
// see it work at once with the demo.
//
//	spillway run -config FILE
//	spillway validate FILE
//	spillway demo [-load] [-rate N] [-duration D] [-listen ADDR]
//	spillway bench [-scenario NAME|all] [-duration D] [-out DIR] [-short]
//	spillway bench -target URL [-admin URL -token-file F] [-scenario steady,spike,ramp,soak] [-rate N]
//	spillway version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal starts a graceful stop; then the default handling comes back, so a
	// second Ctrl-C ends the process at once.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitError carries the process exit status of a command that has already said why.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func exitCode(err error, stderr io.Writer) int {
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	default:
		fmt.Fprintln(stderr, "spillway:", err)
		return 1
	}
}

const usage = `usage:
  spillway run -config FILE      run the proxy (SIGTERM/SIGINT: graceful stop)
  spillway validate FILE         check a config; every problem as file:line:col
  spillway demo [flags]          simulated sites on loopback and the proxy on them
                                 (-load drives traffic and prints the split each second)
  spillway bench [flags]         the bench suite: scenarios on loopback, a report with
                                 charts and a verdict each (-short: briefly; exit 3 when
                                 a verdict fails); -target URL: against a deployment
  spillway version               the version, revision and Go version of this build
`

// run is the whole program, with its environment passed in so that tests can drive it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError{2}
	}
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], stderr)
	case "validate":
		return cmdValidate(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(ctx, args[1:], stdout, stderr)
	case "bench":
		return cmdBench(ctx, args[1:], stdout, stderr)
	case "version", "-version", "--version":
		return cmdVersion(stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "spillway: unknown command %q\n%s", args[0], usage)
		return exitError{2}
	}
}
