package upstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// plan is how a request goes on the wire, worked out before a connection is taken: a
// request that cannot be written fails without reaching a backend.
type plan struct {
	method, host, uri string
	hasBody           bool  // a body to send (neither nil nor http.NoBody)
	length            int64 // the body's length; -1 unknown
	chunked           bool
	sendLength        bool // a Content-Length header goes
	expect            bool // "Expect: 100-continue"
	closing           bool // the request's own Connection header says close
}

// prepare checks req and plans its framing by net/http's rules: Content-Length for a body of
// known length, chunked for one of unknown length, and neither for a body whose
// TransferEncoding is "identity" (what a proxy sets to send a GET as it is).
func prepare(req *http.Request) (plan, error) {
	p := plan{method: req.Method, host: req.Host, uri: req.URL.RequestURI()}
	if p.method == "" {
		p.method = http.MethodGet
	}
	if !httpguts.ValidHeaderFieldName(p.method) {
		return p, fmt.Errorf("upstream: invalid method %q", p.method)
	}
	if p.host == "" {
		p.host = req.URL.Host
	}
	host, err := httpguts.PunycodeHostPort(p.host)
	if err != nil || !httpguts.ValidHostHeader(host) {
		return p, errors.New("upstream: invalid Host header")
	}
	p.host = host
	if strings.ContainsFunc(p.uri, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return p, errors.New("upstream: control character in the request URL")
	}
	if err := validHeader(req.Header); err != nil {
		return p, err
	}
	p.expect = httpguts.HeaderValuesContainsToken(req.Header["Expect"], "100-continue")
	p.closing = httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close")
	return p, p.frame(req)
}

// frame sets p's framing from req's body, ContentLength and TransferEncoding.
func (p *plan) frame(req *http.Request) error {
	if req.ContentLength != 0 && req.Body == nil {
		return fmt.Errorf("upstream: Request.ContentLength=%d with nil Body", req.ContentLength)
	}
	p.hasBody = req.Body != nil && req.Body != http.NoBody
	p.length = req.ContentLength
	switch {
	case !p.hasBody:
		p.length = 0
	case p.length == 0:
		p.length = -1 // a body of unknown length
	}
	identity := false
	switch te := req.TransferEncoding; {
	case len(te) == 0:
		p.chunked = p.length < 0
	case len(te) == 1 && te[0] == "chunked":
		p.chunked = true
	case len(te) == 1 && te[0] == "identity":
		identity = true
	default:
		return fmt.Errorf("upstream: unsupported Transfer-Encoding %q", te)
	}
	switch m := p.method; {
	case p.chunked || p.length < 0:
	case p.length > 0:
		p.sendLength = true
	case m == http.MethodPost || m == http.MethodPut || m == http.MethodPatch:
		p.sendLength = true // servers expect one for these
	case identity:
		p.sendLength = m != http.MethodGet && m != http.MethodHead
	}
	for k := range req.Trailer {
		switch textproto.CanonicalMIMEHeaderKey(k) {
		case "Transfer-Encoding", "Trailer", "Content-Length":
			return fmt.Errorf("upstream: invalid Trailer key %q", k)
		}
	}
	return nil
}

func validHeader(h http.Header) error {
	for k, vv := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("upstream: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("upstream: invalid header field value for %q", k)
			}
		}
	}
	return nil
}

// writeHead writes the request line and headers into c.bw (not flushed).
func (c *conn) writeHead(req *http.Request, p plan) error {
	w := c.bw
	w.WriteString(p.method)
	w.WriteByte(' ')
	w.WriteString(p.uri)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(p.host)
	w.WriteString("\r\n")
	if ua, ok := req.Header["User-Agent"]; !ok {
		w.WriteString("User-Agent: Go-http-client/1.1\r\n") // as net/http's
	} else if len(ua) > 0 && ua[0] != "" {
		writeField(w, "User-Agent", ua[0])
	}
	if req.Close && !p.closing {
		w.WriteString("Connection: close\r\n")
	}
	if p.chunked {
		w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if p.sendLength {
		w.WriteString("Content-Length: ")
		w.Write(strconv.AppendInt(w.AvailableBuffer(), p.length, 10))
		w.WriteString("\r\n")
	}
	if len(req.Trailer) > 0 {
		keys := make([]string, 0, len(req.Trailer))
		for k := range req.Trailer {
			keys = append(keys, textproto.CanonicalMIMEHeaderKey(k))
		}
		slices.Sort(keys)
		writeField(w, "Trailer", strings.Join(keys, ","))
	}
	for k, vv := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue // written above, from the request's fields
		}
		for _, v := range vv {
			writeField(w, k, v)
		}
	}
	_, err := w.WriteString("\r\n")
	return err
}

type stringWriter interface {
	io.Writer
	io.StringWriter
}

func writeField(w stringWriter, k, v string) {
	w.WriteString(k)
	w.WriteString(": ")
	w.WriteString(textproto.TrimString(v))
	w.WriteString("\r\n")
}

// sendBody writes x's request body and flushes the request; the body is closed.
func (c *conn) sendBody(x *exchange) error {
	req, p := x.req, &x.plan
	c.src = bodySource{r: req.Body}
	var err error
	switch {
	case p.chunked:
		if p.hasBody {
			err = c.copyChunked()
		}
		if err == nil {
			err = c.endChunks(req.Trailer)
		}
	case p.length > 0:
		c.lr = io.LimitedReader{R: &c.src, N: p.length}
		var n int64
		n, err = io.Copy(c.bw, &c.lr)
		if err == nil && n < p.length && c.src.err == nil {
			err = fmt.Errorf("upstream: ContentLength=%d with Body length %d", p.length, n)
		}
		c.lr.R = nil
	case p.hasBody:
		_, err = io.Copy(c.bw, &c.src)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	closeBody(req)
	c.src.r = nil
	if c.src.err != nil {
		err = c.src.err
	} else if err != nil {
		err = fmt.Errorf("upstream: write request body: %w", err)
	}
	if x.trace != nil && x.trace.WroteRequest != nil {
		x.trace.WroteRequest(httptrace.WroteRequestInfo{Err: err})
	}
	return err
}

// chunkRoom is what copyChunked keeps free before a chunk's data for its size line.
const chunkRoom = 18

// copyChunked writes the body as chunks, each read straight into bw's free space and sent at
// once (as net/http does for a request): a body streamed in small pieces is not held back.
func (c *conn) copyChunked() error {
	w := c.bw
	for {
		if w.Available() < chunkRoom+64 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
		buf := w.AvailableBuffer()
		data := buf[chunkRoom : cap(buf)-2]
		n, rerr := c.src.Read(data)
		if n > 0 {
			// The size line goes where the data's room begins, and Write moves the
			// data down to follow it (copy handles the overlap).
			w.Write(append(strconv.AppendInt(buf[:0:chunkRoom], int64(n), 16), '\r', '\n'))
			w.Write(data[:n])
			w.WriteString("\r\n")
			if err := w.Flush(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// endChunks writes the last chunk and the trailers, which the body's reader fills as the
// body ends.
func (c *conn) endChunks(trailer http.Header) error {
	if err := validHeader(trailer); err != nil {
		return err
	}
	c.bw.WriteString("0\r\n")
	for k, vv := range trailer {
		for _, v := range vv {
			writeField(c.bw, k, v)
		}
	}
	_, err := c.bw.WriteString("\r\n")
	return err
}

// bodySource is a request body that remembers how reading it failed.
type bodySource struct {
	r   io.Reader
	err error
}

func (s *bodySource) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// inMemory reports whether a body is one of the standard library's in-memory readers, whose
// head need not be flushed ahead of it.
func inMemory(r io.Reader) bool {
	switch r.(type) {
	case *bytes.Reader, *bytes.Buffer, *strings.Reader:
		return true
	}
	return false
}
