package frontend

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/spillway/spillway/proxy/framing"
)

// newRequest makes the Request of a head the Framer has checked (request line, field
// lines, framing), with net/http's rules for what the Framer does not check: the Host
// header (required in HTTP/1.1, well formed), the target, and the Request's fields as
// net/http's server fills them, so that a handler cannot tell the engines apart.
//
// All its strings are cut from one copy of the head.
func (x *h1exchange) newRequest(b []byte) (*http.Request, *framing.Error) {
	head := string(b)
	line, fields, _ := strings.Cut(head[:len(head)-2], "\r\n")
	sp1 := strings.IndexByte(line, ' ')
	sp2 := sp1 + 1 + strings.IndexByte(line[sp1+1:], ' ')
	req := &x.req
	req.Method = method(line[:sp1])
	req.RequestURI = line[sp1+1 : sp2]
	req.Proto = line[sp2+1:]
	req.ProtoMajor, req.ProtoMinor = 1, int(req.Proto[7]-'0')
	req.RemoteAddr = x.c.remote
	if err := x.parseTarget(); err != nil {
		return nil, err
	}
	req.Header = parseFields(fields)
	if err := x.checkHost(); err != nil {
		return nil, err
	}
	fixPragmaCacheControl(req.Header)
	conn := req.Header["Connection"]
	if req.ProtoMinor == 0 {
		req.Close = !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
	}
	req.Close = req.Close || httpguts.HeaderValuesContainsToken(conn, "close")
	if err := x.setBody(); err != nil {
		return nil, err
	}
	x.ctx, x.cancel = context.WithCancel(x.c.s.ctx)
	return req.WithContext(x.ctx), nil
}

// method returns m, the very string the http package's constants are for the common
// methods (so that a comparison with one is a pointer's).
func method(m string) string {
	switch m {
	case http.MethodGet:
		return http.MethodGet
	case http.MethodPost:
		return http.MethodPost
	case http.MethodHead:
		return http.MethodHead
	case http.MethodPut:
		return http.MethodPut
	}
	return m
}

// parseTarget sets URL and Host from the request target, as net/http does: a CONNECT's
// authority form becomes a Host-only URL.
func (x *h1exchange) parseTarget() *framing.Error {
	req := &x.req
	raw := req.RequestURI
	authority := req.Method == http.MethodConnect && !strings.HasPrefix(raw, "/")
	if authority {
		raw = "http://" + raw
	}
	u, err := url.ParseRequestURI(raw)
	if err != nil {
		return &framing.Error{Status: http.StatusBadRequest, Msg: "malformed request target"}
	}
	if authority {
		u.Scheme = ""
	}
	req.URL = u
	req.Host = u.Host
	return nil
}

// checkHost applies net/http's Host rules: required in HTTP/1.1, well formed, and the
// target's host wins over it; then it leaves the header map, as net/http's Requests have
// it in Host only.
func (x *h1exchange) checkHost() *framing.Error {
	req := &x.req
	hosts, ok := req.Header["Host"]
	switch {
	case req.ProtoMinor == 1 && !ok: // (CONNECT too: RFC 9112 section 3.2)
		return &framing.Error{Status: http.StatusBadRequest, Msg: "missing required Host header"}
	case len(hosts) > 1:
		return &framing.Error{Status: http.StatusBadRequest, Msg: "more than one Host"}
	case len(hosts) == 1 && (!httpguts.ValidHostHeader(hosts[0]) || !validPort(hosts[0])):
		return &framing.Error{Status: http.StatusBadRequest, Msg: "malformed Host header"}
	}
	if req.Host == "" && len(hosts) == 1 {
		req.Host = hosts[0]
	}
	delete(req.Header, "Host")
	return nil
}

// validPort reports whether a Host value's port, if it has one, is digits (RFC 9110
// section 7.2: uri-host [ ":" port ]), which net/http does not check: "a:b" and
// "a:80:90" are refused.
func validPort(host string) bool {
	if strings.HasPrefix(host, "[") { // an IPv6 literal
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return false
		}
		host = host[end+1:]
		if host == "" {
			return true
		}
		if host[0] != ':' {
			return false
		}
	} else if i := strings.IndexByte(host, ':'); i >= 0 {
		host = host[i:]
	} else {
		return true
	}
	for _, c := range []byte(host[1:]) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func fixPragmaCacheControl(h http.Header) {
	if hp, ok := h["Pragma"]; ok && len(hp) > 0 && hp[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
}

// parseFields makes the header map of a head's field lines (checked: "name: value" each,
// CRLF between), with canonical keys; the values share one backing array.
func parseFields(fields string) http.Header {
	if fields == "" {
		return http.Header{}
	}
	n := strings.Count(fields, "\r\n") + 1
	h := make(http.Header, n)
	values := make([]string, n)
	for i := 0; fields != ""; i++ {
		var line string
		line, fields, _ = strings.Cut(fields, "\r\n")
		name, value, _ := strings.Cut(line, ":")
		key := framing.CanonicalKey(name)
		value = strings.Trim(value, " \t")
		if vv, ok := h[key]; ok {
			h[key] = append(vv, value)
			continue
		}
		values[i] = value
		h[key] = values[i : i+1 : i+1]
	}
	return h
}
