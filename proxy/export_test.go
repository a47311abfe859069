package proxy

// What the external tests (package proxy_test) need of the package's internals.

// The benchmarks' backend and load, for BenchmarkProxySpillwayOperated: it wires the
// telemetry, which this package cannot import.
var (
	BenchBackend = benchBackend
	BenchGet     = benchGet
)

// LockReloader holds r's lock until unlock is called: a reload or an operator's change
// would hold it that long.
func LockReloader(r *Reloader) (unlock func()) {
	r.mu.Lock()
	return r.mu.Unlock
}
