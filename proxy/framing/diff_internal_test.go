package framing

import (
	"bufio"
	"bytes"
	"io"
	"math/rand"
	"net/http"
	"strings"
	"testing"
)

// Differential checks of framing.go against net/http (review of issue 11).

// frameLen runs the edge's request framer over b and returns the length of the first
// message, or -1 if refused / incomplete.
func frameLen(b []byte) int {
	f := Framer{MaxHead: 1 << 20}
	end, _, err := HeadEnd(b, HeadScan{})
	if err != nil || end == 0 {
		return -1
	}
	if _, err := f.CheckHead(b[:end], false); err != nil {
		return -1
	}
	rest := b[end:]
	n := 0
	for f.st != stHead {
		k, err := f.Advance(rest[n:])
		if err != nil {
			return -1
		}
		if k == 0 {
			return -1
		}
		n += k
	}
	return end + n
}

func goLen(b []byte) int {
	r := bytes.NewReader(b)
	br := bufio.NewReader(r)
	req, err := http.ReadRequest(br)
	if err != nil {
		return -1
	}
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		return -2
	}
	return len(b) - r.Len() - br.Buffered()
}

// TestReviewDiffFramerVsNetHTTP (regression pin; passes): a differential check of the
// edge's request framer against net/http's own parser on generated requests (CL and TE
// spellings and whitespace, chunk extensions, trailers, bodies hiding requests, stray
// CRLF): wherever the framer accepts a message and net/http reads it without error, both
// must put its end at the same byte. Where net/http refuses what the framer passed, it
// closes the connection, so only agreement on accepted messages matters.
func TestReviewDiffFramerVsNetHTTP(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	pick := func(xs ...string) string { return xs[rng.Intn(len(xs))] }
	for i := 0; i < 60000; i++ {
		var b strings.Builder
		b.WriteString(pick("GET", "POST", "HEAD", "PUT") + " /" + pick("", "a", "a?b") + " " + pick("HTTP/1.1", "HTTP/1.0") + "\r\n")
		b.WriteString("Host: x\r\n")
		body := ""
		nh := rng.Intn(4)
		for j := 0; j < nh; j++ {
			switch rng.Intn(6) {
			case 0:
				b.WriteString(pick("Content-Length", "content-length", "CONTENT-LENGTH") + ":" + pick("", " ", "\t") + pick("0", "3", "5", "05", "10") + pick("", " ", "\t") + "\r\n")
			case 1:
				b.WriteString(pick("Transfer-Encoding", "transfer-encoding") + ":" + pick("", " ", "\t") + pick("chunked", "Chunked", "CHUNKED", "identity") + pick("", " ", "\t") + "\r\n")
			case 2:
				b.WriteString(pick("Expect: 100-continue", "Connection: close", "Connection: keep-alive", "Upgrade: websocket", "Connection: Upgrade") + "\r\n")
			case 3:
				b.WriteString("X-" + pick("a", "b") + ":" + pick("", " v", "v ", " \tv") + "\r\n")
			case 4:
				b.WriteString(pick("Trailer: X-T", "TE: trailers") + "\r\n")
			case 5:
				b.WriteString(pick("Content-Length: 3", "Transfer-Encoding: chunked") + "\r\n")
			}
		}
		b.WriteString("\r\n")
		for j := 0; j < 1+rng.Intn(3); j++ {
			switch rng.Intn(5) {
			case 0:
				body += pick("3", "03", "5", "0", "a", "A") + pick("", ";x", ";x=y", ";x=\"a;b\"", " ;x", "\t;x") + "\r\n" + pick("abc", "abcde", "0123456789", "") + "\r\n"
			case 1:
				body += "0" + pick("", ";e") + "\r\n" + pick("", "X-T: 1\r\n", "X-T:1\r\nY: 2\r\n") + "\r\n"
			case 2:
				body += pick("abc", "abcde", "0123456789")
			case 3:
				body += "GET /s HTTP/1.1\r\nHost: y\r\n\r\n"
			case 4:
				body += pick("\r\n", "")
			}
		}
		s := b.String() + body + "GET /next HTTP/1.1\r\nHost: z\r\n\r\n"
		fl := frameLen([]byte(s))
		if fl < 0 {
			continue
		}
		gl := goLen([]byte(s))
		if gl >= 0 && gl != fl {
			t.Errorf("framer says %d, net/http %d for %q", fl, gl, s)
			if t.Failed() && i > 10 {
				return
			}
		}
	}
}

func respFrameLen(b []byte, isHEAD bool) int {
	f := Framer{Response: true, MaxHead: 1 << 20}
	end, _, err := HeadEnd(b, HeadScan{})
	if err != nil || end == 0 {
		return -1
	}
	if _, err := f.CheckHead(b[:end], isHEAD); err != nil {
		return -1
	}
	if f.st == stPass {
		return -3
	}
	rest := b[end:]
	n := 0
	for f.st != stHead {
		k, err := f.Advance(rest[n:])
		if err != nil || k == 0 {
			return -1
		}
		n += k
	}
	return end + n
}

func goRespLen(b []byte, method string) int {
	r := bytes.NewReader(b)
	br := bufio.NewReader(r)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return -1
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return -2
	}
	if resp.Close && resp.ContentLength < 0 && !(len(resp.TransferEncoding) > 0) && resp.StatusCode >= 200 && resp.StatusCode != 204 && resp.StatusCode != 304 && method != "HEAD" {
		return -3
	}
	return len(b) - r.Len() - br.Buffered()
}

// TestReviewDiffRespFramerVsNetHTTP (regression pin; passes): the same for responses, as
// the Transport reads them (GET, HEAD and POST; 1xx, 204, 304 and others; CL, TE or none),
// leaving out read-until-close bodies.
func TestReviewDiffRespFramerVsNetHTTP(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	pick := func(xs ...string) string { return xs[rng.Intn(len(xs))] }
	for i := 0; i < 60000; i++ {
		var b strings.Builder
		b.WriteString(pick("HTTP/1.1", "HTTP/1.0") + " " + pick("100", "101", "103", "200", "204", "304", "404", "199") + pick("", " OK", " ") + "\r\n")
		for j := 0; j < rng.Intn(4); j++ {
			switch rng.Intn(4) {
			case 0:
				b.WriteString("Content-Length:" + pick("", " ") + pick("0", "3", "5", "10") + "\r\n")
			case 1:
				b.WriteString("Transfer-Encoding: " + pick("chunked", "Chunked") + "\r\n")
			case 2:
				b.WriteString(pick("Connection: close", "Connection: keep-alive", "Upgrade: x", "Connection: upgrade") + "\r\n")
			case 3:
				b.WriteString("X: y\r\n")
			}
		}
		b.WriteString("\r\n")
		body := ""
		for j := 0; j < 1+rng.Intn(3); j++ {
			switch rng.Intn(3) {
			case 0:
				body += pick("3", "5", "a") + pick("", ";x") + "\r\n" + pick("abc", "abcde", "0123456789") + "\r\n"
			case 1:
				body += "0\r\n" + pick("", "T: 1\r\n") + "\r\n"
			case 2:
				body += pick("abc", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
			}
		}
		s := b.String() + body + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
		method := pick("GET", "HEAD", "POST")
		fl := respFrameLen([]byte(s), method == "HEAD")
		if fl < 0 {
			continue
		}
		gl := goRespLen([]byte(s), method)
		if gl >= 0 && gl != fl {
			t.Errorf("%s: framer says %d, net/http %d for %q", method, fl, gl, s)
			if i > 10 {
				return
			}
		}
	}
}
