package upstream

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/spillway/spillway/proxy/framing"
	"golang.org/x/net/http/httpguts"
)

// The response head is parsed here rather than by http.ReadResponse, which allocates a
// string per line, per key and per value: the head becomes one string, and the status,
// keys and values are pieces of it. The rules are net/http's (textproto.ReadMIMEHeader,
// then net/http's readTransfer) wherever they decide how a response is framed, and
// stricter where net/http is lenient: a head two parsers might read differently is
// refused (the proxy answers 502) rather than guessed at.

var (
	errFolded       = errors.New("upstream: response header folded over lines (obs-fold) or indented")
	errTrailerEOF   = errors.New("upstream: unexpected EOF reading trailer")
	errTrailerLarge = errors.New("upstream: trailer larger than the read buffer")
)

// headError is a response head refused as malformed; what says why, line is the offending
// text (quoted, cut short).
func headError(what, line string) error {
	if len(line) > 80 {
		line = line[:80]
	}
	return fmt.Errorf("upstream: malformed response: %s: %q", what, line)
}

// readHead reads from br a head: its lines up to and including the first empty one (a
// line ends with LF or CRLF, as net/http reads them), as one string. A head that fits br's
// buffer is copied from it once, into that string; a larger one is gathered line by line. first, if not nil, checks the first line as soon as it has come, so that a
// backend that answers garbage is refused at once rather than when it stops.
func readHead(br *bufio.Reader, first func(string) error) (string, error) {
	checked := first == nil
	scanned := 0 // searched already: a head that trickles in is not searched over and over
	for want := 1; ; {
		_, err := br.Peek(want)
		b, _ := br.Peek(br.Buffered())
		if end := headEnd(b, scanned); end > 0 {
			s := string(b[:end])
			br.Discard(end)
			return s, nil
		}
		if !checked {
			if i := bytes.IndexByte(b[scanned:], '\n'); i >= 0 {
				checked = true
				if err := first(trimCR(string(b[:scanned+i]))); err != nil {
					return "", err
				}
			}
		}
		scanned = len(b)
		if err != nil {
			return "", unexpectedEOF(err, len(b))
		}
		if len(b) == br.Size() {
			return readLongHead(br)
		}
		want = len(b) + 1
	}
}

// readLongHead reads a head larger than br's buffer, line by line.
func readLongHead(br *bufio.Reader) (string, error) {
	head := make([]byte, 0, 2*br.Size())
	start := 0 // where the line being read starts in head
	for {
		b, err := br.ReadSlice('\n')
		head = append(head, b...)
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err != nil:
			return "", unexpectedEOF(err, len(head))
		}
		if line := head[start:]; len(line) == 1 || len(line) == 2 && line[0] == '\r' {
			return string(head), nil
		}
		start = len(head)
	}
}

func unexpectedEOF(err error, read int) error {
	if err == io.EOF && read > 0 {
		return io.ErrUnexpectedEOF
	}
	return err
}

// headEnd is the length of the head at the start of b (through its first empty line), or
// 0 if that has not come. The first from bytes of b are known to hold no end but the one
// that a byte after them may complete.
func headEnd(b []byte, from int) int {
	switch {
	case len(b) > 0 && b[0] == '\n':
		return 1
	case len(b) > 1 && b[0] == '\r' && b[1] == '\n':
		return 2
	}
	from = max(from-2, 0)
	end := 0
	if i := bytes.Index(b[from:], []byte("\n\r\n")); i >= 0 {
		end = from + i + 3
	}
	if i := bytes.Index(b[from:], []byte("\n\n")); i >= 0 && (end == 0 || from+i+2 < end) {
		end = from + i + 2
	}
	return end
}

// cutLine cuts the first line off s, without its LF or CRLF.
func cutLine(s string) (line, rest string) {
	line, rest, _ = strings.Cut(s, "\n")
	return trimCR(line), rest
}

func trimCR(line string) string {
	return strings.TrimSuffix(line, "\r")
}

// response is a parsed response head, with its framing and room for its body's reader:
// one allocation for all three.
type response struct {
	http.Response
	framing bodyFrame
	body    body
}

// parseHead parses a head from readHead into a response to req, and works out how its
// body is framed. The response's Body is http.NoBody when it has none, else nil (the
// caller reads it as the framing says).
func parseHead(s string, req *http.Request) (*response, error) {
	line, rest := cutLine(s)
	r := &response{Response: http.Response{Request: req}}
	res := &r.Response
	if err := parseStatusLine(res, line); err != nil {
		return nil, err
	}
	h, err := parseFields(rest)
	if err != nil {
		return nil, err
	}
	res.Header = h
	method := http.MethodGet
	if req != nil && req.Method != "" {
		method = req.Method
	}
	if r.framing, err = frame(res, method); err != nil {
		return nil, err
	}
	if r.framing.kind == frameNone {
		res.Body = http.NoBody
	}
	return r, nil
}

// checkStatusLine refuses a status line that parseStatusLine would refuse.
func checkStatusLine(line string) error {
	var res http.Response
	return parseStatusLine(&res, line)
}

// parseStatusLine sets res's Proto, Status and StatusCode from line. Like net/http it
// takes "HTTP/1.x", spaces, a three-digit code and an optional reason phrase; unlike it, it
// refuses a code below 100 or with a sign (0-99 is no HTTP status and would pass for a
// 1xx), a version other than HTTP/1.x, and control characters in the reason phrase.
func parseStatusLine(res *http.Response, line string) error {
	proto, status, ok := strings.Cut(line, " ")
	if !ok {
		return headError("status line", line)
	}
	if len(proto) != len("HTTP/1.1") || !strings.HasPrefix(proto, "HTTP/1.") || !isDigit(proto[7]) {
		return headError("HTTP version", proto)
	}
	status = strings.TrimLeft(status, " ")
	code, _, _ := strings.Cut(status, " ")
	if len(code) != 3 || code[0] < '1' || code[0] > '9' || !isDigit(code[1]) || !isDigit(code[2]) {
		return headError("status code", code)
	}
	if !httpguts.ValidHeaderFieldValue(status) {
		return headError("reason phrase", status)
	}
	res.Proto, res.ProtoMajor, res.ProtoMinor = proto, 1, int(proto[7]-'0')
	res.Status = status
	res.StatusCode = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	return nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// parseFields parses header field lines, up to an empty line or the end of s, into a
// header. Keys are canonical (textproto's form) and values trimmed of spaces and tabs, as
// ReadMIMEHeader makes them; the map is sized and the values share one array. A line that
// starts with a space or tab (obs-fold, which net/http would join to the line before), a
// name that is not a token (net/http lets "Name :" through) and a value with a control
// character are refused.
func parseFields(s string) (http.Header, error) {
	n := max(strings.Count(s, "\n")-1, 0) // lines but the empty one that ends them
	h := make(http.Header, n)
	var vals []string
	if n > 0 {
		vals = make([]string, n)
	}
	for len(s) > 0 {
		var line string
		line, s = cutLine(s)
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, errFolded
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || !httpguts.ValidHeaderFieldName(k) {
			return nil, headError("header field name", line)
		}
		v = strings.Trim(v, " \t")
		if !httpguts.ValidHeaderFieldValue(v) {
			return nil, headError("header field value", line)
		}
		k = framing.CanonicalKey(k)
		if vv, ok := h[k]; ok || len(vals) == 0 {
			h[k] = append(vv, v)
			continue
		}
		vals[0] = v
		h[k] = vals[:1:1]
		vals = vals[1:]
	}
	return h, nil
}
