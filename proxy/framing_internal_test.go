package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// scriptConn is a net.Conn whose reads return the given pieces, one per Read, then EOF.
type scriptConn struct {
	net.Conn // nil: only Read and Write are used
	pieces   [][]byte
	wrote    bytes.Buffer
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if len(c.pieces) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.pieces[0])
	if n == len(c.pieces[0]) {
		c.pieces = c.pieces[1:]
	} else {
		c.pieces[0] = c.pieces[0][n:]
	}
	return n, nil
}
func (c *scriptConn) Write(p []byte) (int, error)      { return c.wrote.Write(p) }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// pieces cuts input at the given offsets (in increasing order), for a scriptConn.
func pieces(input []byte, cuts []int) [][]byte {
	var out [][]byte
	prev := 0
	for _, c := range cuts {
		if c > prev && c < len(input) {
			out = append(out, input[prev:c])
			prev = c
		}
	}
	return append(out, input[prev:])
}

// readThrough reads r to its end in reads of size, and returns what it handed on and the
// error that ended it.
func readThrough(r io.Reader, size int) ([]byte, error) {
	var passed []byte
	buf := make([]byte, size)
	for {
		n, err := r.Read(buf)
		passed = append(passed, buf[:n]...)
		if err != nil {
			return passed, err
		}
	}
}

// edgeRead runs input through an edgeConn, delivered in pieces cut at the given offsets,
// and returns what the edge handed on, and whether it refused or failed the stream.
func edgeRead(input []byte, cuts []int, readSize int) (passed []byte, refused bool) {
	ec := &edgeConn{Conn: &scriptConn{pieces: pieces(input, cuts)}, f: framer{maxHead: 8 << 10}, h2: true, first: true}
	passed, err := readThrough(ec, readSize)
	return passed, ec.refused != nil || ec.bodyErr != nil || !errors.Is(err, io.EOF)
}

// FuzzEdgeFraming: whatever the bytes and however they are cut into reads, the edge never
// panics, decides the same way, hands on the same bytes, and hands on only a prefix of the
// input (it never invents or reorders a byte).
func FuzzEdgeFraming(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /s HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		http2Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00",
	} {
		f.Add([]byte(seed), uint16(7), uint16(31), uint8(16))
	}
	f.Fuzz(func(t *testing.T, input []byte, cut1, cut2 uint16, size uint8) {
		whole, refusedWhole := edgeRead(input, nil, 4096)
		cuts := []int{int(cut1) % (len(input) + 1), int(cut2) % (len(input) + 1)}
		if cuts[0] > cuts[1] {
			cuts[0], cuts[1] = cuts[1], cuts[0]
		}
		cut, refusedCut := edgeRead(input, cuts, int(size)+1)
		if refusedWhole != refusedCut || !bytes.Equal(whole, cut) {
			t.Fatalf("the cut changed the outcome: whole refused=%v passed %q; cut refused=%v passed %q",
				refusedWhole, whole, refusedCut, cut)
		}
		if !bytes.HasPrefix(input, whole) {
			t.Fatalf("passed %q, not a prefix of the input %q", whole, input)
		}
	})
}

// backendRead is edgeRead for a backendConn (the response side).
func backendRead(input []byte, cuts []int, readSize int) (passed []byte, refused bool) {
	passed, err := readThrough(newBackendConn(&scriptConn{pieces: pieces(input, cuts)}, time.Second, true), readSize)
	return passed, !errors.Is(err, io.EOF)
}

// FuzzBackendFraming is FuzzEdgeFraming for responses. It caught a read that ended inside
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

// TestFramerHeadsTable pins single heads the framer must accept or refuse, and what it then
// expects of the body.
func TestFramerHeadsTable(t *testing.T) {
	for _, tc := range []struct {
		head string
		ok   bool
		st   frameState
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true, stHead},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", true, stHead},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n", true, stFixed},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n", true, stChunkLine},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\t7 \r\n\r\n", true, stFixed},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n", false, 0},
		{"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", false, 0},
		{"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n", false, 0},
		{"POST / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\n\r\n", false, 0},
		{"GET / HTTP/2.0\r\n\r\n", false, 0},
		{"GET  / HTTP/1.1\r\n\r\n", false, 0},
		{"GET / HTTP/1.1\r\nHost : a\r\n\r\n", false, 0},
		{"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", false, 0},
	} {
		f := framer{maxHead: 8 << 10}
		end, _, err := headEnd([]byte(tc.head), headScan{})
		if err == nil && end == 0 {
			t.Fatalf("%q: no end of head found", tc.head)
		}
		if err == nil {
			_, err = f.checkHead([]byte(tc.head[:end]), false)
		}
		if (err == nil) != tc.ok {
			t.Errorf("%q: error %v, want ok=%v", tc.head, err, tc.ok)
			continue
		}
		if tc.ok && f.st != tc.st {
			t.Errorf("%q: body state %d, want %d", tc.head, f.st, tc.st)
		}
	}
	// Responses: HEAD and 204/304 have no body whatever their headers say; 101 is a tunnel;
	// no length reads to the close.
	for _, tc := range []struct {
		head   string
		isHEAD bool
		st     frameState
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, stHead},
		{"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", false, stHead},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", false, stPass},
		{"HTTP/1.1 200 OK\r\n\r\n", false, stPass},
		{"HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\n", false, stChunkLine},
	} {
		f := framer{response: true, maxHead: 8 << 10}
		if _, err := f.checkHead([]byte(tc.head), tc.isHEAD); err != nil || f.st != tc.st {
			t.Errorf("%q (HEAD %v): state %d, error %v; want state %d", tc.head, tc.isHEAD, f.st, err, tc.st)
		}
	}
}
