package sockio_test

import (
	"bytes"
	"errors"
	"io"
	"math"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spillway/spillway/proxy/sockio"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair is a loopback TCP connection: a wrapped end and the peer's plain one.
func pair(t *testing.T) (*sockio.Conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	w, ok := sockio.Wrap(d).(*sockio.Conn)
	if !ok {
		t.Fatalf("Wrap(%T) did not wrap a TCP connection", d)
	}
	t.Cleanup(func() { w.Close(); peer.Close() })
	return w, peer.(*net.TCPConn)
}

// TestRoundTripBiggerThanTheSocketBuffers: 8 MiB each way, more than the kernel's buffers
// hold, so that writes wait for the poller mid-way; every byte arrives, in order.
func TestRoundTripBiggerThanTheSocketBuffers(t *testing.T) {
	c, peer := pair(t)
	const size = 8 << 20
	out := make([]byte, size)
	for i := range out {
		out[i] = byte(i*7 + i>>11)
	}
	echoed := make(chan error, 1)
	go func() { // the peer echoes what it reads
		_, err := io.CopyN(peer, peer, size)
		echoed <- err
	}()
	wrote := make(chan error, 1)
	go func() {
		n, err := c.Write(out)
		if err == nil && n != size {
			err = io.ErrShortWrite
		}
		wrote <- err
	}()
	in := make([]byte, size)
	if _, err := io.ReadFull(c, in); err != nil {
		t.Fatalf("read back: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := <-echoed; err != nil {
		t.Fatalf("peer: %v", err)
	}
	if !bytes.Equal(in, out) {
		t.Fatal("the bytes read back differ from those written")
	}
}

// TestEndOfStreamIsEOF: a peer that closes gives io.EOF after its last bytes, as net.Conn.
func TestEndOfStreamIsEOF(t *testing.T) {
	c, peer := pair(t)
	peer.Write([]byte("last"))
	peer.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "last" {
		t.Fatalf("ReadAll = %q, %v; want \"last\", nil", got, err)
	}
	if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("read after the end = %d, %v; want 0, io.EOF", n, err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("an empty read = %d, %v; want 0, nil", n, err)
	}
}

// TestReadDeadline: a deadline in the past fails a read at once with net's timeout error;
// taking the deadline away (the zero time, a deadline far off here) lets a read wait
// again, and bytes that come end it.
func TestReadDeadline(t *testing.T) {
	c, peer := pair(t)
	c.SetReadDeadline(time.Now().Add(-time.Second))
	_, err := c.Read(make([]byte, 8))
	var op *net.OpError
	var ne net.Error
	if !errors.As(err, &op) || op.Op != "read" || !errors.Is(err, os.ErrDeadlineExceeded) ||
		!errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v (%T); want a read *net.OpError that times out", err, err)
	}
	c.SetReadDeadline(time.Time{})
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 8)
		n, err := c.Read(b)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b[:n])
	}()
	peer.Write([]byte("late"))
	if s := <-got; s != "late" {
		t.Fatalf("read with no deadline: %q; want \"late\"", s)
	}
	c.SetDeadline(time.Now().Add(20 * time.Millisecond)) // both ways
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after SetDeadline ran out: %v", err)
	}
}

// TestCloseEndsAWaitingRead: Close wakes a read waiting for the peer, with net.ErrClosed.
func TestCloseEndsAWaitingRead(t *testing.T) {
	c, _ := pair(t)
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 8))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond) // (the read is usually waiting by then; either way it must end)
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed conn: %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the read")
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on a closed conn: %v; want net.ErrClosed", err)
	}
	if _, err := c.WriteWithin([]byte("x"), time.Second); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteWithin on a closed conn: %v; want net.ErrClosed", err)
	}
}

// TestResetIsTheSyscallError: a reset by the peer is ECONNRESET wrapped as net wraps it.
func TestResetIsTheSyscallError(t *testing.T) {
	c, peer := pair(t)
	peer.SetLinger(0)
	peer.Close() // an RST
	var err error
	for range 100 { // (the RST may take a moment to land)
		if _, err = c.Read(make([]byte, 8)); err != nil {
			break
		}
	}
	var se *os.SyscallError
	if !errors.Is(err, syscall.ECONNRESET) || !errors.As(err, &se) || se.Syscall != "read" {
		t.Fatalf("read after a reset: %v (%T); want read: ECONNRESET", err, err)
	}
}

// TestWriteWithinBoundsAStalledPeer: with no write deadline set, a peer that stops
// reading fails the write once it has waited the bound, with what it wrote so far.
func TestWriteWithinBoundsAStalledPeer(t *testing.T) {
	c, peer := pair(t)
	if n, err := c.WriteWithin([]byte("hello"), time.Second); n != 5 || err != nil {
		t.Fatalf("a small write = %d, %v; want 5, nil", n, err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "hello" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	big := make([]byte, 64<<20) // far more than the socket buffers: the peer never reads
	start := time.Now()
	n, err := c.WriteWithin(big, 100*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n <= 0 || n >= len(big) {
		t.Fatalf("write to a stalled peer = %d, %v; want a part, then the deadline", n, err)
	}
	if took := time.Since(start); took < 100*time.Millisecond || took > 30*time.Second {
		t.Fatalf("the bound of 100ms ran out after %v", took)
	}
	// What was written is what the peer reads.
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	read, err := io.CopyN(io.Discard, peer, int64(n))
	if err != nil || read != int64(n) {
		t.Fatalf("peer read %d of the %d written: %v", read, n, err)
	}
}

// TestWriteWithinKeepsTheDeadlineSet: a write deadline set with SetWriteDeadline applies
// in place of the bound: one already past fails the write at once, a later one than the
// bound lets the write wait for it, and one set while the write waits (a cut) ends it.
func TestWriteWithinKeepsTheDeadlineSet(t *testing.T) {
	c, _ := pair(t)
	c.SetWriteDeadline(time.Now().Add(-time.Second))
	if n, err := c.WriteWithin([]byte("x"), time.Minute); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a write past the deadline = %d, %v; want 0 and the deadline", n, err)
	}
	big := make([]byte, 64<<20)
	start := time.Now()
	c.SetWriteDeadline(start.Add(300 * time.Millisecond))
	if _, err := c.WriteWithin(big, 10*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a write under a deadline: %v; want the deadline", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("the write ended after %v, before the deadline set (300ms): the bound replaced it", took)
	}
	c.SetWriteDeadline(time.Time{})
	ended := make(chan error, 1)
	go func() {
		_, err := c.WriteWithin(big, time.Hour)
		ended <- err
	}()
	time.Sleep(20 * time.Millisecond) // (the write is usually waiting by then; either way the cut must end it)
	c.SetWriteDeadline(time.Unix(1, 0))
	select {
	case err := <-ended:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a cut write: %v; want the deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a deadline in the past did not end a write waiting under an hour's bound")
	}
}

// TestConcurrentReadersShareTheStream: two goroutines reading one conn at once (net.Conn
// allows it) between them read every byte once.
func TestConcurrentReadersShareTheStream(t *testing.T) {
	c, peer := pair(t)
	const size = 4 << 20
	go func() {
		peer.Write(bytes.Repeat([]byte{'a'}, size))
		peer.CloseWrite()
	}()
	var wg sync.WaitGroup
	totals := make([]int, 2)
	for i := range totals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 1000+i*3000)
			for {
				n, err := c.Read(b)
				totals[i] += n
				if bytes.IndexFunc(b[:n], func(r rune) bool { return r != 'a' }) >= 0 {
					t.Error("a reader got bytes nobody sent")
				}
				if err != nil {
					if err != io.EOF {
						t.Error(err)
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	if totals[0]+totals[1] != size {
		t.Fatalf("readers got %d+%d bytes; want %d in all", totals[0], totals[1], size)
	}
}

// TestPassThrough: CloseWrite reaches the peer as an end of stream; SyscallConn and
// NetConn are the socket's; a connection that is not a socket is left as it is.
func TestPassThrough(t *testing.T) {
	c, peer := pair(t)
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := peer.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("peer read after CloseWrite = %d, %v; want io.EOF", n, err)
	}
	if _, err := c.SyscallConn(); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.NetConn().(*net.TCPConn); !ok {
		t.Fatalf("NetConn is %T", c.NetConn())
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if sockio.Wrap(a) != a {
		t.Fatal("Wrap wrapped a connection with no socket")
	}
}

// TestWriteAfterABoundRanOut: a bound WriteWithin set, run out, is not a deadline for a
// later Write, which has none.
func TestWriteAfterABoundRanOut(t *testing.T) {
	c, peer := pair(t)
	big := make([]byte, 64<<20)
	n, err := c.WriteWithin(big, 50*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a write to a peer that does not read: %v; want the bound", err)
	}
	time.Sleep(100 * time.Millisecond) // (the bound's timer has fired)
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte("after"))
		wrote <- err
	}()
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.CopyN(io.Discard, peer, int64(n)+5); err != nil {
		t.Fatalf("peer: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("a Write after WriteWithin's bound ran out: %v; want none (no deadline is set)", err)
	}
}

// TestWriteWithinBoundsSilenceNotTheWhole: a peer that reads slowly but keeps reading gets
// a write that takes far longer than the bound: the bound is for the socket taking
// nothing.
func TestWriteWithinBoundsSilenceNotTheWhole(t *testing.T) {
	c, peer := pair(t)
	const size = 16 << 20
	read := make(chan error, 1)
	go func() {
		b := make([]byte, 256<<10)
		total := 0
		for total < size {
			n, err := io.ReadFull(peer, b[:min(len(b), size-total)])
			total += n
			if err != nil {
				read <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		read <- nil
	}()
	start := time.Now()
	if n, err := c.WriteWithin(make([]byte, size), 200*time.Millisecond); err != nil || n != size {
		t.Fatalf("a write to a slow reader = %d, %v; want %d, nil", n, err, size)
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	t.Logf("16 MiB to a peer reading 256 KiB every 20ms took %v under a bound of 200ms", time.Since(start))
}

// TestDeadlines: a deadline beyond 2262 (where UnixNano overflows) is no deadline passed;
// errors have net's shape, one *net.OpError with the poller's error or the system call's
// inside.
func TestDeadlines(t *testing.T) {
	c, _ := pair(t)
	c.SetWriteDeadline(time.Now().Add(math.MaxInt64))
	if _, err := c.WriteWithin([]byte("x"), time.Second); err != nil {
		t.Fatalf("a write under a deadline in 2262: %v", err)
	}
	c.SetReadDeadline(time.Unix(1, 0))
	_, err := c.Read(make([]byte, 1))
	var op *net.OpError
	if !errors.As(err, &op) || op.Net != "tcp" || op.Source == nil || op.Addr == nil {
		t.Fatalf("a read past its deadline: %#v", err)
	}
	if _, nested := op.Err.(*net.OpError); nested || strings.Contains(err.Error(), "raw-") {
		t.Fatalf("the error wraps RawConn's: %v", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%v is not a timeout", err)
	}
}

// TestCloseEndsAWaitingWrite: Close wakes a write waiting under its bound, with
// net.ErrClosed and what it wrote before.
func TestCloseEndsAWaitingWrite(t *testing.T) {
	c, _ := pair(t)
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	big := make([]byte, 64<<20) // the peer never reads: the write waits
	go func() {
		n, err := c.WriteWithin(big, time.Hour)
		done <- result{n, err}
	}()
	time.Sleep(20 * time.Millisecond) // (the write is usually waiting by then; either way Close must end it)
	c.Close()
	select {
	case r := <-done:
		if !errors.Is(r.err, net.ErrClosed) || r.n >= len(big) {
			t.Fatalf("a write waiting when the conn closed = %d, %v; want part of it and net.ErrClosed", r.n, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end a write waiting under an hour's bound")
	}
}
