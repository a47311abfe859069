package framing

import "testing"

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
		f := Framer{MaxHead: 8 << 10}
		end, _, err := HeadEnd([]byte(tc.head), HeadScan{})
		if err == nil && end == 0 {
			t.Fatalf("%q: no end of head found", tc.head)
		}
		if err == nil {
			_, err = f.CheckHead([]byte(tc.head[:end]), false)
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
		f := Framer{Response: true, MaxHead: 8 << 10}
		if _, err := f.CheckHead([]byte(tc.head), tc.isHEAD); err != nil || f.st != tc.st {
			t.Errorf("%q (HEAD %v): state %d, error %v; want state %d", tc.head, tc.isHEAD, f.st, err, tc.st)
		}
	}
}
