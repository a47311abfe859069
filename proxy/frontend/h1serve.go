package frontend

import (
	"io"
	"net/http"
	"runtime"
	"time"
)

// exchange serves one request: the handler, then what its answer leaves to do (the rest
// of the body, the last chunk, the flush). It reports whether the connection serves
// another request; when not, it has closed the connection or handed it over.
func (c *h1conn) exchange(req *http.Request, x *h1exchange) bool {
	x.w.x = x
	c.nc.SetReadDeadline(time.Time{})
	if exp := req.Header["Expect"]; exp != nil && !x.body.expect && !(len(exp) == 1 && exp[0] == "100-continue") {
		// An expectation other than 100-continue cannot be met (RFC 9110 section 10.1.1).
		x.w.Header().Set("Connection", "close")
		x.w.WriteHeader(http.StatusExpectationFailed)
	} else {
		if req.Body == http.NoBody {
			c.watch.arm(x) // the client's silence from now on says nothing
		}
		h := c.s.handler
		if req.RequestURI == "*" && req.Method == http.MethodOptions {
			h = optionsStar // (as net/http's server answers it)
		}
		if !c.runHandler(h, &x.w, req) {
			c.abort(x)
			return false
		}
	}
	if x.w.hijacked {
		x.cancel()
		return false
	}
	whole := x.w.finish()
	x.closeBody() // (before the watch ends: no read of the body can arm it again)
	c.watch.disarm()
	x.cancel()
	if !whole || !x.drainBody() || c.s.shutting.Load() {
		if x.req.Body != http.NoBody {
			c.linger()
		}
		c.close()
		return false
	}
	return true
}

// runHandler runs the handler, and reports false if it panicked. http.ErrAbortHandler is
// how a handler says its answer is broken (a proxied body cut short): the connection is
// cut, so that the client sees it broken too. Any other panic is logged with its stack.
func (c *h1conn) runHandler(h http.Handler, w http.ResponseWriter, req *http.Request) (ok bool) {
	defer func() {
		if err := recover(); err != nil {
			if err != http.ErrAbortHandler && c.s.log != nil {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.s.log.Printf("http: panic serving %s: %v\n%s", c.remote, err, buf)
			}
			ok = false
		}
	}()
	h.ServeHTTP(w, req)
	return true
}

// optionsStar answers "OPTIONS *", a question to the server itself: 200, no body.
var optionsStar = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", "0")
	if r.ContentLength != 0 {
		io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 4<<10))
	}
})

// abort ends a connection whose handler panicked: what was written goes (a cut answer),
// never the end of a chunked body.
func (c *h1conn) abort(x *h1exchange) {
	if x.w.hijacked {
		x.cancel()
		return
	}
	x.w.useMu.Lock()
	x.w.over = true
	x.w.useMu.Unlock()
	if c.bw != nil {
		c.bw.Flush()
	}
	x.closeBody()
	c.watch.disarm()
	x.cancel()
	c.close()
}
