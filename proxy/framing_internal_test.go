package proxy

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/framing/framingtest"
)

// backendRead writes a request to a backendConn and runs input through it as the answer
// (the response side), delivered in pieces cut at the given offsets, and returns what it
// handed on, and whether it refused the stream: a read error, or an end it declared itself
// because bytes followed the answer (Pending; the answer's last bytes then came with
// io.EOF, so that no Transport keeps the connection). frontend's edgeRead is the same for
// the request side.
func backendRead(input []byte, cuts []int, readSize int) (passed []byte, refused bool) {
	bc := newBackendConn(&framingtest.ScriptConn{Pieces: framingtest.Pieces(input, cuts)}, time.Second, true)
	if _, err := bc.Write([]byte("GET / HTTP/1.1\r\nHost: b\r\n\r\n")); err != nil {
		panic(err)
	}
	passed, err := framingtest.ReadThrough(bc, readSize)
	return passed, !errors.Is(err, io.EOF) || bc.Pending()
}

// FuzzBackendFraming is frontend's FuzzEdgeFraming for responses. It caught a read that ended inside
// a chunk-size line losing the chunk data read with it (a chunked download cut short).
func FuzzBackendFraming(f *testing.F) {
	chunk := bytes.Repeat([]byte("x"), 70000)
	big := append([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11170\r\n"), chunk...)
	big = append(big, "\r\n0\r\n\r\n"...)
	for _, seed := range [][]byte{
		big,
		[]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
		[]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nok\r\n0\r\nT: 1\r\n\r\n"),
		[]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok"),
		[]byte("HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n\r\nuntil close"),
	} {
		f.Add(seed, uint32(60), uint32(70060), uint16(4095)) // 70060: inside the last lines
	}
	f.Fuzz(func(t *testing.T, input []byte, cut1, cut2 uint32, size uint16) {
		whole, refusedWhole := backendRead(input, nil, 32<<10)
		cuts := []int{int(cut1) % (len(input) + 1), int(cut2) % (len(input) + 1)}
		if cuts[0] > cuts[1] {
			cuts[0], cuts[1] = cuts[1], cuts[0]
		}
		cut, refusedCut := backendRead(input, cuts, int(size)+1)
		if refusedWhole != refusedCut || !bytes.Equal(whole, cut) {
			t.Fatalf("the cut changed the outcome: whole refused=%v passed %d bytes; cut %v refused=%v passed %d bytes",
				refusedWhole, len(whole), cuts, refusedCut, len(cut))
		}
		if !bytes.HasPrefix(input, whole) {
			t.Fatalf("passed %d bytes that are not a prefix of the input", len(whole))
		}
	})
}

// A backend connection takes only answers to requests written on it: after a final answer
// has been read whole, bytes that come before the next request (a second response, the
// start of one that the next request's answer would be spliced into) are refused, once what
// answered the request has been handed over. 1xx answers and the next request's answer
// pass.
func TestBackendConnRefusesBytesThatAnswerNoRequest(t *testing.T) {
	const answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	for _, tc := range []struct {
		name, input, passed string
		refused             bool
	}{
		{"one answer", answer, answer, false},
		{"1xx then the answer", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + answer, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + answer, false},
		{"a second response", answer + answer, answer, true},
		{"the start of another head", answer + "HTTP/1.1 200 OK\r\nX-A: ", answer, true},
		{"CRLF after the body", answer + "\r\n", answer, true},
		{"a response after a 204", "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", "HTTP/1.1 204 No Content\r\n\r\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cut := range []int{0, len(answer) - 1, len(answer), len(answer) + 3} {
				passed, refused := backendRead([]byte(tc.input), []int{cut}, 4096)
				if string(passed) != tc.passed || refused != tc.refused {
					t.Errorf("cut at %d: passed %q refused=%v, want %q refused=%v", cut, passed, refused, tc.passed, tc.refused)
				}
			}
		})
	}

	// The next request's answer passes: each request written opens the way for one.
	sc := &framingtest.ScriptConn{Pieces: [][]byte{[]byte(answer), []byte(answer)}}
	bc := newBackendConn(sc, time.Second, true)
	buf := make([]byte, 4096)
	for i := range 2 {
		bc.Write([]byte("GET / HTTP/1.1\r\nHost: b\r\n\r\n"))
		n, err := bc.Read(buf)
		if err != nil || string(buf[:n]) != answer {
			t.Fatalf("answer %d: %q %v, want it whole", i+1, buf[:n], err)
		}
	}
}

// Bytes behind a final answer, already read with it: the answer's last bytes come with
// io.EOF, which net/http's Transport takes for the connection's end, so it never pools the
// connection. (Without it, a request handed the pooled connection before the Transport's
// reader looked again would take the stray bytes for its answer: under load,
// TestTLSStrayResponseNeverReachesTheNextClientWithBody failed 25 times in 300.)
func TestBackendConnEndsWithAnAnswerThatBytesFollow(t *testing.T) {
	const answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	for _, behind := range []string{answer, "HTTP/1.1 200 OK\r\nX-A: ", "\r\n"} {
		bc := newBackendConn(&framingtest.ScriptConn{Pieces: framingtest.Pieces([]byte(answer+behind), nil)}, time.Second, true)
		if _, err := bc.Write([]byte("GET / HTTP/1.1\r\nHost: b\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		n, err := bc.Read(buf)
		if string(buf[:n]) != answer || err != io.EOF {
			t.Errorf("with %q behind: read %q, %v; want the answer with io.EOF", behind, buf[:n], err)
		}
	}
}
