package proxy

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// RequestInfo describes one request the Handler has finished with, for the access log,
// metrics and the live view. A Recorder gets a pointer it must not keep after Record
// returns.
type RequestInfo struct {
	Start    time.Time     `json:"start"` // when the Handler got the request
	Duration time.Duration `json:"-"`     // until the Handler was done with it (JSON: duration_ms)
	ID       string        `json:"request_id"`
	Method   string        `json:"method"`
	Host     string        `json:"host"`
	Path     string        `json:"path"`
	Status   int           `json:"status"`   // sent to the client; 499: the client went away first
	Bytes    int64         `json:"bytes"`    // response body bytes sent (bytes out)
	BytesIn  int64         `json:"bytes_in"` // request body bytes read from the client
	// Client is the address of the client's connection (r.RemoteAddr, host:port).
	Client string `json:"client"`
	// XFF is the X-Forwarded-For chain the request came with ("" without one; several
	// header lines joined with ", "). The backend gets it with the client's address
	// (Client's host) appended; a chain the request named in Connection is hop-by-hop, not
	// passed on, and not logged.
	XFF       string `json:"xff"`
	UserAgent string `json:"user_agent"`
	Proto     string `json:"proto"` // "HTTP/1.1", "HTTP/2.0"
	TLS       string `json:"tls"`   // the client connection's TLS version: "1.3", "1.2"...; "" for plain
	// Site and Backend served the last try; "" when no backend was reached for it.
	Site    string `json:"site"`
	Backend string `json:"backend"`
	// Preferred is the site the split (or affinity) chose; it differs from Site when the
	// request spilled (Spill says why) or was retried elsewhere.
	Preferred string        `json:"preferred"`
	Spill     string        `json:"spill"` // "", "saturated" or "hysteresis"
	Queued    time.Duration `json:"-"`     // time waiting for a free slot (JSON: queued_ms)
	Retries   int           `json:"retries"`
	// Reason is why the request failed, as in the Errors table of the README ("" when
	// it was answered by a backend).
	Reason string `json:"reason"`
	// Chosen is what chose the preferred site: "split", "affinity" (the session key), or
	// "" when none was chosen (no backend up).
	Chosen string `json:"chosen"`
	// NoRetry is why the try that failed was not retried ("" when none failed unretried).
	NoRetry string `json:"no_retry"`

	failure failure // Reason, as the Handler knew it (reasonNone for a RequestInfo made elsewhere)
}

// Shed reports whether the request was refused or abandoned for lack of capacity
// (queue_full, queue_timeout, queue_delay): the live shed rate.
func (i *RequestInfo) Shed() bool { return failures[i.cause()].shed }

// Failed reports whether the request failed for a reason of the proxy or its backends: it
// has a Reason, and the client did not simply go away.
func (i *RequestInfo) Failed() bool { return i.Reason != "" && i.cause() != reasonClientGone }

// cause is the failure of i: the Handler's, or the one Reason names.
func (i *RequestInfo) cause() failure {
	if i.failure != reasonNone || i.Reason == "" {
		return i.failure
	}
	return failureNames[i.Reason] // (a name no failure has: reasonNone)
}

// failureNames maps a failure's name back to it.
var failureNames = func() map[string]failure {
	m := make(map[string]failure, numFailures)
	for f := reasonNone + 1; f < numFailures; f++ {
		m[f.String()] = f
	}
	return m
}()

// MarshalJSON writes the durations in milliseconds, as the access log does.
func (i RequestInfo) MarshalJSON() ([]byte, error) {
	type plain RequestInfo // without this method
	return json.Marshal(struct {
		plain
		DurationMS float64 `json:"duration_ms"`
		QueuedMS   float64 `json:"queued_ms"`
	}{plain(i), float64(i.Duration.Microseconds()) / 1000, float64(i.Queued.Microseconds()) / 1000})
}

// Recorder learns of every finished request. Record is called on the request's goroutine
// once per request, after the response is complete; it must be fast and must not block.
type Recorder interface {
	Record(*RequestInfo)
}

// HandlerOption configures a Handler.
type HandlerOption func(*Handler)

// WithRecorders makes the Handler report every finished request to each of rs.
func WithRecorders(rs ...Recorder) HandlerOption {
	return func(h *Handler) { h.recorders = append(h.recorders, rs...) }
}

// record reports ex to the Handler's recorders.
func (h *Handler) record(t *Table, ex *exchange, r *http.Request) {
	if len(h.recorders) == 0 {
		return
	}
	info := &ex.info
	*info = RequestInfo{Start: ex.start, Duration: time.Since(ex.start), ID: ex.id,
		Method: r.Method, Host: r.Host, Path: r.URL.Path, Status: ex.rw.status, Bytes: ex.rw.bytes,
		Queued: ex.lease.Queued, Reason: ex.reason.String(), failure: ex.reason}
	info.client(r, ex.body)
	if ex.tries > 1 {
		info.Retries = ex.tries - 1
	}
	if b := ex.lease.Backend; b != nil {
		info.Site, info.Backend = b.ID.Site, b.ID.Addr
		if p := ex.lease.Preferred; p >= 0 && p < len(t.sites) {
			info.Preferred = t.sites[p].name
		}
		info.Spill = ex.lease.Spill.String()
	}
	if info.Preferred != "" {
		info.Chosen = "split"
		if ex.affinity {
			info.Chosen = "affinity"
		}
	}
	if ex.reason != reasonNone {
		info.NoRetry = ex.noRetry
	}
	for _, rec := range h.recorders {
		rec.Record(info)
	}
}

// client fills in what the access log says of the client and its connection. It takes
// the strings the request already has: nothing is allocated for a request with at most one
// X-Forwarded-For line.
func (i *RequestInfo) client(r *http.Request, body *requestBody) {
	i.Client, i.Proto = r.RemoteAddr, r.Proto
	if ua := r.Header["User-Agent"]; len(ua) > 0 {
		i.UserAgent = ua[0]
	}
	switch xff := r.Header["X-Forwarded-For"]; {
	case len(xff) == 0 || hasToken(r.Header["Connection"], "X-Forwarded-For"):
	case len(xff) == 1:
		i.XFF = xff[0]
	default:
		i.XFF = strings.Join(xff, ", ") // as ReverseProxy joins them for the backend
	}
	if r.TLS != nil {
		i.TLS = tlsVersion(r.TLS.Version)
	}
	if body != nil {
		i.BytesIn = body.bytesRead()
	}
}

// tlsVersion names a TLS version as the access log does: "1.3", "1.2"...
func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "1.3"
	case tls.VersionTLS12:
		return "1.2"
	case tls.VersionTLS11:
		return "1.1"
	case tls.VersionTLS10:
		return "1.0"
	}
	return tls.VersionName(v) // (one the edge never negotiates)
}
