package proxy

import (
	"io"
	"net/http"
	"reflect"
)

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

// h2NeedsContinue reports whether the body of an HTTP/2 request is waiting for a
// 100 Continue. Go's HTTP/2 server removes "Expect: 100-continue" from the request's
// headers and sends the 100 itself when the body is first read, so the header would never
// reach the backend: the Transport would send the body at once, pulling it from a client
// that waits to learn whether the backend wants it. The server keeps the fact only in an
// unexported field of its body reader, read here (on the handler's goroutine, before
// anything reads the body). If a Go release renames it, this reports false and uploads
// behave as before; TestEdgeExpectContinueHTTP2 fails and says so.
func h2NeedsContinue(body io.ReadCloser) bool {
	v := reflect.ValueOf(body)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct ||
		v.Elem().Type().Name() != "http2requestBody" {
		return false
	}
	f := v.Elem().FieldByName("needsContinue")
	return f.IsValid() && f.Kind() == reflect.Bool && f.Bool()
}
