package framing

import "net/textproto"

// CanonicalKey is textproto.CanonicalMIMEHeaderKey(k) for a valid field name, without an
// allocation when k is canonical already (it is then returned as it is) or a common
// field's name: the engines that parse heads (the client side's, proxy/frontend, and the
// backend side's, proxy/upstream) key their header maps with it.
func CanonicalKey(k string) string {
	upper := true
	for i := 0; i < len(k); i++ {
		c := k[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return recase(k)
		}
		upper = c == '-'
	}
	return k
}

// recase is CanonicalKey for a k not in canonical form.
func recase(k string) string {
	var buf [48]byte
	if len(k) > len(buf) {
		return textproto.CanonicalMIMEHeaderKey(k)
	}
	b := buf[:len(k)]
	upper := true
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case upper && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case !upper && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		b[i] = c
		upper = c == '-'
	}
	if common, ok := commonKeys[string(b)]; ok {
		return common
	}
	return string(b)
}

// commonKeys interns the field names clients and backends send, often in lower case
// (HTTP/2 habits).
var commonKeys = func() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{
		// requests
		"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cookie", "Expect",
		"Host", "If-Modified-Since", "If-None-Match", "Origin", "Referer", "Te", "User-Agent",
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip",
		// responses
		"Accept-Ranges", "Access-Control-Allow-Credentials", "Access-Control-Allow-Headers",
		"Access-Control-Allow-Methods", "Access-Control-Allow-Origin", "Access-Control-Expose-Headers",
		"Access-Control-Max-Age", "Age", "Alt-Svc", "Content-Disposition", "Content-Encoding",
		"Content-Language", "Content-Location", "Content-Range", "Content-Security-Policy", "Date",
		"Etag", "Expires", "Keep-Alive", "Last-Modified", "Link", "Location", "Proxy-Authenticate",
		"Referrer-Policy", "Retry-After", "Server", "Set-Cookie", "Strict-Transport-Security",
		"Vary", "Www-Authenticate", "X-Content-Type-Options", "X-Frame-Options", "X-Powered-By",
		"X-Xss-Protection",
		// both
		"Cache-Control", "Connection", "Content-Length", "Content-Type", "Pragma", "Trailer",
		"Transfer-Encoding", "Upgrade", "Via", "X-Request-Id",
	} {
		m[k] = k
	}
	return m
}()
