package frontend_test

// What a handler sees of a request: its line, its headers and its framing.

import (
	"net"
	"reflect"
	"testing"
)

func TestFrontRequestSeenByHandler(t *testing.T) {
	h, ch := recorder(nil)
	f := start(t, h)
	c := dial(t, f.addr)
	c.send("PUT /a%20b/c?x=1&y=%2F HTTP/1.1\r\n" +
		"Host: Example.COM:8080\r\n" +
		"X-Multi: one\r\n" +
		"x-multi: two, three\r\n" +
		"X-Empty:\r\n" +
		"X-Spaces: \t padded \t\r\n" +
		"Content-Length: 5\r\n" +
		"\r\nhello")
	resp, body := c.response("PUT")
	wantStatus(t, resp, 200)
	if body != "ok" {
		t.Fatalf("body %q", body)
	}
	s := recv(t, ch, "the handler")
	if s.Method != "PUT" || s.RequestURI != "/a%20b/c?x=1&y=%2F" || s.Path != "/a b/c" || s.RawQuery != "x=1&y=%2F" {
		t.Errorf("method %q RequestURI %q Path %q RawQuery %q", s.Method, s.RequestURI, s.Path, s.RawQuery)
	}
	if s.Host != "Example.COM:8080" || s.Header.Get("Host") != "" {
		t.Errorf("Host %q, Header[Host] %q: want the Host as sent, not in Header", s.Host, s.Header.Get("Host"))
	}
	if s.Proto != "HTTP/1.1" || s.ProtoMajor != 1 || s.ProtoMinor != 1 {
		t.Errorf("proto %q %d.%d", s.Proto, s.ProtoMajor, s.ProtoMinor)
	}
	if got := s.Header["X-Multi"]; !reflect.DeepEqual(got, []string{"one", "two, three"}) {
		t.Errorf("X-Multi %q, want both lines in order, canonical key", got)
	}
	if v, ok := s.Header["X-Empty"]; !ok || !reflect.DeepEqual(v, []string{""}) {
		t.Errorf("X-Empty %q present=%v", v, ok)
	}
	if got := s.Header.Get("X-Spaces"); got != "padded" {
		t.Errorf("X-Spaces %q, want surrounding whitespace trimmed", got)
	}
	if s.ContentLength != 5 || string(s.Body) != "hello" || s.BodyErr != nil || s.TransferEncoding != nil {
		t.Errorf("ContentLength %d body %q err %v TE %q", s.ContentLength, s.Body, s.BodyErr, s.TransferEncoding)
	}
	if s.RemoteAddr != c.c.LocalAddr().String() {
		t.Errorf("RemoteAddr %q, want the client's %q", s.RemoteAddr, c.c.LocalAddr())
	}
	if host, _, _ := net.SplitHostPort(s.RemoteAddr); host != "127.0.0.1" {
		t.Errorf("RemoteAddr %q", s.RemoteAddr)
	}
}

func TestFrontChunkedRequestSeenByHandler(t *testing.T) {
	h, ch := recorder(nil)
	f := start(t, h)
	c := dial(t, f.addr)
	c.send("POST /up HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n")
	resp, _ := c.response("POST")
	wantStatus(t, resp, 200)
	s := recv(t, ch, "the handler")
	if s.ContentLength != -1 || !reflect.DeepEqual(s.TransferEncoding, []string{"chunked"}) ||
		string(s.Body) != "abcde" || s.BodyErr != nil {
		t.Fatalf("ContentLength %d TE %q body %q err %v", s.ContentLength, s.TransferEncoding, s.Body, s.BodyErr)
	}
	if s.Header.Get("Transfer-Encoding") != "" {
		t.Errorf("Transfer-Encoding left in Header: %q", s.Header["Transfer-Encoding"])
	}
}

func TestFrontNoBodyContentLength(t *testing.T) {
	h, ch := recorder(nil)
	f := start(t, h)
	c := dial(t, f.addr)
	c.send(get("/") + "POST /zero HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n")
	c.response("GET")
	c.response("POST")
	if s := recv(t, ch, "GET"); s.ContentLength != 0 || len(s.Body) != 0 {
		t.Errorf("GET: ContentLength %d body %q", s.ContentLength, s.Body)
	}
	if s := recv(t, ch, "POST"); s.ContentLength != 0 || len(s.Body) != 0 {
		t.Errorf("POST: ContentLength %d body %q", s.ContentLength, s.Body)
	}
}

func TestFrontAbsoluteFormTarget(t *testing.T) {
	h, ch := recorder(nil)
	f := start(t, h)
	c := dial(t, f.addr)
	// The target's authority wins over the Host header (RFC 9112 section 3.2.2).
	c.send("GET http://target.example/p?q=1 HTTP/1.1\r\nHost: header.example\r\n\r\n")
	resp, _ := c.response("GET")
	wantStatus(t, resp, 200)
	s := recv(t, ch, "the handler")
	if s.RequestURI != "http://target.example/p?q=1" || s.Path != "/p" || s.RawQuery != "q=1" || s.Host != "target.example" {
		t.Fatalf("RequestURI %q Path %q RawQuery %q Host %q", s.RequestURI, s.Path, s.RawQuery, s.Host)
	}
}

// OPTIONS * is answered by the server itself (net/http's global OPTIONS handler: 200,
// Content-Length: 0); the handler is not called.
func TestFrontOptionsStar(t *testing.T) {
	h, ch := recorder(nil)
	f := start(t, h)
	c := dial(t, f.addr)
	c.send("OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n" + get("/next"))
	resp, body := c.response("OPTIONS")
	wantStatus(t, resp, 200)
	if resp.ContentLength != 0 || body != "" || resp.Close {
		t.Fatalf("Content-Length %d body %q close=%v", resp.ContentLength, body, resp.Close)
	}
	resp, _ = c.response("GET")
	wantStatus(t, resp, 200)
	if s := recv(t, ch, "the handler"); s.Path != "/next" {
		t.Fatalf("the handler saw %q, want only /next", s.Path)
	}
}

func TestFrontExtensionMethod(t *testing.T) {
	h, ch := recorder(nil)
	f := start(t, h)
	c := dial(t, f.addr)
	c.send("PURGE /cache HTTP/1.1\r\nHost: example.com\r\n\r\n")
	resp, _ := c.response("PURGE")
	wantStatus(t, resp, 200)
	if s := recv(t, ch, "the handler"); s.Method != "PURGE" {
		t.Fatalf("method %q", s.Method)
	}
}

// An empty line after a request's body, before the next request line (old clients send
// one after a POST body), is skipped.
func TestFrontEmptyLineAfterBody(t *testing.T) {
	h, ch := recorder(nil)
	f := start(t, h)
	c := dial(t, f.addr)
	c.send("POST /p HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\n\r\nab\r\n" + get("/lead"))
	for _, want := range []string{"/p", "/lead"} {
		resp, _ := c.response("GET")
		wantStatus(t, resp, 200)
		if s := recv(t, ch, "the handler"); s.Path != want {
			t.Fatalf("path %q, want %q", s.Path, want)
		}
	}
}

// RFC 9112 section 2.2: a server SHOULD ignore at least one empty line received before the
// request line. The edge passes a leading CRLF on (its comment says net/http skips it), but
// net/http does not: the client gets net/http's 400.
func TestFrontLeadingEmptyLine(t *testing.T) {
	h, ch := recorder(nil)
	f := start(t, h)
	c := dial(t, f.addr)
	c.send("\r\n" + get("/lead"))
	resp, _ := c.response("GET")
	wantStatus(t, resp, 200)
	if s := recv(t, ch, "the handler"); s.Path != "/lead" {
		t.Fatalf("path %q", s.Path)
	}
}

// Request targets and fields that are accepted, and what the handler makes of them.
func TestFrontAcceptedForms(t *testing.T) {
	const H = "Host: example.com\r\n"
	cases := []struct {
		name, req               string
		method, uri, path, host string
		body                    string
	}{
		{"https absolute-form", "GET https://t.example/p HTTP/1.1\r\n" + H + "\r\n", "GET", "https://t.example/p", "/p", "t.example", ""},
		{"other scheme", "GET ftp://t.example/p HTTP/1.1\r\n" + H + "\r\n", "GET", "ftp://t.example/p", "/p", "t.example", ""},
		{"absolute-form HTTP/1.0 no Host", "GET http://t.example/p HTTP/1.0\r\n\r\n", "GET", "http://t.example/p", "/p", "t.example", ""},
		// Methods are case-sensitive: "get" is an extension method, not GET.
		{"lowercase method", "get / HTTP/1.1\r\n" + H + "\r\n", "get", "/", "/", "example.com", ""},
		{"empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", "GET", "/", "/", "", ""},
		{"IPv6 Host", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", "GET", "/", "/", "[::1]:8080", ""},
		{"dot segments kept", "GET //x/../y HTTP/1.1\r\n" + H + "\r\n", "GET", "//x/../y", "//x/../y", "example.com", ""},
		{"TE case-insensitive", "POST / HTTP/1.1\r\n" + H + "Transfer-Encoding: Chunked\r\n\r\n1\r\na\r\n0\r\n\r\n", "POST", "/", "/", "example.com", "a"},
		{"CL leading zeros", "POST / HTTP/1.1\r\n" + H + "Content-Length: 003\r\n\r\nabc", "POST", "/", "/", "example.com", "abc"},
		{"CL no space, trailing space", "POST / HTTP/1.1\r\n" + H + "Content-Length:3 \r\n\r\nabc", "POST", "/", "/", "example.com", "abc"},
		{"CONNECT", "CONNECT t.example:443 HTTP/1.1\r\nHost: t.example:443\r\n\r\n", "CONNECT", "t.example:443", "", "t.example:443", ""},
	}
	h, ch := recorder(nil)
	f := start(t, h)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, f.addr)
			c.send(tc.req)
			resp := c.head(tc.method)
			wantStatus(t, resp, 200)
			s := recv(t, ch, "the handler")
			if s.Method != tc.method || s.RequestURI != tc.uri || s.Path != tc.path || s.Host != tc.host || string(s.Body) != tc.body {
				t.Fatalf("handler saw %q %q path %q host %q body %q", s.Method, s.RequestURI, s.Path, s.Host, s.Body)
			}
		})
	}
}

// RFC 9112 section 3.2: a server MUST answer 400 to a request whose Host is not a valid
// uri-host [":" port]. Today such a Host reaches the handler (and a backend) as sent.
func TestFrontInvalidHostPort(t *testing.T) {
	for _, host := range []string{"a:b", "a:80:90", "a:-1"} {
		t.Run(host, func(t *testing.T) {
			h, ch := recorder(nil)
			f := start(t, h)
			c := dial(t, f.addr)
			c.send("GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
			resp, _ := c.response("GET")
			wantStatus(t, resp, 400)
			c.closed()
			noCall(t, ch)
		})
	}
}

// RFC 9112 section 3.2: every HTTP/1.1 request without Host gets 400, CONNECT included.
// net/http exempts CONNECT and takes its authority-form target as the Host.
func TestFrontConnectWithoutHost(t *testing.T) {
	h, ch := recorder(nil)
	f := start(t, h)
	c := dial(t, f.addr)
	c.send("CONNECT t.example:443 HTTP/1.1\r\n\r\n")
	resp, _ := c.response("CONNECT")
	wantStatus(t, resp, 400)
	c.closed()
	noCall(t, ch)
}
