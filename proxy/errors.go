package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"

	"go.uber.org/zap"

	"github.com/spillway/spillway/balancer"
)

// errAborted is the Result error of a response the proxy had to break off midway.
var errAborted = errors.New("response aborted after it started")

// Failure classes: what went wrong, the status the client gets, and the reason logged.
// This table is the one place errors become statuses.
const (
	reasonNoBackend    = "no_backend"    // 503: no site has a backend up
	reasonConnect      = "connect"       // 502: dial refused, unreachable, TLS handshake
	reasonTimeout      = "timeout"       // 504: connect or response headers too slow
	reasonBadGateway   = "bad_gateway"   // 502: reset, closed early, malformed response
	reasonClientGone   = "client_closed" // client went away; nothing is sent
	reasonClientBody   = "client_body"   // 400: the client's request body broke off
	statusClientClosed = 499             // logged for reasonClientGone, never sent
)

// classify maps an error from picking or forwarding to a status and a reason.
func classify(err error, r *http.Request, body *bodyReader) (int, string) {
	var ne net.Error
	var op *net.OpError
	switch {
	case errors.Is(err, balancer.ErrNoBackend):
		return http.StatusServiceUnavailable, reasonNoBackend
	case r.Context().Err() != nil:
		return statusClientClosed, reasonClientGone
	case body != nil && body.err != nil:
		return http.StatusBadRequest, reasonClientBody
	case errors.As(err, &ne) && ne.Timeout():
		return http.StatusGatewayTimeout, reasonTimeout
	case errors.As(err, &op) && op.Op == "dial", isTLSHandshakeError(err):
		return http.StatusBadGateway, reasonConnect
	default:
		return http.StatusBadGateway, reasonBadGateway
	}
}

// isTLSHandshakeError reports whether err is a failed TLS handshake with a backend: the
// request never reached it.
func isTLSHandshakeError(err error) bool {
	var verify *tls.CertificateVerificationError
	var record tls.RecordHeaderError
	var alert tls.AlertError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verify) || errors.As(err, &record) || errors.As(err, &alert) ||
		errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid)
}

// fail answers a request that got no backend.
func (h *Handler) fail(ex *exchange, r *http.Request, err error) {
	status, reason := classify(err, r, ex.body)
	logFailure(h.log, ex, r, status, reason, err)
	ex.rw.Header().Set("Retry-After", "1")
	writeError(&ex.rw, ex.id, status, http.StatusText(status))
}

// backendError is every forwarder's ErrorHandler: the backend could not be reached or did
// not answer properly, before any of its response reached the client.
func backendError(log *zap.Logger, w http.ResponseWriter, r *http.Request, err error) {
	rw, ok := w.(*responseWriter)
	if !ok { // a forwarder is only ever called by Handler; keep a sane answer regardless
		rw = &responseWriter{ResponseWriter: w, ex: &exchange{}}
	}
	ex := rw.ex
	rw.err = err
	status, reason := classify(err, r, ex.body)
	logFailure(log, ex, r, status, reason, err)
	if reason == reasonClientGone {
		rw.status = statusClientClosed
		return
	}
	writeError(rw, ex.id, status, http.StatusText(status))
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

// writeError sends a short plain-text error.
func writeError(w *responseWriter, id string, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(msg)+1))
	h.Set(headerRequestID, id)
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}

// bodyReader remembers whether reading the client's body failed, so that a broken upload
// is blamed on the client (400) and not on the backend (502).
type bodyReader struct {
	io.ReadCloser
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && !errors.Is(err, context.Canceled) {
		b.err = err
	}
	return n, err
}
