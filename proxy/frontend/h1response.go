package frontend

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// h1exchange is one request on an HTTP/1.1 connection and its answer: the Request, its
// body, and the ResponseWriter, in one allocation.
type h1exchange struct {
	c       *h1conn
	req     http.Request
	ctx     context.Context
	cancel  context.CancelFunc
	body    h1body
	w       h1writer
	badBody atomic.Bool // the body broke the framing rules
}

// h1writer is the handler's http.ResponseWriter. Like net/http's, it writes the head when
// the body starts (or on Flush, or when the handler is done), chunks a body of unknown
// length (or, for HTTP/1.0, ends it with the connection), sends trailers, and supports
// Flush, Hijack, 1xx answers and the deadlines of http.ResponseController.
type h1writer struct {
	x      *h1exchange
	header http.Header
	status int // 0 until WriteHeader
	// headMu orders the head (and 1xx answers) with a 100 Continue sent by a body read on
	// another goroutine; committed is set once the final head is written.
	headMu    sync.Mutex
	committed atomic.Bool
	sentCont  bool // a 100 Continue went out
	chunked   bool
	noBody    bool  // HEAD, 1xx, 204, 304: body bytes are dropped
	length    int64 // the Content-Length the head declared; -1: none
	written   int64 // body bytes written
	pending   []byte
	close     bool // the connection closes after this answer
	hijacked  bool
	deadlines bool // the handler set a connection deadline: the connection is spent
	overrun   bool // the handler wrote past its Content-Length
	// useMu orders the handler's calls with the end of the exchange: once over, the
	// connection (and its buffers) may serve another request, and a call from a goroutine
	// the handler left behind fails instead of writing into another answer.
	useMu sync.Mutex
	over  bool
}

var errAfterReturn = errors.New("http: ResponseWriter used after the handler returned")

// pendingMax is how much body a handler may write before the head must go; a handler
// that writes no more, with no Content-Length and no Flush, gets one computed for it.
const pendingMax = 2048

func (w *h1writer) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 8)
	}
	return w.header
}

func (w *h1writer) WriteHeader(code int) {
	w.useMu.Lock()
	defer w.useMu.Unlock()
	if !w.over {
		w.writeHeader(code)
	}
}

func (w *h1writer) writeHeader(code int) {
	if w.hijacked || w.status != 0 {
		return
	}
	if code < 100 || code > 999 {
		panic("invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.informational(code)
		return
	}
	w.status = code
}

// informational sends a 1xx answer at once, with the header as it is.
func (w *h1writer) informational(code int) {
	w.headMu.Lock()
	defer w.headMu.Unlock()
	bw := w.x.c.writer()
	writeStatusLine(bw, w.x.req.ProtoMinor, code)
	h := w.header
	if h["Content-Length"] != nil || h["Transfer-Encoding"] != nil {
		// (A 1xx has no body: a lenient reader must not take the final answer for one.)
		h = h.Clone()
		delete(h, "Content-Length")
		delete(h, "Transfer-Encoding")
	}
	writeFields(bw, h, false)
	bw.WriteString("\r\n")
	bw.Flush()
}

// sendContinue answers "Expect: 100-continue" when the handler first reads the body,
// unless the final answer has started.
func (w *h1writer) sendContinue() {
	w.headMu.Lock()
	defer w.headMu.Unlock()
	if w.committed.Load() || w.hijacked {
		return
	}
	w.sentCont = true
	bw := w.x.c.writer()
	bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	bw.Flush()
}

func (w *h1writer) Write(p []byte) (int, error) {
	w.useMu.Lock()
	defer w.useMu.Unlock()
	if w.over {
		return 0, errAfterReturn
	}
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if w.status == 0 {
		w.writeHeader(http.StatusOK)
	}
	if !w.committed.Load() {
		if !w.lengthKnown() && len(w.pending)+len(p) <= pendingMax {
			w.pending = append(w.pending, p...)
			return len(p), nil
		}
		w.commit(false, p)
	}
	return w.body(p)
}

// lengthKnown reports whether the answer's length is set before its body: a
// Content-Length, or no body at all. (A HEAD's answer gets the length of what its handler
// writes, as a GET's would, when that is small.)
func (w *h1writer) lengthKnown() bool {
	return w.header["Content-Length"] != nil || !bodyAllowed(w.status)
}

// body writes body bytes after the head: chunked, or as they are up to the declared
// length.
func (w *h1writer) body(p []byte) (int, error) {
	if w.noBody {
		if !bodyAllowed(w.status) {
			return 0, http.ErrBodyNotAllowed
		}
		return len(p), nil // a HEAD's: counted, not sent
	}
	if len(p) == 0 {
		return 0, nil
	}
	bw := w.x.c.bw
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		w.overrun = true // (refused whole, as net/http does; the connection then closes)
		return 0, http.ErrContentLength
	}
	if w.chunked {
		bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		bw.WriteString("\r\n")
	}
	n, err := bw.Write(p)
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	w.written += int64(n)
	return n, err
}

// commit writes the final head. finishing: the handler is done, and pending is the whole
// body, whose length the head can then give. first is the body's first bytes, if known
// (pending, or the write that commits): without a Content-Type, the type is sniffed
// from them, as net/http does.
func (w *h1writer) commit(finishing bool, first []byte) {
	w.headMu.Lock()
	defer w.headMu.Unlock()
	w.committed.Store(true)
	x := w.x
	req := &x.req
	h := w.Header()
	status := w.status
	w.length = -1
	w.noBody = req.Method == http.MethodHead || !bodyAllowed(status)
	if !bodyAllowed(status) {
		delete(h, "Transfer-Encoding")
		delete(h, "Content-Length")
		if status == http.StatusNotModified {
			delete(h, "Content-Type")
		}
	} else if cl := h["Content-Length"]; len(cl) > 0 {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n >= 0 {
			w.length = n
		} else {
			delete(h, "Content-Length") // (net/http drops an invalid one too)
		}
	} else if finishing && !hasTrailers(h) && (req.Method != http.MethodHead || len(w.pending) > 0) {
		w.length = int64(len(w.pending))
		h["Content-Length"] = []string{strconv.Itoa(len(w.pending))}
	}
	delete(h, "Transfer-Encoding")
	if len(w.pending) > 0 {
		first = w.pending
	}
	if _, typed := h["Content-Type"]; !typed && len(first) > 0 && bodyAllowed(status) && h.Get("Content-Encoding") == "" {
		h["Content-Type"] = []string{http.DetectContentType(first)}
	}
	w.chunked = !w.noBody && w.length < 0 && req.ProtoMinor == 1
	w.close = w.close || req.Close || w.x.c.s.shutting.Load() ||
		httpguts.HeaderValuesContainsToken(h["Connection"], "close") ||
		!w.noBody && w.length < 0 && !w.chunked || // (HTTP/1.0: the body ends with the connection)
		x.bodyTooLong()
	if x.body.asked && !w.sentCont || x.badBody.Load() {
		// The client may or may not send the body it offered: do not guess. A body that
		// broke the framing leaves nothing to trust on the connection.
		w.close = true
	}
	bw := x.c.writer()
	writeStatusLine(bw, req.ProtoMinor, status)
	writeFields(bw, h, true)
	if _, ok := h["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate())
		bw.WriteString("\r\n")
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if w.close {
		if !httpguts.HeaderValuesContainsToken(h["Connection"], "close") {
			bw.WriteString("Connection: close\r\n")
		}
	} else if req.ProtoMinor == 0 && h["Connection"] == nil {
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString("\r\n")
	if len(w.pending) > 0 {
		p := w.pending
		w.pending = nil
		w.body(p)
	}
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

func hasTrailers(h http.Header) bool {
	if _, ok := h["Trailer"]; ok {
		return true
	}
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// writeStatusLine writes the status line, in the request's HTTP version as net/http does.
func writeStatusLine(bw *bufio.Writer, minor int, code int) {
	if minor == 0 {
		bw.WriteString("HTTP/1.0 ")
	} else {
		bw.WriteString("HTTP/1.1 ")
	}
	var num [3]byte
	bw.Write(strconv.AppendInt(num[:0], int64(code), 10))
	bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		bw.WriteString(text)
	} else {
		bw.WriteString("status code ")
		bw.Write(strconv.AppendInt(num[:0], int64(code), 10))
	}
	bw.WriteString("\r\n")
}

// writeFields writes a header's fields, skipping invalid names (and, for a final head,
// the TrailerPrefix ones, which are trailers); a control character in a value (CR and LF
// among them) becomes a space, so that no handler can split an answer or send a NUL.
func writeFields(bw *bufio.Writer, h http.Header, final bool) {
	for k, vv := range h {
		if final && strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			if !httpguts.ValidHeaderFieldValue(v) { // (a control character other than a tab)
				v = cleanValue(v)
			}
			bw.WriteString(strings.Trim(v, " \t"))
			bw.WriteString("\r\n")
		}
	}
}

func cleanValue(v string) string {
	b := []byte(v)
	for i, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			b[i] = ' '
		}
	}
	return string(b)
}

// FlushError sends what was written so far: the head, if not yet sent, and the body.
func (w *h1writer) FlushError() error {
	w.useMu.Lock()
	defer w.useMu.Unlock()
	if w.over {
		return errAfterReturn
	}
	if w.hijacked {
		return http.ErrHijacked
	}
	if w.status == 0 {
		w.writeHeader(http.StatusOK)
	}
	if !w.committed.Load() {
		w.commit(false, nil)
	}
	return w.x.c.bw.Flush()
}

func (w *h1writer) Flush() { w.FlushError() }

func (w *h1writer) SetReadDeadline(t time.Time) error {
	w.deadlines = true
	return w.x.c.nc.SetReadDeadline(t)
}

func (w *h1writer) SetWriteDeadline(t time.Time) error {
	w.deadlines = true
	return w.x.c.nc.SetWriteDeadline(t)
}

// Hijack hands the connection to the handler: bytes the client sent after the request,
// already read, come first from the returned connection (and the Reader, which reads
// it). The server no longer touches the connection.
func (w *h1writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.useMu.Lock()
	defer w.useMu.Unlock()
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.over {
		return nil, nil, errAfterReturn
	}
	c := w.x.c
	w.x.closeBody() // (no read of the body from now on: what is left of it is the hijacker's)
	c.watch.disarm()
	w.headMu.Lock() // (no 100 Continue from now on either)
	if w.committed.Load() {
		c.bw.Flush()
	}
	w.hijacked = true
	w.headMu.Unlock()
	c.nc.SetDeadline(time.Time{})
	var nc net.Conn = c.nc
	if c.r < c.w {
		nc = &prefixConn{Conn: c.nc, pre: append([]byte(nil), c.buf[c.r:c.w]...)}
	}
	c.r, c.w = 0, 0
	c.release()
	c.s.remove(c)
	return nc, bufio.NewReadWriter(bufio.NewReader(nc), bufio.NewWriter(nc)), nil
}

// finish ends the answer once the handler returned: the head if it never went, the
// last chunk and the trailers, and the flush. It reports whether the answer is whole and
// the connection may serve another request.
func (w *h1writer) finish() bool {
	w.useMu.Lock()
	defer w.useMu.Unlock()
	w.over = true
	if w.status == 0 {
		w.writeHeader(http.StatusOK)
	}
	if !w.committed.Load() {
		w.commit(true, nil)
	}
	bw := w.x.c.bw
	if w.chunked {
		bw.WriteString("0\r\n")
		w.writeTrailers(bw)
		bw.WriteString("\r\n")
	}
	if err := bw.Flush(); err != nil {
		return false
	}
	return !w.close && !w.deadlines && !w.overrun && (w.length < 0 || w.noBody || w.written == w.length)
}

// writeTrailers writes the trailers the handler set: the fields declared in "Trailer",
// and those under http.TrailerPrefix; never a framing field (Content-Length,
// Transfer-Encoding, Host...), which the edge itself refuses in a backend's trailers.
func (w *h1writer) writeTrailers(bw *bufio.Writer) {
	h := w.header
	for _, v := range h["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			k = http.CanonicalHeaderKey(strings.Trim(k, " \t"))
			if vv, ok := h[k]; ok && k != "" && httpguts.ValidTrailerHeader(k) {
				writeFields(bw, http.Header{k: vv}, false)
			}
		}
	}
	for k, vv := range h {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && httpguts.ValidTrailerHeader(http.CanonicalHeaderKey(name)) {
			writeFields(bw, http.Header{http.CanonicalHeaderKey(name): vv}, false)
		}
	}
}

// httpDate is the Date header's value for now, formatted once a second.
func httpDate() string {
	now := time.Now()
	sec := now.Unix()
	if d := dateCache.Load(); d != nil && d.sec == sec {
		return d.s
	}
	d := &cachedDate{sec: sec, s: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.s
}

type cachedDate struct {
	sec int64
	s   string
}

var dateCache atomic.Pointer[cachedDate]
