package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/spillway/spillway/balancer"
	"github.com/spillway/spillway/proxy/framing"
	"github.com/spillway/spillway/proxy/frontend"
)

// errAborted is the Result error of a response the proxy had to break off midway.
var errAborted = errors.New("response aborted after it started")

// errUpstream502 stands for a 502 answered by the backend itself (a proxy behind it could
// not reach its own upstream), turned into an error so that an idempotent request can be
// retried elsewhere. See Table.modifyResponse.
var errUpstream502 = errors.New("backend answered 502 Bad Gateway")

// failure is why a request, or one try of it, failed: a row of failures, the one table of
// what each failure means. The zero value, reasonNone, is a try that was answered.
type failure uint8

const (
	reasonNone           failure = iota
	reasonNoBackend              // no site has a backend up
	reasonQueueFull              // every site full and the queue too
	reasonQueueTimeout           // every site full for spillover.queue.timeout
	reasonQueueDelay             // shed from a congested queue (a quarter of the timeout)
	reasonConnect                // dial refused, unreachable
	reasonBackendTLS             // TLS with the backend failed (certificate, mTLS)
	reasonConnectTimeout         // the dial did not finish in time
	reasonTimeout                // response headers too slow, or a write stalled
	reasonBadGateway             // reset, closed early, malformed response
	reasonUpstream502            // the backend itself answered 502
	reasonClientGone             // the client went away; nothing is sent
	reasonClientBody             // the client's request body broke off
	reasonClientTimeout          // the client was silent inside its body (or stopped reading) for body_idle
	reasonBodyIdle               // the backend was silent inside its response for body_idle (cut)
	reasonBackendAborted         // the backend broke off its response after it started
	numFailures
)

const statusClientClosed = 499 // logged for reasonClientGone, never sent

// failures is what each failure means. This table is the one place errors become statuses,
// and the one place that says which failures count against a backend, may be retried, or
// are the client's doing.
var failures = [numFailures]struct {
	name   string // logged, counted and in the access log (the README's Errors table)
	status int    // for the client; statusClientClosed: nothing is sent; 0: the answer had started
	// backend: the failure counts against the try's backend for passive health.
	backend bool
	// retryable: another try elsewhere may succeed (within the retry policy).
	retryable bool
	// client: the client's own doing, never retried.
	client bool
	// quiet: says nothing about the backend either way (passive health does not hear of
	// the try) and is no incident (logged at debug level).
	quiet bool
	// shed: refused for lack of capacity (the live shed rate).
	shed bool
}{
	reasonNone:           {},
	reasonNoBackend:      {name: "no_backend", status: http.StatusServiceUnavailable},
	reasonQueueFull:      {name: "queue_full", status: http.StatusServiceUnavailable, shed: true},
	reasonQueueTimeout:   {name: "queue_timeout", status: http.StatusServiceUnavailable, shed: true},
	reasonQueueDelay:     {name: "queue_delay", status: http.StatusServiceUnavailable, shed: true},
	reasonConnect:        {name: "connect", status: http.StatusBadGateway, backend: true, retryable: true},
	reasonBackendTLS:     {name: "backend_tls", status: http.StatusBadGateway, backend: true, retryable: true},
	reasonConnectTimeout: {name: "connect_timeout", status: http.StatusGatewayTimeout, backend: true, retryable: true},
	reasonTimeout:        {name: "timeout", status: http.StatusGatewayTimeout, backend: true, retryable: true},
	reasonBadGateway:     {name: "bad_gateway", status: http.StatusBadGateway, backend: true, retryable: true},
	reasonUpstream502:    {name: "upstream_502", status: http.StatusBadGateway, backend: true, retryable: true},
	reasonClientGone:     {name: "client_closed", status: statusClientClosed, client: true, quiet: true},
	reasonClientBody:     {name: "client_body", status: http.StatusBadRequest, client: true, quiet: true},
	reasonClientTimeout:  {name: "client_timeout", status: http.StatusRequestTimeout, client: true},
	reasonBodyIdle:       {name: "body_idle"},
	reasonBackendAborted: {name: "backend_aborted"},
}

func (f failure) String() string { return failures[f].name }

// backendFailed reports whether a failure of this class counts against the backend for
// passive health.
func backendFailed(f failure) bool { return failures[f].backend }

// classified is f with the status the client gets for it, for classify.
func classified(f failure) (int, failure) { return failures[f].status, f }

// classify maps an error from picking or forwarding ex's request r to a status and a reason.
func classify(err error, r *http.Request, ex *exchange) (int, failure) {
	var ne net.Error
	var op *net.OpError
	dial := errors.As(err, &op) && op.Op == "dial"
	body := ex.body
	switch cut := ex.clock.cut(); {
	case cut == errClientIdle:
		return classified(reasonClientTimeout)
	case cut == errHeaderDeadline:
		return classified(reasonTimeout)
	}
	switch {
	case errors.Is(err, balancer.ErrNoBackend):
		return classified(reasonNoBackend)
	case errors.Is(err, balancer.ErrQueueTimeout):
		return classified(reasonQueueTimeout)
	case errors.Is(err, balancer.ErrQueueDelay):
		return classified(reasonQueueDelay)
	case errors.Is(err, balancer.ErrSaturated):
		return classified(reasonQueueFull)
	case body != nil && (isFrameError(body.clientErr()) || frontend.ConnOf(r) != nil && frontend.ConnOf(r).MalformedBody()):
		// Before the client-gone check: net/http cancels the request's context when a
		// read from the connection fails, and the edge fails the read of a malformed
		// chunked body; the client is still there to get its 400.
		return classified(reasonClientBody)
	case r.Context().Err() != nil:
		return classified(reasonClientGone)
	case body != nil && body.clientErr() != nil:
		return classified(reasonClientBody)
	case errors.Is(err, errUpstream502):
		return classified(reasonUpstream502)
	case dial && op.Timeout():
		return classified(reasonConnectTimeout)
	case isTLSHandshakeError(err):
		return classified(reasonBackendTLS)
	case dial:
		return classified(reasonConnect)
	case errors.As(err, &ne) && ne.Timeout():
		return classified(reasonTimeout)
	default:
		return classified(reasonBadGateway)
	}
}

// isFrameError reports whether err is the edge's refusal of a malformed message.
func isFrameError(err error) bool {
	var fe *framing.Error
	return errors.As(err, &fe)
}

// isTLSHandshakeError reports whether err looks like a failed TLS handshake with a backend,
// for the status and the logged reason only. Whether a retry is safe is not judged from
// error types (a TLS record error can also come after the request was sent) but from
// whether a connection was made (exchange.conns).
func isTLSHandshakeError(err error) bool {
	var verify *tls.CertificateVerificationError
	var record tls.RecordHeaderError
	var alert tls.AlertError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	// A TLS alert from the backend, such as "certificate required" when it wants a client
	// certificate (with TLS 1.3 that comes after the client's side of the handshake).
	var op *net.OpError
	remoteAlert := errors.As(err, &op) && op.Op == "remote error"
	return errors.As(err, &verify) || errors.As(err, &record) || errors.As(err, &alert) ||
		errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid) || remoteAlert
}

// fail answers a request that could not be served: logs it once and sends the error,
// unless the client has gone.
func (h *Handler) fail(ex *exchange, r *http.Request, err error) {
	status, reason := classify(err, r, ex)
	ex.reason = reason
	logFailure(h.log, ex, r, status, reason, err)
	if reason == reasonClientGone || ex.rw.hijacked {
		if ex.rw.status == 0 {
			ex.rw.status = statusClientClosed
		}
		return
	}
	retryAfter := 0
	if status == http.StatusServiceUnavailable {
		// For a shed, when the queue should have drained (balancer: Picker.RetryAfter);
		// with no backend up there is nothing to estimate.
		d := time.Second
		if reason != reasonNoBackend {
			d = h.table.Load().bal.RetryAfter()
		}
		retryAfter = int(d / time.Second)
		ex.rw.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	}
	if status == http.StatusRequestTimeout {
		ex.rw.Header().Set("Connection", "close") // the rest of its body may still come
	}
	writeError(&ex.rw, r, ex.id, status, http.StatusText(status), retryAfter)
}

// recordError is every forwarder's ErrorHandler: the backend could not be reached or did not
// answer properly, and nothing of its response reached the client. It only records the
// error; the Handler decides whether to try elsewhere or answer the client.
func recordError(w http.ResponseWriter, r *http.Request, err error) {
	if rw, ok := w.(*responseWriter); ok {
		rw.err = err
		return
	}
	// A forwarder is only ever called by Handler; keep a sane answer regardless.
	http.Error(w, http.StatusText(http.StatusBadGateway), http.StatusBadGateway)
}

func logFailure(log *zap.Logger, ex *exchange, r *http.Request, status int, reason failure, err error) {
	level := zap.WarnLevel
	if failures[reason].quiet {
		level = zap.DebugLevel // the client's doing, not an incident
	}
	if ce := log.Check(level, "request failed"); ce != nil {
		ce.Write(append(ex.logFields(r, status, reason), zap.Error(err))...)
	}
}

// logFields describe a request in every log line about it. Call it only for an entry that
// will be written: it allocates.
func (ex *exchange) logFields(r *http.Request, status int, reason failure) []zap.Field {
	backend := ""
	if ex.lease.Backend != nil {
		backend = ex.lease.Backend.ID.Addr
	}
	return []zap.Field{zap.String("request_id", ex.id), zap.String("method", r.Method),
		zap.String("host", r.Host), zap.String("path", r.URL.Path),
		zap.String("site", ex.site), zap.String("backend", backend),
		zap.Int("status", status), zap.String("reason", reason.String())}
}

// writeError sends the proxy's own error answer: JSON ({"error", "request_id", and
// "retry_after" in seconds when there is one}) for a client that accepts JSON, else two
// lines of plain text, the error and the request ID. Either way the ID is in the body and
// in X-Request-Id, so that a customer's screenshot finds the request in the logs.
func writeError(w *responseWriter, r *http.Request, id string, status int, msg string, retryAfter int) {
	var body []byte
	h := w.Header()
	if acceptsJSON(r) {
		h.Set("Content-Type", "application/json")
		e := errorBody{Error: msg, RequestID: id, RetryAfter: retryAfter}
		body, _ = json.Marshal(e)
		body = append(body, '\n')
	} else {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		body = []byte(msg + "\nrequest_id: " + id + "\n")
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set(headerRequestID, id)
	w.WriteHeader(status)
	w.Write(body)
}

// errorBody is the JSON form of the proxy's own errors.
type errorBody struct {
	Error      string `json:"error"`
	RequestID  string `json:"request_id"`
	RetryAfter int    `json:"retry_after,omitempty"` // seconds, as the Retry-After header
}

// acceptsJSON reports whether the client lists a JSON media type in Accept
// (application/json, application/problem+json, ...).
func acceptsJSON(r *http.Request) bool {
	for _, v := range r.Header["Accept"] {
		for t := range strings.SplitSeq(v, ",") {
			t, _, _ = strings.Cut(t, ";")
			t = strings.ToLower(strings.TrimSpace(t))
			if t == "application/json" || strings.HasSuffix(t, "+json") {
				return true
			}
		}
	}
	return false
}
