package proxy

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/framing/framingtest"
)

// backendRead runs input through a backendConn (the response side), delivered in pieces
// cut at the given offsets, and returns what it handed on, and whether it refused the stream
// (frontend's edgeRead is the same for the request side).
func backendRead(input []byte, cuts []int, readSize int) (passed []byte, refused bool) {
	passed, err := framingtest.ReadThrough(newBackendConn(&framingtest.ScriptConn{Pieces: framingtest.Pieces(input, cuts)}, time.Second, true), readSize)
	return passed, !errors.Is(err, io.EOF)
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
