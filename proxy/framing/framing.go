// Package framing holds the HTTP/1.1 message framing rules (RFC 9112 sections 2–7) that
// Spillway checks on the raw bytes of a connection before net/http reads them: on client
// connections (proxy/frontend's edge) and on connections to backends (proxy's
// backendConn). Its one job is to say where a message ends, or that its end is ambiguous.
//
// Request smuggling lives in the gap between two parsers that disagree on where a message
// ends; this one accepts only messages whose end every parser agrees on, a strict subset of
// what net/http accepts, so that nothing it passes can be framed differently behind it.
// What it refuses, and why, is listed in README.md ("Security").
//
// One Framer follows one direction of one connection: at a message boundary it needs a
// whole head (HeadEnd, then CheckHead), then counts the body through (Advance) until the
// next boundary.
package framing

import (
	"bytes"
	"strconv"
)

// Error is a message the Framer (or a connection checking with it) refuses: Status is what
// a client gets for a request (400, or 431 for a head that is too large), Msg says why.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return "http framing: " + e.Msg }

func badFrame(msg string) *Error { return &Error{Status: 400, Msg: msg} }

type frameState uint8

const (
	stHead      frameState = iota // at a boundary: a head comes next
	stFixed                       // remain bytes of a Content-Length body
	stChunkLine                   // a chunk-size line (in line)
	stChunkData                   // remain bytes of chunk data
	stChunkCR                     // the CR after chunk data
	stChunkLF                     // the LF after chunk data
	stTrailer                     // trailer lines (in line) until an empty one
	stPass                        // no more HTTP/1 framing: a tunnel, HTTP/2, a body read to close
)

// Bounds on the parts of a message the Framer holds while it checks them.
const (
	maxChunkLine  = 4096 // net/http's own bound on a chunk-size line
	maxChunkDigit = 15   // hex digits of a chunk size: < 2^60, never an overflow
	maxLenDigits  = 18   // decimal digits of a Content-Length: < 10^18, never an overflow
)

// Framer tracks the framing of one direction of an HTTP/1.1 connection.
// The zero value (with Response and MaxHead set) is at a message boundary.
type Framer struct {
	Response bool // the framer reads responses (else requests)
	MaxHead  int  // bound on a head (and on a trailer section)
	st       frameState
	remain   int64
	trailer  int // bytes of trailer section so far
}

// AtHead reports whether the framer is at a message boundary: a head comes next.
func (f *Framer) AtHead() bool { return f.st == stHead }

// Passing reports whether the framer has stopped framing: what follows is a tunnel, or a
// response body read to the close, and Advance passes it all.
func (f *Framer) Passing() bool { return f.st == stPass }

// Pass stops the framing: from now on Advance passes everything.
func (f *Framer) Pass() { f.st = stPass }

// Data is how many bytes of body data come next, none of them framing: the rest of a
// Content-Length body or of a chunk. 0 when framing comes next (a chunk-size line, the CRLF
// after chunk data, a trailer line) or the message is over. A reader that decodes the body
// (rather than passing it on as it is) hands Advance at most Data bytes at a time in data,
// and one line at a time (InLine) or one byte otherwise in framing, so that it knows which
// is which.
func (f *Framer) Data() int64 {
	if f.st == stFixed || f.st == stChunkData {
		return f.remain
	}
	return 0
}

// InLine reports whether a chunk-size or trailer line comes next: Advance takes it whole
// only, up to and including its LF.
func (f *Framer) InLine() bool { return f.st == stChunkLine || f.st == stTrailer }

// InTrailer reports whether a trailer line (or the empty line that ends the trailer
// section) comes next.
func (f *Framer) InTrailer() bool { return f.st == stTrailer }

// Advance consumes the body bytes at the front of p and returns how many there were: all
// of p, or fewer when a boundary comes first (then the Framer is AtHead and p[n:] starts
// the next head), when p ends inside a chunk-size or trailer line (then p[n:] starts that
// line, to be given again with more bytes), or when p breaks the framing (then err is set
// and p[n:] must not be used).
func (f *Framer) Advance(p []byte) (n int, err error) {
	for n < len(p) {
		switch f.st {
		case stHead:
			return n, nil
		case stPass:
			return len(p), nil
		case stFixed, stChunkData:
			k := int64(len(p) - n)
			if k > f.remain {
				k = f.remain
			}
			n += int(k)
			f.remain -= k
			if f.remain == 0 {
				if f.st == stFixed {
					f.st = stHead
				} else {
					f.st = stChunkCR
				}
			}
		case stChunkCR, stChunkLF:
			want := byte('\r')
			if f.st == stChunkLF {
				want = '\n'
			}
			if p[n] != want {
				return n, badFrame("chunk data not followed by CRLF")
			}
			n++
			if f.st == stChunkCR {
				f.st = stChunkLF
			} else {
				f.st = stChunkLine
			}
		case stChunkLine, stTrailer:
			// A line is handed on only once it is whole and has passed: until then
			// Advance stops before it, and the caller holds it back with what follows.
			i := bytes.IndexByte(p[n:], '\n')
			if i < 0 {
				if f.st == stChunkLine && len(p)-n > maxChunkLine {
					return n, badFrame("chunk-size line too long")
				}
				if f.st == stTrailer && f.trailer+len(p)-n > f.MaxHead {
					return n, badFrame("trailer section too large")
				}
				return n, nil
			}
			if f.st == stChunkLine && i+1 > maxChunkLine {
				return n, badFrame("chunk-size line too long")
			}
			if err := f.endLine(p[n : n+i+1]); err != nil {
				return n, err
			}
			n += i + 1
		}
	}
	return n, nil
}

// endLine handles one complete chunk-size or trailer line (with its line ending).
func (f *Framer) endLine(line []byte) error {
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return badFrame("line ends in a bare LF")
	}
	line = line[:len(line)-2]
	if f.st == stTrailer {
		if len(line) == 0 {
			f.st, f.trailer = stHead, 0
			return nil
		}
		f.trailer += len(line) + 2
		if f.trailer > f.MaxHead {
			return badFrame("trailer section too large")
		}
		name, err := checkField(line)
		if err != nil {
			return err
		}
		if equalFold(name, "content-length") || equalFold(name, "transfer-encoding") || equalFold(name, "trailer") || equalFold(name, "host") {
			return badFrame("trailer field " + string(name) + " is not allowed")
		}
		return nil
	}
	size, err := chunkSize(line)
	if err != nil {
		return err
	}
	if size == 0 {
		f.st = stTrailer
		return nil
	}
	f.st, f.remain = stChunkData, size
	return nil
}

// chunkSize parses a chunk-size line without its CRLF: 1 to 15 hex digits, optionally
// followed by extensions (";"...; whitespace allowed only right before a ";").
func chunkSize(line []byte) (int64, error) {
	var size int64
	i := 0
	for ; i < len(line); i++ {
		v := unhex(line[i])
		if v < 0 {
			break
		}
		if i == maxChunkDigit {
			return 0, badFrame("chunk size too large")
		}
		size = size<<4 | int64(v)
	}
	if i == 0 {
		return 0, badFrame("chunk size is not hexadecimal")
	}
	rest := line[i:]
	for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
		rest = rest[1:]
	}
	if len(rest) == 0 {
		if i < len(line) {
			return 0, badFrame("whitespace after chunk size")
		}
		return size, nil
	}
	if rest[0] != ';' {
		return 0, badFrame("chunk size is not hexadecimal")
	}
	for _, c := range rest {
		if c < ' ' && c != '\t' || c == 0x7f {
			return 0, badFrame("control character in a chunk extension")
		}
	}
	return size, nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// HeadScan is how far HeadEnd has checked a head still arriving: line is where the
// current line starts, pos where checking resumes. The zero value starts a new head.
type HeadScan struct{ line, pos int }

// HeadEnd looks for the end of the head at the front of b, resuming from s. It returns the
// length of the head, up to and including the empty line that ends it, or 0 and where to
// resume once more bytes came. Every line must end in CRLF: a bare CR or LF anywhere in a
// head is an error. Each byte is looked at once however the head arrives, byte by byte
// included.
func HeadEnd(b []byte, s HeadScan) (end int, next HeadScan, err error) {
	for {
		i := bytes.IndexByte(b[s.pos:], '\n')
		if i < 0 {
			// No LF yet: a CR may only be the last byte (its LF may be next to come).
			rest := b[s.pos:]
			if j := bytes.IndexByte(rest, '\r'); j >= 0 && j < len(rest)-1 {
				return 0, s, badFrame("bare CR in the head")
			}
			s.pos = len(b)
			if len(rest) > 0 && rest[len(rest)-1] == '\r' {
				s.pos-- // look at it again with the next byte
			}
			return 0, s, nil
		}
		lf := s.pos + i
		if lf == s.line || b[lf-1] != '\r' {
			return 0, s, badFrame("bare LF in the head")
		}
		if bytes.IndexByte(b[s.pos:lf-1], '\r') >= 0 {
			return 0, s, badFrame("bare CR in the head")
		}
		if lf-1 == s.line {
			if s.line == 0 {
				return 0, s, badFrame("empty line before the start line")
			}
			return lf + 1, HeadScan{}, nil // an empty line: the end of the head
		}
		s = HeadScan{line: lf + 1, pos: lf + 1}
	}
}

// CheckHead checks a whole head (from HeadEnd) and sets the Framer up for its body. For a
// response it returns the status.
// isHEAD tells a response Framer that the request it answers was a HEAD.
func (f *Framer) CheckHead(b []byte, isHEAD bool) (status int, err error) {
	lineEnd := bytes.Index(b, crlf)
	start := b[:lineEnd]
	b = b[lineEnd+2 : len(b)-2] // the field lines, each ending in CRLF
	var version []byte
	if f.Response {
		if version, status, err = statusLine(start); err != nil {
			return status, err
		}
	} else {
		v, ok := requestLine(start)
		if !ok {
			return status, badFrame("malformed request line")
		}
		version = v
	}
	var te, cl []byte
	var nTE, nCL, nHost int
	for len(b) > 0 {
		i := bytes.Index(b, crlf)
		line := b[:i]
		b = b[i+2:]
		if line[0] == ' ' || line[0] == '\t' {
			return status, badFrame("obsolete line folding")
		}
		name, err := checkField(line)
		if err != nil {
			return status, err
		}
		value := bytes.Trim(line[len(name)+1:], " \t")
		switch {
		case equalFold(name, "transfer-encoding"):
			nTE++
			te = value
		case equalFold(name, "content-length"):
			nCL++
			cl = value
		case equalFold(name, "host"):
			nHost++
		}
	}
	if !f.Response && nHost > 1 {
		return status, badFrame("more than one Host")
	}
	f.st, f.remain = stHead, 0
	noBody := f.Response && (status < 200 || status == 204 || status == 304 || isHEAD)
	switch {
	case nTE > 0 && nCL > 0:
		return status, badFrame("both Content-Length and Transfer-Encoding")
	case nTE > 1:
		return status, badFrame("more than one Transfer-Encoding")
	case nTE == 1 && string(version) != "HTTP/1.1":
		return status, badFrame("Transfer-Encoding in an HTTP/1.0 message")
	case nTE == 1 && !equalFold(te, "chunked"):
		return status, badFrame("Transfer-Encoding other than chunked")
	case nCL > 1:
		return status, badFrame("more than one Content-Length")
	}
	var length int64
	if nCL == 1 {
		var ok bool
		if length, ok = parseLength(cl); !ok {
			return status, badFrame("invalid Content-Length")
		}
	}
	switch {
	case f.Response && status == 101:
		f.st = stPass
	case noBody:
	case nTE == 1:
		f.st = stChunkLine
	case nCL == 1 && length > 0:
		f.st, f.remain = stFixed, length
	case nCL == 0 && f.Response:
		f.st = stPass // a response without a length ends when the connection does
	}
	return status, nil
}

var crlf = []byte("\r\n")

// parseLength reads a Content-Length value: 1 to maxLenDigits digits, nothing else.
func parseLength(cl []byte) (length int64, ok bool) {
	if len(cl) == 0 || len(cl) > maxLenDigits {
		return 0, false
	}
	for _, c := range cl {
		if c < '0' || c > '9' {
			return 0, false
		}
		length = length*10 + int64(c-'0')
	}
	return length, true
}

// requestLine checks "METHOD SP target SP HTTP/1.x", each part strictly formed, and
// returns the version.
func requestLine(l []byte) (version []byte, ok bool) {
	sp1 := bytes.IndexByte(l, ' ')
	if sp1 <= 0 {
		return nil, false
	}
	sp2 := bytes.IndexByte(l[sp1+1:], ' ')
	if sp2 <= 0 {
		return nil, false
	}
	method, target, version := l[:sp1], l[sp1+1:sp1+1+sp2], l[sp1+2+sp2:]
	if !isToken(method) || !(string(version) == "HTTP/1.1" || string(version) == "HTTP/1.0") {
		return nil, false
	}
	for _, c := range target {
		if c <= ' ' || c == 0x7f {
			return nil, false
		}
	}
	return version, true
}

// statusLine parses "HTTP/1.x SP 3DIGIT [SP reason]".
func statusLine(l []byte) ([]byte, int, error) {
	if len(l) < 12 || !(bytes.HasPrefix(l, []byte("HTTP/1.1 ")) || bytes.HasPrefix(l, []byte("HTTP/1.0 "))) {
		return nil, 0, badFrame("malformed status line")
	}
	code, err := strconv.Atoi(string(l[9:12]))
	if err != nil || code < 100 || code > 999 || l[9] == '+' || l[9] == '-' {
		return nil, 0, badFrame("malformed status code")
	}
	if len(l) > 12 && l[12] != ' ' {
		return nil, 0, badFrame("malformed status line")
	}
	for _, c := range l[12:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return nil, 0, badFrame("control character in the reason phrase")
		}
	}
	return l[:8], code, nil
}

// checkField checks one field line "name: value" (without CRLF) and returns the name.
func checkField(line []byte) ([]byte, error) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !isToken(line[:colon]) {
		return nil, badFrame("malformed field name")
	}
	for _, c := range line[colon+1:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return nil, badFrame("control character in a field value")
		}
	}
	return line[:colon], nil
}

// isToken reports whether b is a non-empty RFC 9110 token.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c >= 0x80 || !tokenChar[c] {
			return false
		}
	}
	return true
}

var tokenChar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// equalFold reports whether b equals the lower-case ASCII s, ignoring case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
