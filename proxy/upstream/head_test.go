package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// headCase is a response on the wire, and what the parsers should make of it: agreed (both
// take it, the same way), refusedBoth, or refusedOurs (net/http takes it; a proxy should
// not).
type headCase struct {
	name, wire, method string
	want               verdict
}

const okBody = "Content-Length: 2\r\n\r\nok"

var headCases = []headCase{
	{"plain", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + okBody, "GET", agreed},
	{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "GET", agreed},
	{"no reason", "HTTP/1.1 200\r\n" + okBody, "GET", agreed},
	{"spaces before code", "HTTP/1.1   200 OK\r\n" + okBody, "GET", agreed},
	{"code 999", "HTTP/1.1 999 Odd\r\n" + okBody, "GET", agreed},
	{"HTTP/1.2", "HTTP/1.2 200 OK\r\n" + okBody, "GET", agreed},
	{"lower-case keys", "HTTP/1.1 200 OK\r\ncontent-type: a\r\nx-thing-ID: b\r\netag: c\r\n" + okBody, "GET", agreed},
	{"repeated keys", "HTTP/1.1 200 OK\r\nSet-Cookie: a\r\nset-cookie: b\r\nSET-COOKIE: c\r\n" + okBody, "GET", agreed},
	{"empty and padded values", "HTTP/1.1 200 OK\r\nX-A:\r\nX-B: \t v w \t\r\n" + okBody, "GET", agreed},
	{"obs-text value", "HTTP/1.1 200 OK\r\nX-A: caf\xc3\xa9\r\n" + okBody, "GET", agreed},
	{"duplicate equal lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + okBody, "GET", agreed},
	{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", "GET", agreed},
	{"chunked, any case", "HTTP/1.1 200 OK\r\nTransfer-Encoding: ChUnKeD\r\n\r\n2\r\nok\r\n0\r\n\r\n", "GET", agreed},
	{"chunked overrides length", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", "GET", agreed},
	{"trailer", "HTTP/1.1 200 OK\r\nTrailer: X-Sum, x-more\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 1\r\nX-Extra: 2\r\n\r\n", "GET", agreed},
	{"trailer without chunks", "HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\n" + okBody, "GET", agreed},
	{"close-delimited", "HTTP/1.1 200 OK\r\n\r\nuntil the end", "GET", agreed},
	{"HTTP/1.0 close", "HTTP/1.0 200 OK\r\n" + okBody, "GET", agreed},
	{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n" + okBody, "GET", agreed},
	{"Connection: close removed", "HTTP/1.1 200 OK\r\nConnection: x, close\r\n" + okBody, "GET", agreed},
	{"HEAD with length", "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", "HEAD", agreed},
	{"HEAD without length", "HTTP/1.1 200 OK\r\n\r\n", "HEAD", agreed},
	{"HEAD chunked", "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n", "HEAD", agreed},
	{"204 with length", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "GET", agreed},
	{"304 chunked", "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\nTrailer: X-A\r\n\r\n", "GET", agreed},
	{"100 Continue", "HTTP/1.1 100 Continue\r\n\r\n", "GET", agreed},
	{"103 Early Hints", "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n", "GET", agreed},
	{"101 upgrade", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframes", "GET", agreed},
	{"Pragma no-cache", "HTTP/1.1 200 OK\r\nPragma: no-cache\r\n" + okBody, "GET", agreed},
	{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "GET", agreed},
	{"long head", "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Filler: "+strings.Repeat("f", 100)+"\r\n", 20) + okBody, "GET", agreed},
	{"long line", "HTTP/1.1 200 OK\r\nX-Long: " + strings.Repeat("l", 1000) + "\r\n" + okBody, "GET", agreed},

	{"empty", "", "GET", refusedBoth},
	{"no empty line", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", "GET", refusedBoth},
	{"empty status line", "\r\nHTTP/1.1 200 OK\r\n" + okBody, "GET", refusedBoth},
	{"no code", "HTTP/1.1\r\n" + okBody, "GET", refusedBoth},
	{"short code", "HTTP/1.1 20 OK\r\n" + okBody, "GET", refusedBoth},
	{"bad version", "HTTP/x.1 200 OK\r\n" + okBody, "GET", refusedBoth},
	{"folded", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n" + okBody, "GET", refusedOurs},
	{"folded by tab", "HTTP/1.1 200 OK\r\nX-A: a\r\n\tb\r\n" + okBody, "GET", refusedOurs},
	{"indented first field", "HTTP/1.1 200 OK\r\n X-A: a\r\n" + okBody, "GET", refusedBoth},
	{"space before colon", "HTTP/1.1 200 OK\r\nX-A : a\r\n" + okBody, "GET", refusedOurs},
	{"length with space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 9\r\n" + okBody, "GET", refusedOurs},
	{"no colon", "HTTP/1.1 200 OK\r\nX-A\r\n" + okBody, "GET", refusedBoth},
	{"empty name", "HTTP/1.1 200 OK\r\n: a\r\n" + okBody, "GET", refusedBoth},
	{"NUL in value", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n" + okBody, "GET", refusedBoth},
	{"CR in value", "HTTP/1.1 200 OK\r\nX-A: a\rb\r\n" + okBody, "GET", refusedBoth},
	{"DEL in name", "HTTP/1.1 200 OK\r\nX-\x7f: a\r\n" + okBody, "GET", refusedBoth},
	{"differing lengths", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n" + okBody, "GET", refusedBoth},
	{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok", "GET", refusedBoth},
	{"empty length", "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nok", "GET", refusedBoth},
	{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", "GET", refusedBoth},
	{"bad length on 204", "HTTP/1.1 204 No Content\r\nContent-Length: x\r\n\r\n", "GET", refusedBoth},
	{"identity", "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n" + okBody, "GET", refusedBoth},
	{"gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "GET", refusedBoth},
	{"two TE fields", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", refusedBoth},
	{"Kelvin sign chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chun\u212aed\r\n\r\n", "GET", refusedBoth},
	{"bad trailer key", "HTTP/1.1 200 OK\r\nTrailer: Content-Length\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", refusedBoth},
	{"HTTP/1.0 chunked", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", "GET", refusedOurs},
	{"HTTP/2.0", "HTTP/2.0 200 OK\r\n" + okBody, "GET", refusedOurs},
	{"HTTP/0.9", "HTTP/0.9 200 OK\r\n" + okBody, "GET", refusedOurs},
	{"code 099", "HTTP/1.1 099 Low\r\n" + okBody, "GET", refusedOurs},
	{"signed code", "HTTP/1.1 +99 Sign\r\n" + okBody, "GET", refusedOurs},
	{"NUL in reason", "HTTP/1.1 200 O\x00K\r\n" + okBody, "GET", refusedOurs},
}

func TestHeadCases(t *testing.T) {
	for _, c := range headCases {
		t.Run(c.name, func(t *testing.T) {
			if got := compare(t, c.wire, c.method); got != c.want {
				t.Errorf("verdict %d, want %d (0 agreed, 1 refused by both, 2 refused by ours)", got, c.want)
			}
		})
	}
}

// TestHeadValues checks a few fields of a parsed head directly, beside the differential
// tests' agreement with net/http.
func TestHeadValues(t *testing.T) {
	req, _ := http.NewRequest("GET", "http://backend/", nil)
	wire := "HTTP/1.1 201 Created\r\ncontent-type: a\r\nx-Custom-KEY: b\r\nX-Two: 1\r\nX-Two: 2\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc"
	o, err := ours(wire, req, false)
	if err != nil {
		t.Fatal(err)
	}
	res := o.res
	want := http.Header{"Content-Type": {"a"}, "X-Custom-Key": {"b"}, "X-Two": {"1", "2"}, "Content-Length": {"3"}}
	if res.StatusCode != 201 || res.Status != "201 Created" || res.Proto != "HTTP/1.1" || !res.Close ||
		res.ContentLength != 3 || o.body != "abc" || headDiff(o, &outcome{res: &http.Response{
		Status: "201 Created", StatusCode: 201, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: want,
		ContentLength: 3, Close: true, Request: req}, hasBody: true}) != "" {
		t.Fatalf("parsed %+v, body %q", res, o.body)
	}
	// The values share one array: appending to one must not overwrite the next.
	res.Header["Content-Type"] = append(res.Header["Content-Type"], "z")
	if res.Header.Get("X-Custom-Key") != "b" {
		t.Fatalf("appending to a value overwrote another: %v", res.Header)
	}
}

// TestGarbageRefusedAtOnce: a backend whose first line is no status line (another protocol)
// is refused as soon as that line has come, not when the header timeout ends the wait for
// an empty line that may never come.
func TestGarbageRefusedAtOnce(t *testing.T) {
	b := newRawBackend(t, func(b *rawBackend, c net.Conn, br *bufio.Reader) {
		if _, _, err := b.readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n")
		io.Copy(io.Discard, br) // the connection stays open until the transport closes it
	})
	tr := newTransport(t)
	var tc traced
	res, err := tr.RoundTrip(tc.request(t, context.Background(), "GET", b.url(), nil))
	if err == nil {
		res.Body.Close()
		t.Fatalf("answer %d to a garbage status line", res.StatusCode)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("refused only by the header timeout: %v", err)
	}
}

// BenchmarkParseHead reads a typical response head with this package's parser and with
// http.ReadResponse.
func BenchmarkParseHead(b *testing.B) {
	const wire = "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nDate: Tue, 08 Dec 2026 00:00:00 GMT\r\n" +
		"Cache-Control: no-cache\r\nvary: Accept-Encoding\r\nServer: backend\r\nSet-Cookie: a=1\r\n" +
		"X-Request-Id: 1234\r\nContent-Length: 128\r\n\r\n"
	req, _ := http.NewRequest("GET", "http://backend/", nil)
	sr := strings.NewReader(wire)
	br := bufio.NewReaderSize(sr, 4096)
	b.Run("upstream", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sr.Reset(wire)
			br.Reset(sr)
			s, err := readHead(br, checkStatusLine)
			if err == nil {
				_, err = parseHead(s, req)
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("net-http", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sr.Reset(wire)
			br.Reset(sr)
			if _, err := http.ReadResponse(br, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
