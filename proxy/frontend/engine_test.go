package frontend_test

import (
	"net/http"
	"testing"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy/frontend"
)

// listen.engine chooses who serves HTTP/1.1 on the plain listener: Spillway's engine by
// default, net/http's server (through the edge) with "net/http". The two are told apart by
// what only net/http's has (the edge's Conn behind the request) and by what only
// Spillway's refuses (a Host whose port is not digits).
func TestListenEngineChoosesTheHTTP1Server(t *testing.T) {
	for _, tc := range []struct {
		engine    string
		edgeConn  bool
		badHostOK bool
	}{
		{configs.EngineSpillway, false, false},
		{configs.EngineNetHTTP, true, true},
	} {
		t.Run(tc.engine, func(t *testing.T) {
			cfg := frontConfig(t, "")
			if cfg.Listen.Engine != configs.EngineSpillway {
				t.Fatalf("listen.engine defaults to %q, want spillway", cfg.Listen.Engine)
			}
			cfg.Listen.Engine = tc.engine
			seen := make(chan bool, 2)
			f := startFront(t, cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen <- frontend.ConnOf(r) != nil
			}))
			c := dial(t, f.addr)
			c.send(get("/"))
			wantStatus(t, c.resp("GET"), 200)
			if got := recv(t, seen, "the handler"); got != tc.edgeConn {
				t.Errorf("the request came through the edge's Conn: %v, want %v", got, tc.edgeConn)
			}
			c.send("GET / HTTP/1.1\r\nHost: a:b\r\n\r\n")
			resp := c.resp("GET")
			if got := resp.StatusCode == 200; got != tc.badHostOK {
				t.Errorf(`"Host: a:b" answered %d`, resp.StatusCode)
			}
		})
	}
}

func (c *rawConn) resp(method string) *http.Response {
	c.t.Helper()
	resp, _ := c.response(method)
	return resp
}
