package proxy

// Regression tests from the review of the edge work (see review_test.go): the comments
// describe the bug each one caught, as it was.

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// TestReviewClockTryAfterExpiry: the Handler arms a retry's header deadline
// (exchangeClock.limitHeaders) before it makes the retry's context (exchangeClock.try),
// with the previous try's context already released (endTry). When the little time left
// runs out in between (the Handler only checks that some is left), the timer fires with no
// context to cancel: the clock records the expiry and stops watching, and the context try
// then returns is never cancelled. The retry runs unbounded by the clock, for up to the
// Transport's own response_header, the wait this clock exists to cap.
func TestReviewClockTryAfterExpiry(t *testing.T) {
	var c exchangeClock
	c.try(context.Background())
	c.endTry()                                       // the try failed; the Handler decides to retry
	c.limitHeaders(time.Now().Add(time.Millisecond)) // what is left of response_header
	time.Sleep(20 * time.Millisecond)                // the deadline passes before the new try starts
	ctx := c.try(context.Background())
	defer c.stop()
	defer c.endTry()
	select {
	case <-ctx.Done():
	case <-time.After(200 * time.Millisecond):
		t.Errorf("the clock expired (cut() = %v) but the retry's context is live: nothing bounds the retry", c.cut())
	}
}

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

// TestReviewEdgeOneByteReads: while a request is being served, net/http's background read
// calls the connection's Read with a one-byte buffer (connReader.startBackgroundRead). The
// edge then reads the socket through that same one-byte buffer, one system call per byte,
// and rescans the current head line after each byte (headEnd from the line's start): a
// client that keeps a request active (a download it does not read) and streams a pipelined
// head of one 60 KB line costs the proxy 60 000 reads and a quadratic scan, about a
// thousand times the cost of the same head read normally. The edge should read into a
// buffer of its own (say 4 KiB) whatever the caller's size.
func TestReviewEdgeOneByteReads(t *testing.T) {
	head := "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 60000) + "\r\n\r\n"
	cc := &countingConn{r: bytes.NewReader([]byte(head))}
	c := &edgeConn{Conn: cc, f: framer{maxHead: 64<<10 + 4096}}
	start := time.Now()
	var one [1]byte
	if n, err := c.Read(one[:]); n != 1 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if cc.reads > 100 {
		t.Errorf("a one-byte Read of a %d-byte head made %d reads from the socket (%v)", len(head), cc.reads, time.Since(start))
	}
}
