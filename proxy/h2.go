package proxy

import "net/http"

// markEmptyBody gives a response that has no body, known from its framing rather than a
// Content-Length header (an HTTP/2 HEADERS frame that ends the stream), an explicit
// "Content-Length: 0". gRPC needs this: a call that fails at once is answered
// "Trailers-Only", one HEADERS frame carrying grpc-status and ending the stream, and a
// client that gets the headers in one frame and the end of the stream in another reports
// "server closed the stream without sending trailers". ReverseProxy flushes the headers of
// a response of unknown length at once, in their own frame; with the length known to be 0,
// responseWriter holds them back and net/http sends them with the end of the stream.
func markEmptyBody(res *http.Response) {
	if res.ContentLength != 0 || res.Request.Method == http.MethodHead ||
		res.StatusCode < 200 || res.StatusCode == http.StatusNoContent || res.StatusCode == http.StatusNotModified {
		return
	}
	if _, ok := res.Header["Content-Length"]; !ok {
		res.Header["Content-Length"] = []string{"0"}
	}
}
