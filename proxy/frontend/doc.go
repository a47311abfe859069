// Package frontend is Spillway's client-facing side: the servers and listeners that accept
// client connections; Spillway's own HTTP/1.1 engine for plain connections (h1.go and the
// files it names), which parses with the framing rules of package framing; the edge that
// hardens net/http's connections (TLS, and listen.engine: net/http) the same way (framing
// checked on the raw bytes before net/http reads them, refusals answered by the edge
// itself); and front TLS (the server's TLS settings, certificates from files reloaded when
// they change or obtained over ACME, HSTS and the redirect to HTTPS). Its one job is to
// bring clients' requests to an http.Handler, whichever: it knows nothing of how they are
// forwarded.
//
// A handler learns what net/http cannot tell it about the connection a request came in on
// (its TLS state, whether the edge failed its body) from ConnOf; a request the engine
// serves has no such Conn (ConnOf is nil), as its body's framing errors are *framing.Error
// and its connection is never TLS.
package frontend
