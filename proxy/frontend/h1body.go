package frontend

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/spillway/spillway/proxy/framing"
)

// setBody gives the request its Body, ContentLength, TransferEncoding and declared
// Trailer, from the framing the Framer found in its head, as net/http does.
func (x *h1exchange) setBody() *framing.Error {
	req := &x.req
	f := &x.c.f
	req.Body = http.NoBody
	if f.AtHead() {
		return nil // no body, or an empty one
	}
	if _, chunked := req.Header["Transfer-Encoding"]; chunked {
		req.ContentLength = -1
		req.TransferEncoding = []string{"chunked"}
		delete(req.Header, "Transfer-Encoding")
		if err := x.declaredTrailer(); err != nil {
			return err
		}
	} else {
		req.ContentLength = f.Data()
	}
	x.body = h1body{x: x}
	// (Not to an HTTP/1.0 client, which knows no 1xx answer: RFC 9110 section 15.2.)
	if req.ProtoMinor >= 1 && httpguts.HeaderValuesContainsToken(req.Header["Expect"], "100-continue") {
		x.body.expect, x.body.asked = true, true
	}
	req.Body = &x.body
	return nil
}

// declaredTrailer sets the Trailer a chunked request declares (keys, no values yet), and
// takes the Trailer field from the header, as net/http does.
func (x *h1exchange) declaredTrailer() *framing.Error {
	req := &x.req
	vv, ok := req.Header["Trailer"]
	if !ok {
		return nil
	}
	delete(req.Header, "Trailer")
	for _, v := range vv {
		for key := range strings.SplitSeq(v, ",") {
			key = http.CanonicalHeaderKey(strings.Trim(key, " \t"))
			switch key {
			case "":
				continue
			case "Transfer-Encoding", "Trailer", "Content-Length":
				return &framing.Error{Status: http.StatusBadRequest, Msg: "bad trailer key " + strconv.Quote(key)}
			}
			if req.Trailer == nil {
				req.Trailer = http.Header{}
			}
			req.Trailer[key] = nil
		}
	}
	return nil
}

// h1body is a request's body, decoded from the connection's read buffer and socket as
// the Framer checks it. It may be read from another goroutine than the handler's (a
// Transport's writer), and closed from the connection's once the handler is done; mu
// orders them.
type h1body struct {
	x      *h1exchange
	mu     sync.Mutex
	expect bool  // "Expect: 100-continue": the 100 goes out with the first read
	asked  bool  // the request asked for a 100 (set before the handler runs, then read only)
	excess int64 // chunk framing beyond net/http's allowance (see framing)
	err    error // what every read returns from now on (io.EOF at the end)
	closed bool  // the handler is done: reads fail, the connection decides what is left
}

func (b *h1body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return 0, http.ErrBodyReadAfterClose
	case b.err != nil:
		return 0, b.err
	case len(p) == 0:
		return 0, nil
	}
	if b.expect {
		b.expect = false
		b.x.w.sendContinue()
	}
	n, err := b.read(p)
	if err != nil {
		b.err = err
		if err == io.EOF {
			b.x.c.watch.arm(b.x) // the body is in: the client's silence now says nothing
		}
		if n > 0 {
			err = nil // (the error comes with the next read)
		}
	}
	return n, err
}

// Close is a handler's: it does not read what is left (the connection does, or closes).
func (b *h1body) Close() error { return nil }

// read decodes body bytes into p; io.EOF once the body is whole, trailer included.
func (b *h1body) read(p []byte) (int, error) {
	c := b.x.c
	f := &c.f
	for {
		if f.AtHead() {
			return 0, io.EOF
		}
		if rem := f.Data(); rem > 0 {
			p = p[:min(int64(len(p)), rem)]
			var n int
			var err error
			if c.r < c.w {
				n = copy(p, c.buf[c.r:c.w])
				c.r += n
			} else {
				n, err = c.nc.Read(p)
			}
			f.Advance(p[:n])
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			if f.AtHead() && err == nil {
				err = io.EOF
			}
			return n, err
		}
		if err := b.framing(); err != nil {
			return 0, err
		}
	}
}

// framing consumes the framing that comes next: a chunk-size line, a trailer line (kept
// in the request's Trailer), or one byte of the CRLF after chunk data.
func (b *h1body) framing() error {
	c := b.x.c
	f := &c.f
	k := 1
	if f.InLine() {
		i := bytes.IndexByte(c.buf[c.r:c.w], '\n')
		if i < 0 {
			if _, err := f.Advance(c.buf[c.r:c.w]); err != nil {
				return b.broken(err)
			}
			if err := c.fill(c.s.maxHead + 4); err != nil {
				return unexpected(err)
			}
			return nil
		}
		k = i + 1
	}
	if c.r+k > c.w {
		if err := c.fill(c.s.maxHead + 4); err != nil {
			return unexpected(err)
		}
		return nil
	}
	seg := c.buf[c.r : c.r+k]
	trailer := f.InTrailer()
	sizeLine := f.InLine() && !trailer
	if _, err := f.Advance(seg); err != nil {
		return b.broken(err)
	}
	c.r += k
	if sizeLine {
		// net/http's bound (CVE-2023-39326): a chunk may carry 16 bytes of framing, plus
		// twice its data; past 16 KiB more, the body is refused, so that chunks of a byte
		// behind long extensions cannot make the server read megabytes for a few bytes.
		b.excess = max(0, b.excess+int64(k)+2-16-2*f.Data())
		if b.excess > maxChunkExcess {
			return b.broken(errChunkExcess)
		}
	}
	if trailer && k > 2 {
		b.x.trailerField(string(seg[:k-2]))
	}
	return nil
}

// broken fails the body for a framing error: the edge's rule (see edge.go), the request
// is cut and the client gets 400 from the handler.
func (b *h1body) broken(err error) error {
	logRefusal(b.x.c.s.log, b.x.c.remote, err)
	b.x.badBody.Store(true)
	return err
}

// maxChunkExcess is how much more chunk framing than data a body may carry.
const maxChunkExcess = 16 << 10

var errChunkExcess = &framing.Error{Status: http.StatusBadRequest, Msg: "chunked encoding contains too much non-data"}

func unexpected(err error) error {
	if err == io.EOF || err == errHeadTooLarge {
		return io.ErrUnexpectedEOF
	}
	return err
}

// trailerField adds one trailer field line ("name: value", checked) to the request's
// Trailer.
func (x *h1exchange) trailerField(line string) {
	name, value, _ := strings.Cut(line, ":")
	if x.req.Trailer == nil {
		x.req.Trailer = http.Header{}
	}
	key := framing.CanonicalKey(name)
	x.req.Trailer[key] = append(x.req.Trailer[key], strings.Trim(value, " \t"))
}

// closeBody ends the request body once the handler is done: a read still under way on
// another goroutine is cut, and later reads fail.
func (x *h1exchange) closeBody() {
	b := &x.body
	if x.req.Body == http.NoBody {
		return
	}
	if !b.mu.TryLock() {
		x.c.nc.SetReadDeadline(aLongTimeAgo)
		b.mu.Lock()
	}
	b.closed = true
	b.mu.Unlock()
}

// drainBody reports whether the connection can serve another request after this one:
// its body was read whole, or what is left of it (at most maxDrain bytes, arriving
// within read_header) could be read and dropped. After closeBody.
func (x *h1exchange) drainBody() bool {
	b := &x.body
	if x.req.Body == http.NoBody || b.err == io.EOF {
		return true
	}
	if b.err != nil || b.expect || x.badBody.Load() {
		return false // broken, or the client waits for a 100 it will not get
	}
	c := x.c
	by := time.Now().Add(time.Second)
	if c.s.header > 0 {
		by = time.Now().Add(c.s.header)
	}
	c.nc.SetReadDeadline(by)
	var scratch [2048]byte
	for drained := 0; drained < maxDrain; {
		n, err := b.read(scratch[:])
		drained += n
		if err == io.EOF {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}

// bodyTooLong reports whether more of the request's body is left unread than the
// connection would drop after the answer (maxDrain): the answer then says the connection
// closes. A body being read on another goroutine right now is left to that reader.
func (x *h1exchange) bodyTooLong() bool {
	b := &x.body
	if x.req.Body == http.NoBody || !b.mu.TryLock() {
		return false
	}
	defer b.mu.Unlock()
	return b.err == nil && x.c.f.Data() >= maxDrain
}

// maxDrain is how much of a body its handler left unread the connection reads and drops
// to serve another request, as net/http does; with more left it closes.
const maxDrain = 256 << 10
