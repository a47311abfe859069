package proxy

// What the external tests (package proxy_test) need of the package's internals.

// The benchmarks' backend and load, for BenchmarkProxySpillwayOperated: it wires the
// telemetry, which this package cannot import.
var (
	BenchBackend = benchBackend
	BenchGet     = benchGet
)
