package upstream

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// The response head parser (head.go, frame.go) is checked against http.ReadResponse, the
// parser it replaces: given the same bytes, both must make the same response of them and
// frame the same body, or ours must refuse. Ours accepting what net/http refuses fails.

// diffBufSize is the read buffer of both parsers here: small, so that long heads, long
// lines and long trailers take the paths that gather across reads.
const diffBufSize = 256

// outcome is what a parser made of a response on the wire: the head, whether a body
// follows, and, if so, what reading it gave.
type outcome struct {
	res      *http.Response
	declared http.Header // res.Trailer before the body was read
	hasBody  bool
	body     string
	bodyErr  error  // nil for a body read to its end
	rest     string // what is left on the wire after the body
}

// ours reads wire with readHead, parseHead and body.read; trickled, one byte a read.
func ours(wire string, req *http.Request, trickled bool) (*outcome, error) {
	var src io.Reader = strings.NewReader(wire)
	if trickled {
		src = iotest.OneByteReader(src)
	}
	br := bufio.NewReaderSize(src, diffBufSize)
	s, err := readHead(br, checkStatusLine)
	if err != nil {
		return nil, err
	}
	r, err := parseHead(s, req)
	if err != nil {
		return nil, err
	}
	o := &outcome{res: &r.Response, declared: maps.Clone(r.Trailer), hasBody: r.framing.kind != frameNone}
	if o.hasBody {
		b := &body{c: &conn{br: br}, kind: r.framing.kind, left: r.framing.length, res: &r.Response}
		if b.kind == frameChunked {
			b.chunks = httputil.NewChunkedReader(br)
		}
		o.body, o.bodyErr = drain(b.read)
	}
	o.rest = rest(br)
	return o, nil
}

// theirs reads wire with http.ReadResponse.
func theirs(wire string, req *http.Request) (*outcome, error) {
	br := bufio.NewReaderSize(strings.NewReader(wire), diffBufSize)
	res, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, err
	}
	o := &outcome{res: res, declared: maps.Clone(res.Trailer), hasBody: res.Body != http.NoBody}
	if o.hasBody {
		o.body, o.bodyErr = drain(res.Body.Read)
	}
	o.rest = rest(br)
	return o, nil
}

// drain reads a body to its end, a few bytes at a time.
func drain(read func([]byte) (int, error)) (string, error) {
	var sb strings.Builder
	p := make([]byte, 7)
	for sb.Len() < 1<<20 {
		n, err := read(p)
		sb.Write(p[:n])
		if err == io.EOF {
			return sb.String(), nil
		}
		if err != nil {
			return sb.String(), err
		}
	}
	return sb.String(), errors.New("endless body")
}

func rest(br *bufio.Reader) string {
	b, _ := io.ReadAll(br)
	return string(b)
}

// verdict is how the two parsers' readings of one response compare.
type verdict int

const (
	agreed      verdict = iota // both accepted it, and read it the same
	refusedBoth                // both refused the head
	refusedOurs                // ours refused a head net/http takes
)

// compare reads wire with both parsers, for a request with method, and fails t if they
// read it differently or ours accepts what net/http refuses.
func compare(t testing.TB, wire, method string) verdict {
	t.Helper()
	req, _ := http.NewRequest(method, "http://backend/", nil)
	o, oerr := ours(wire, req, false)
	if tr, terr := ours(wire, req, true); (terr == nil) != (oerr == nil) || terr == nil && (headDiff(tr, o) != "" ||
		tr.body != o.body || (tr.bodyErr == nil) != (o.bodyErr == nil) || tr.rest != o.rest) {
		t.Fatalf("%s %q: read whole (%v) and trickled (%v), ours differ", method, wire, oerr, terr)
	}
	n, nerr := theirs(wire, req)
	switch {
	case oerr != nil && nerr != nil:
		return refusedBoth
	case oerr != nil:
		return refusedOurs
	case nerr != nil:
		t.Fatalf("%s %q: ours accepted it, net/http refused it: %v", method, wire, nerr)
	}
	if d := headDiff(o, n); d != "" {
		t.Fatalf("%s %q: heads differ: %s", method, wire, d)
	}
	switch {
	case o.bodyErr != nil:
		// Ours refused the body (a trailer net/http would take, or a body both fail on).
	case n.bodyErr != nil:
		t.Fatalf("%s %q: ours read the body (%q), net/http failed: %v", method, wire, o.body, n.bodyErr)
	case o.body != n.body || o.rest != n.rest || !reflect.DeepEqual(o.res.Trailer, n.res.Trailer):
		t.Fatalf("%s %q: bodies differ: ours %q (then %q, trailer %v), net/http's %q (then %q, trailer %v)",
			method, wire, o.body, o.rest, o.res.Trailer, n.body, n.rest, n.res.Trailer)
	}
	return agreed
}

// headDiff says how two responses' heads differ, "" if they do not.
func headDiff(o, n *outcome) string {
	a, b := o.res, n.res
	for _, f := range []struct {
		name string
		a, b any
	}{
		{"Status", a.Status, b.Status},
		{"StatusCode", a.StatusCode, b.StatusCode},
		{"Proto", a.Proto, b.Proto},
		{"ProtoMajor", a.ProtoMajor, b.ProtoMajor},
		{"ProtoMinor", a.ProtoMinor, b.ProtoMinor},
		{"Header", a.Header, b.Header},
		{"ContentLength", a.ContentLength, b.ContentLength},
		{"TransferEncoding", a.TransferEncoding, b.TransferEncoding},
		{"Close", a.Close, b.Close},
		{"Uncompressed", a.Uncompressed, b.Uncompressed},
		{"Trailer", o.declared, n.declared},
		{"Request", a.Request, b.Request},
		{"has a body", o.hasBody, n.hasBody},
	} {
		if !reflect.DeepEqual(f.a, f.b) {
			return fmt.Sprintf("%s: ours %#v, net/http's %#v", f.name, f.a, f.b)
		}
	}
	return ""
}

// Pieces of generated responses: the first goodStatus and goodFields of each list are lines
// that parse (though together they may frame a body in ways both parsers refuse), the rest
// hostile.
const goodStatus, goodFields = 11, 38

var (
	genStatus = []string{
		"HTTP/1.1 200 OK", "HTTP/1.0 200 OK", "HTTP/1.1 204 No Content", "HTTP/1.1 304 Not Modified",
		"HTTP/1.1 100 Continue", "HTTP/1.1 101 Switching Protocols", "HTTP/1.1 103 Early Hints",
		"HTTP/1.1 404", "HTTP/1.1 502 Bad Gateway", "HTTP/1.1 999 Odd", "HTTP/1.1  200  two spaces",
		"HTTP/1.2 200 OK", "HTTP/2.0 200 OK", "HTTP/0.9 200 OK", "HTTP/1.1 099 Low", "HTTP/1.1 +99 Sign",
		"HTTP/1.1 20 Short", "HTTP/1.1 2000 Long", "HTTP/1.1 200\tOK", "HTTP/1.1 200 O\x00K", "http/1.1 200 OK",
		"HTTP/1.1", "", " HTTP/1.1 200 OK", "HTTP/1.1 200 OK\r", "HTTP/1.1 200 caf\xe9",
	}
	genFields = []string{
		"Content-Length: 5", "Content-Length: 5", "content-length: 5", "Content-Length: 0",
		"Content-Length: 6", "Content-Length:  5 ", "Content-Length: +5", "Content-Length: -1",
		"Content-Length: 5, 5", "Content-Length:", "Content-Length: 99999999999999999999",
		"Transfer-Encoding: chunked", "transfer-encoding: Chunked", "Transfer-Encoding: identity",
		"Transfer-Encoding: gzip, chunked", "Transfer-Encoding: chunked ", "Transfer-Encoding: chun\u212aed",
		"Connection: close", "Connection: keep-alive", "Connection: Keep-Alive, Upgrade",
		"connection: foo, CLOSE", "Trailer: X-Sum", "Trailer: X-Sum, x-other", "Trailer: Content-Length",
		"Trailer: ,", "Pragma: no-cache", "Cache-Control: max-age=1", "Upgrade: websocket",
		"Content-Type: text/plain", "X-Empty:", "X-Spaces:  a  b  ", "X-Tab:\tv\t", "Set-Cookie: a=1",
		"set-cookie: b=2", "ETAG: \"x\"", "X-Obs-Text: \xff\xfe", "x-lower-unknown: v", "X_Under: v",
		"X-Bad\x01Name: v", "X-Ctl: a\x00b", "X-Ctl: a\x7fb", "X-Cr: a\rb", "Bad Name: v", "Space : v",
		": no name", "no colon", " leading: space", "\tleading: tab", "Host: h", "Content-Length : 5",
		strings.Repeat("X-Long-Name-", 20) + ": v", "X-Long-Value: " + strings.Repeat("v", 300),
	}
	genBodies = []string{
		"", "hello", "hello world, longer than five",
		"5\r\nhello\r\n0\r\n\r\n", "5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\nNEXT", "5\r\nhello\r\n0\r\n",
		"5\r\nhello\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n", "5\r\nhello\r\n0\r\nX-Sum: 1\r\n folded\r\n\r\n",
		"5\r\nhello\r\n0\r\nX-Sum: 1\n\n", "zz\r\nbad chunk\r\n", "5;ext=1\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	}
)

// genResponse puts together a response from the pieces.
func genResponse(r *rand.Rand) string {
	eol := func() string {
		if r.IntN(16) == 0 {
			return "\n"
		}
		return "\r\n"
	}
	var sb strings.Builder
	// One piece in eight is drawn from the whole list, the others from its good part.
	pick := func(list []string, good int) string {
		if r.IntN(8) == 0 {
			good = len(list)
		}
		return list[r.IntN(good)]
	}
	sb.WriteString(pick(genStatus, goodStatus))
	sb.WriteString(eol())
	for range r.IntN(6) {
		sb.WriteString(pick(genFields, goodFields))
		sb.WriteString(eol())
	}
	sb.WriteString(eol())
	sb.WriteString(genBodies[r.IntN(len(genBodies))])
	return sb.String()
}

// TestHeadDifferentialGenerated compares the parsers on generated responses, and checks
// that most were accepted (a parser that refused everything would pass otherwise).
func TestHeadDifferentialGenerated(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	n := 20000
	if testing.Short() {
		n = 2000
	}
	var count [3]int
	for range n {
		method := "GET"
		if r.IntN(6) == 0 {
			method = "HEAD"
		}
		count[compare(t, genResponse(r), method)]++
	}
	t.Logf("agreed %d, refused by both %d, refused by ours alone %d", count[agreed], count[refusedBoth], count[refusedOurs])
	if count[agreed] < n/10 {
		t.Errorf("only %d of %d generated responses accepted", count[agreed], n)
	}
}

// FuzzResponseHead compares the parsers on any input: ours never accepts what net/http
// refuses, and reads what both accept the same.
func FuzzResponseHead(f *testing.F) {
	for _, c := range headCases {
		f.Add(c.wire, c.method == "HEAD")
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 50 {
		f.Add(genResponse(r), false)
	}
	f.Fuzz(func(t *testing.T, wire string, head bool) {
		method := "GET"
		if head {
			method = "HEAD"
		}
		compare(t, wire, method)
	})
}
