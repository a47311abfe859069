package frontend

// Tests of the edge's Conn on scripted reads (framingtest), as proxy's framing_internal_test.go
// tests its backendConn.

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spillway/spillway/proxy/framing"
	"github.com/spillway/spillway/proxy/framing/framingtest"
)

// edgeRead runs input through a Conn, delivered in pieces cut at the given offsets,
// and returns what the edge handed on, and whether it refused or failed the stream.
func edgeRead(input []byte, cuts []int, readSize int) (passed []byte, refused bool) {
	ec := &Conn{Conn: &framingtest.ScriptConn{Pieces: framingtest.Pieces(input, cuts)}, f: framing.Framer{MaxHead: 8 << 10}, h2: true, first: true}
	passed, err := framingtest.ReadThrough(ec, readSize)
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

// From the review of the edge work (issue 11): the comment describes the bug
// the test caught, as it was.

// countingConn is a net.Conn whose reads come from r, counted.
type countingConn struct {
	net.Conn // nil: only Read is used
	r        *bytes.Reader
	reads    int
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

// TestEdgeReadsNotOneByteAtATime: while a request is being served, net/http's background read
// calls the connection's Read with a one-byte buffer (connReader.startBackgroundRead). The
// edge then reads the socket through that same one-byte buffer, one system call per byte,
// and rescans the current head line after each byte (headEnd from the line's start): a
// client that keeps a request active (a download it does not read) and streams a pipelined
// head of one 60 KB line costs the proxy 60 000 reads and a quadratic scan, about a
// thousand times the cost of the same head read normally. The edge should read into a
// buffer of its own (say 4 KiB) whatever the caller's size.
func TestEdgeReadsNotOneByteAtATime(t *testing.T) {
	head := "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 60000) + "\r\n\r\n"
	cc := &countingConn{r: bytes.NewReader([]byte(head))}
	c := &Conn{Conn: cc, f: framing.Framer{MaxHead: 64<<10 + 4096}}
	start := time.Now()
	var one [1]byte
	if n, err := c.Read(one[:]); n != 1 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if cc.reads > 100 {
		t.Errorf("a one-byte Read of a %d-byte head made %d reads from the socket (%v)", len(head), cc.reads, time.Since(start))
	}
}
