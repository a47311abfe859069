// Package telemetry is what Spillway tells of the traffic it serves: the metrics, the live
// counts of the state API and dashboard, the access log, and the recent requests that
// explain where one went. It learns of requests as a proxy.Recorder and reads the rest
// from a Source; it never changes what the proxy does.
package telemetry
