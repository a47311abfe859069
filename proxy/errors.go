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
)

// errAborted is the Result error of a response the proxy had to break off midway.
var errAborted = errors.New("response aborted after it started")

// errUpstream502 stands for a 502 answered by the backend itself (a proxy behind it could
// not reach its own upstream), turned into an error so that an idempotent request can be
// retried elsewhere. See Table.modifyResponse.
var errUpstream502 = errors.New("backend answered 502 Bad Gateway")

// Failure classes: what went wrong, the status the client gets, and the reason logged.
// This table is the one place errors become statuses.
const (
	reasonNoBackend      = "no_backend"      // 503: no site has a backend up
	reasonQueueFull      = "queue_full"      // 503: every site full and the queue too
	reasonQueueTimeout   = "queue_timeout"   // 503: every site full for spillover.queue.timeout
	reasonQueueDelay     = "queue_delay"     // 503: shed from a congested queue (a quarter of the timeout)
	reasonConnect        = "connect"         // 502: dial refused, unreachable
	reasonBackendTLS     = "backend_tls"     // 502: TLS with the backend failed (certificate, mTLS)
	reasonConnectTimeout = "connect_timeout" // 504: the dial did not finish in time
	reasonTimeout        = "timeout"         // 504: response headers too slow, or a write stalled
	reasonBadGateway     = "bad_gateway"     // 502: reset, closed early, malformed response
	reasonUpstream502    = "upstream_502"    // 502: the backend itself answered 502
	reasonClientGone     = "client_closed"   // client went away; nothing is sent
	reasonClientBody     = "client_body"     // 400: the client's request body broke off
	reasonClientTimeout  = "client_timeout"  // 408: the client was silent inside its body (or stopped reading) for body_idle
	reasonBodyIdle       = "body_idle"       // the backend was silent inside its response for body_idle (cut)
	statusClientClosed   = 499               // logged for reasonClientGone, never sent
)

// backendFailed reports whether a failure of this class counts against the backend for
// passive health.
func backendFailed(reason string) bool {
	switch reason {
	case reasonConnect, reasonBackendTLS, reasonConnectTimeout, reasonTimeout, reasonBadGateway, reasonUpstream502:
		return true
	}
	return false
}

// classify maps an error from picking or forwarding ex's request r to a status and a reason.
func classify(err error, r *http.Request, ex *exchange) (int, string) {
	var ne net.Error
	var op *net.OpError
	dial := errors.As(err, &op) && op.Op == "dial"
	body := ex.body
	switch cut := ex.clock.cut(); {
	case cut == errClientIdle:
		return http.StatusRequestTimeout, reasonClientTimeout
	case cut == errHeaderDeadline:
		return http.StatusGatewayTimeout, reasonTimeout
	}
	switch {
	case errors.Is(err, balancer.ErrNoBackend):
		return http.StatusServiceUnavailable, reasonNoBackend
	case errors.Is(err, balancer.ErrQueueTimeout):
		return http.StatusServiceUnavailable, reasonQueueTimeout
	case errors.Is(err, balancer.ErrQueueDelay):
		return http.StatusServiceUnavailable, reasonQueueDelay
	case errors.Is(err, balancer.ErrSaturated):
		return http.StatusServiceUnavailable, reasonQueueFull
	case body != nil && (isFrameError(body.clientErr()) || edgeConnOf(r) != nil && edgeConnOf(r).malformedBody()):
		// Before the client-gone check: net/http cancels the request's context when a
		// read from the connection fails, and the edge fails the read of a malformed
		// chunked body; the client is still there to get its 400.
		return http.StatusBadRequest, reasonClientBody
	case r.Context().Err() != nil:
		return statusClientClosed, reasonClientGone
	case body != nil && body.clientErr() != nil:
		return http.StatusBadRequest, reasonClientBody
	case errors.Is(err, errUpstream502):
		return http.StatusBadGateway, reasonUpstream502
	case dial && op.Timeout():
		return http.StatusGatewayTimeout, reasonConnectTimeout
	case isTLSHandshakeError(err):
		return http.StatusBadGateway, reasonBackendTLS
	case dial:
		return http.StatusBadGateway, reasonConnect
	case errors.As(err, &ne) && ne.Timeout():
		return http.StatusGatewayTimeout, reasonTimeout
	default:
		return http.StatusBadGateway, reasonBadGateway
	}
}

// isFrameError reports whether err is the edge's refusal of a malformed message.
func isFrameError(err error) bool {
	var fe *frameError
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

func logFailure(log *zap.Logger, ex *exchange, r *http.Request, status int, reason string, err error) {
	level := zap.WarnLevel
	if reason == reasonClientGone || reason == reasonClientBody {
		level = zap.DebugLevel // the client's doing, not an incident
	}
	if ce := log.Check(level, "request failed"); ce != nil {
		ce.Write(append(ex.logFields(r, status, reason), zap.Error(err))...)
	}
}

// logFields describe a request in every log line about it. Call it only for an entry that
// will be written: it allocates.
func (ex *exchange) logFields(r *http.Request, status int, reason string) []zap.Field {
	backend := ""
	if ex.lease.Backend != nil {
		backend = ex.lease.Backend.ID.Addr
	}
	return []zap.Field{zap.String("request_id", ex.id), zap.String("method", r.Method),
		zap.String("host", r.Host), zap.String("path", r.URL.Path),
		zap.String("site", ex.site), zap.String("backend", backend),
		zap.Int("status", status), zap.String("reason", reason)}
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
