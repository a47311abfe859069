package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/spillway/spillway/configs"
)

const headerRequestID = "X-Request-Id"

// headerPolicy is the compiled headers section of a config.
type headerPolicy struct {
	// via10, via11 and via2 are the Via entries for a message received in HTTP/1.0,
	// HTTP/1.1 and HTTP/2 ("1.1 spillway"); all "" for no Via.
	via10, via11, via2 string
	viaLists           [3][]string // {via11}, {via2}, {via10}
	underscores        underscorePolicy
}

type underscorePolicy uint8

const (
	underscoresDrop underscorePolicy = iota
	underscoresReject
	underscoresAllow
)

func newHeaderPolicy(h configs.Headers) headerPolicy {
	var p headerPolicy
	if h.Via != "" {
		p.via10, p.via11, p.via2 = "1.0 "+h.Via, "1.1 "+h.Via, "2 "+h.Via
		p.viaLists = [3][]string{{p.via11}, {p.via2}, {p.via10}}
	}
	switch h.Underscores {
	case "reject":
		p.underscores = underscoresReject
	case "allow":
		p.underscores = underscoresAllow
	}
	return p
}

// addVia appends the proxy's entry to a message's Via header (RFC 9110 section 7.6.3): the
// protocol version the message was received with, then the proxy's name.
func (p *headerPolicy) addVia(h http.Header, major, minor int) {
	v := p.via11
	switch {
	case v == "":
		return
	case major == 2:
		v = p.via2
	case major == 1 && minor == 0:
		v = p.via10
	}
	if old, ok := h["Via"]; ok {
		h["Via"] = append(old, v)
		return
	}
	// Most messages carry no Via yet: share one read-only slice rather than make one each
	// time (its capacity is 1, so an append elsewhere copies it).
	switch v {
	case p.via11:
		h["Via"] = p.viaLists[0][:1:1]
	case p.via2:
		h["Via"] = p.viaLists[1][:1:1]
	default:
		h["Via"] = p.viaLists[2][:1:1]
	}
}

// underscored applies the underscore policy to a request's headers: with drop, it removes
// every header whose name has a "_"; with reject, it reports whether there is one (the
// request is then refused). CGI-style backends (and anything that maps headers onto
// environment variables) read X_Forwarded_For as X-Forwarded-For: a client could pass off
// its own value as the proxy's.
func (p *headerPolicy) underscored(h http.Header) (refuse bool) {
	if p.underscores == underscoresAllow {
		return false
	}
	for name := range h {
		if strings.IndexByte(name, '_') < 0 {
			continue
		}
		if p.underscores == underscoresReject {
			return true
		}
		delete(h, name)
	}
	return false
}

// requestIDs makes request IDs: a random per-process prefix and a counter, unique without a
// syscall per request.
type requestIDs struct {
	prefix string
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs {
	var b [8]byte
	rand.Read(b[:])
	return &requestIDs{prefix: hex.EncodeToString(b[:]) + "-"}
}

// ensure returns the request's X-Request-Id, first setting a new one when the request has
// none or one that is not a plausible ID (at most 128 of [A-Za-z0-9._:-]). A new one is
// held in slot, which the header's value then is (the exchange's: no slice of its own).
func (ids *requestIDs) ensure(h http.Header, slot *[1]string) string {
	if v := h[headerRequestID]; len(v) == 1 && validRequestID(v[0]) {
		return v[0]
	}
	var b [64]byte
	slot[0] = string(strconv.AppendUint(append(b[:0], ids.prefix...), ids.n.Add(1), 36))
	h[headerRequestID] = slot[:]
	return slot[0]
}

func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// modifyResponse is the part of every forwarder's ModifyResponse that concerns headers
// (Table.modifyResponse is the whole). The client gets the request's ID back,
// whatever the backend said; and a 101 Switching Protocols, which ReverseProxy passes on
// with its headers untouched, loses its hop-by-hop headers like any other response.
func modifyResponse(res *http.Response) {
	// (The request's own one-value slice, capacity 1, as Rewrite shares it with the request
	// to the backend: nothing writes into a header's slice, and an append copies it.)
	if id := res.Request.Header[headerRequestID]; len(id) > 0 && id[0] != "" {
		res.Header[headerRequestID] = id[:1:1]
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		h := res.Header
		for _, v := range h["Connection"] {
			for name := range strings.SplitSeq(v, ",") {
				if name = strings.TrimSpace(name); !strings.EqualFold(name, "Upgrade") {
					h.Del(name)
				}
			}
		}
		for _, name := range hopByHop {
			h.Del(name)
		}
		h.Set("Connection", "Upgrade")
	}
}

// hopByHop are the headers that belong to one connection (RFC 9110 section 7.6.1), apart
// from Connection and Upgrade themselves.
var hopByHop = []string{"Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding"}

// dropNonWebSocketUpgrade removes an Upgrade request header that is not a WebSocket
// handshake, so the request is served as plain HTTP (RFC 9110 lets a server ignore
// Upgrade). In particular "Upgrade: h2c" is never tunnelled to a backend.
func dropNonWebSocketUpgrade(h http.Header) {
	up, ok := h["Upgrade"]
	if !ok {
		return
	}
	if len(up) == 1 && strings.EqualFold(strings.TrimSpace(up[0]), "websocket") &&
		hasToken(h["Connection"], "upgrade") {
		return
	}
	delete(h, "Upgrade")
}

// hasToken reports whether a comma-separated header (e.g. Connection) lists token.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
