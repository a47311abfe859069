// Package runtime runs Spillway's configuration: the Reloader owns the generations (load,
// validate, Build, start, swap, stop the old one), the long-lived state they share (the
// balancer's Registry, passive health), the operators' runtime changes (weights with
// ramps, drains) with their audit trail in a store, and each generation's background work
// (active health checks, discovery: RunTable). It is where a config file becomes the
// running proxy, and where telemetry, the admin API and the fleet plug in.
package runtime
