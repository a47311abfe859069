package upstream

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// bodyFrame is how a response's body is delimited on the wire.
type bodyFrame struct {
	kind   frameKind
	length int64 // frameLength: the body's length
}

type frameKind int8

const (
	frameNone    frameKind = iota // no body (HEAD, 1xx, 204, 304, a length of 0)
	frameLength                   // Content-Length bytes
	frameChunked                  // chunked, then a trailer
	frameClose                    // up to the end of the connection
)

// frame works out res's framing from its status and header, for a request with method,
// and sets ContentLength, TransferEncoding, Close and Trailer. It follows net/http's
// readTransfer step for step, headers it removes included (Transfer-Encoding, a
// Connection that says close on HTTP/1.1, Content-Length under chunked, Trailer under
// chunked), with one difference: an HTTP/1.0 response with a Transfer-Encoding, which
// net/http reads as if the header were not there, is refused (RFC 9112 section 6.1 calls
// its framing faulty).
func frame(res *http.Response, method string) (bodyFrame, error) {
	h, code := res.Header, res.StatusCode
	if pragma, ok := h["Pragma"]; ok && len(pragma) > 0 && pragma[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
	res.Close = shouldClose(res.ProtoMinor, h)
	chunked, err := transferEncoding(res)
	if err != nil {
		return bodyFrame{}, err
	}
	declared, err := contentLength(h)
	if err != nil {
		return bodyFrame{}, err
	}
	head := method == http.MethodHead
	bodyless := head || !bodyAllowedForStatus(code)
	length := declared // net/http's realLength
	switch {
	case bodyless:
		length = 0
	case chunked:
		delete(h, "Content-Length")
		length = -1
	}
	res.ContentLength = length
	if head {
		res.ContentLength = declared
	}
	if chunked {
		if res.Trailer, err = declaredTrailer(h); err != nil {
			return bodyFrame{}, err
		}
	}
	if length == -1 && !chunked && bodyAllowedForStatus(code) {
		res.Close = true // the body ends with the connection
	}
	switch {
	case chunked && bodyless, !chunked && length == 0:
		return bodyFrame{kind: frameNone}, nil
	case chunked:
		return bodyFrame{kind: frameChunked}, nil
	case length > 0:
		return bodyFrame{kind: frameLength, length: length}, nil
	case res.Close:
		return bodyFrame{kind: frameClose}, nil
	}
	return bodyFrame{kind: frameNone}, nil
}

func bodyAllowedForStatus(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

// shouldClose is net/http's: HTTP/1.0 keeps the connection only with "keep-alive", HTTP/1.1
// unless "close" (whose Connection header is then removed).
func shouldClose(minor int, h http.Header) bool {
	conn := h["Connection"]
	hasClose := httpguts.HeaderValuesContainsToken(conn, "close")
	if minor == 0 {
		return hasClose || !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
	}
	if hasClose {
		delete(h, "Connection")
	}
	return hasClose
}

// transferEncoding reports whether res is chunked: one Transfer-Encoding field, "chunked"
// in any case; anything else is refused, as net/http refuses it. The header is removed and
// its value's slot reused for res.TransferEncoding.
func transferEncoding(res *http.Response) (bool, error) {
	te, ok := res.Header["Transfer-Encoding"]
	if !ok {
		return false, nil
	}
	delete(res.Header, "Transfer-Encoding")
	switch {
	case res.ProtoMinor == 0:
		return false, fmt.Errorf("upstream: HTTP/1.0 response with Transfer-Encoding %q", te)
	case len(te) != 1:
		return false, fmt.Errorf("upstream: too many transfer encodings: %q", te)
	case !strings.EqualFold(te[0], "chunked") || len(te[0]) != len("chunked"):
		return false, fmt.Errorf("upstream: unsupported transfer encoding: %q", te[0])
	}
	te[0] = "chunked"
	res.TransferEncoding = te[:1:1]
	return true, nil
}

// contentLength is the length Content-Length declares, -1 if none. Repeated fields must
// agree and become one; the value must be digits, below 2^63.
func contentLength(h http.Header) (int64, error) {
	cl := h["Content-Length"]
	if len(cl) == 0 {
		return -1, nil
	}
	for _, v := range cl[1:] {
		if v != cl[0] {
			return 0, fmt.Errorf("upstream: response with differing Content-Length headers: %q", cl)
		}
	}
	if len(cl) > 1 {
		h["Content-Length"] = cl[:1:1]
	}
	n, err := strconv.ParseUint(cl[0], 10, 63)
	if err != nil {
		return 0, fmt.Errorf("upstream: bad Content-Length %q", cl[0])
	}
	return int64(n), nil
}

// declaredTrailer is the trailer a chunked response announces in its Trailer header
// (which is removed), keys with nil values; nil if none.
func declaredTrailer(h http.Header) (http.Header, error) {
	vv, ok := h["Trailer"]
	if !ok {
		return nil, nil
	}
	delete(h, "Trailer")
	var trailer http.Header
	for _, v := range vv {
		for f := range strings.SplitSeq(v, ",") {
			f = strings.Trim(f, " \t")
			if f == "" {
				continue
			}
			switch k := http.CanonicalHeaderKey(f); k {
			case "Transfer-Encoding", "Trailer", "Content-Length":
				return nil, fmt.Errorf("upstream: bad trailer key %q", k)
			default:
				if trailer == nil {
					trailer = make(http.Header)
				}
				trailer[k] = nil
			}
		}
	}
	return trailer, nil
}

// readTrailer reads the trailer after a chunked body's last chunk into res.Trailer, as
// net/http does: it must end within br's buffer, and its fields join those announced.
func readTrailer(br *bufio.Reader, res *http.Response) error {
	buf, err := br.Peek(2)
	switch {
	case string(buf) == "\r\n":
		br.Discard(2)
		return nil
	case len(buf) < 2:
		return errTrailerEOF
	case err != nil:
		return err
	}
	if !trailerBuffered(br) {
		return errTrailerLarge
	}
	s, err := readHead(br, nil)
	if err != nil {
		return err
	}
	h, err := parseFields(s)
	if err != nil {
		return err
	}
	if res.Trailer == nil {
		res.Trailer = h
	} else {
		maps.Copy(res.Trailer, h)
	}
	return nil
}

// trailerBuffered reports whether an empty line ending in CRLF comes within br's buffer
// (net/http's test before it reads a trailer).
func trailerBuffered(br *bufio.Reader) bool {
	var err error
	for {
		b, _ := br.Peek(br.Buffered())
		if bytes.Contains(b, []byte("\r\n\r\n")) {
			return true
		}
		if err != nil || len(b) == br.Size() {
			return false
		}
		_, err = br.Peek(len(b) + 1)
	}
}

// read reads b's body as its framing says. A body of known length ends with io.EOF
// alongside its last bytes, and fails with io.ErrUnexpectedEOF if the connection ends
// first; a chunked body's trailer is read before its io.EOF.
func (b *body) read(p []byte) (int, error) {
	br := b.c.br
	switch b.kind {
	case frameLength:
		if b.left <= 0 {
			return 0, io.EOF
		}
		if int64(len(p)) > b.left {
			p = p[:b.left]
		}
		n, err := br.Read(p)
		b.left -= int64(n)
		switch {
		case b.left == 0:
			return n, io.EOF
		case err == io.EOF:
			return n, io.ErrUnexpectedEOF
		}
		return n, err
	case frameChunked:
		n, err := b.chunks.Read(p)
		if err == io.EOF {
			if terr := readTrailer(br, b.res); terr != nil {
				return n, terr
			}
		}
		return n, err
	}
	return br.Read(p)
}
