package frontend_test

// A pipelining stress: many requests of every body framing, some bodies read, some left
// unread, sent in one stream cut at random places, must each reach their handler whole
// and be answered in order.

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// pipelineReq is one request of the stream and what its handler must see.
type pipelineReq struct {
	raw, path, body, trailer string
}

// makePipeline makes n requests: GETs, Content-Length and chunked POSTs (with extensions
// and trailers), HTTP/1.0 keep-alive POSTs, and bodies from none to 20 KB.
func makePipeline(rng *rand.Rand, n int) []pipelineReq {
	var reqs []pipelineReq
	for i := range n {
		path := fmt.Sprintf("/%d", i)
		if rng.IntN(3) == 0 {
			path += "/unread"
		}
		size := []int{0, 1, 100, 4095, 4096, 4097, 20000}[rng.IntN(7)]
		body := strings.Repeat(string(rune('a'+i%26)), size)
		var r pipelineReq
		switch rng.IntN(4) {
		case 0:
			r = pipelineReq{raw: "GET " + path + " HTTP/1.1\r\nHost: example.com\r\n\r\n", path: path}
		case 1:
			r = pipelineReq{raw: "POST " + path + " HTTP/1.1\r\nHost: example.com\r\nContent-Length: " +
				strconv.Itoa(size) + "\r\n\r\n" + body, path: path, body: body}
		case 2:
			r = pipelineReq{raw: "POST " + path + " HTTP/1.0\r\nHost: example.com\r\nConnection: keep-alive\r\nContent-Length: " +
				strconv.Itoa(size) + "\r\n\r\n" + body, path: path, body: body}
		default:
			var b strings.Builder
			b.WriteString("POST " + path + " HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n")
			for rest := body; rest != ""; {
				k := min(len(rest), 1+rng.IntN(5000))
				fmt.Fprintf(&b, "%x;ext=%d\r\n%s\r\n", k, k, rest[:k])
				rest = rest[k:]
			}
			b.WriteString("0\r\nX-T: " + path + "\r\n\r\n")
			r = pipelineReq{raw: b.String(), path: path, body: body, trailer: path}
		}
		reqs = append(reqs, r)
	}
	return reqs
}

func TestAttackPipelineStress(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			reqs := makePipeline(rng, 60)
			seenCh := make(chan pipelineReq, len(reqs))
			f := start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got := pipelineReq{path: r.URL.Path}
				if !strings.HasSuffix(r.URL.Path, "/unread") {
					b, err := io.ReadAll(r.Body)
					if err != nil {
						t.Errorf("%s: body: %v", r.URL.Path, err)
					}
					got.body, got.trailer = string(b), r.Trailer.Get("X-T")
				}
				seenCh <- got
				io.WriteString(w, "answer "+r.URL.Path)
			}))
			var stream strings.Builder
			for _, r := range reqs {
				stream.WriteString(r.raw)
			}
			c := dial(t, f.addr)
			go func() {
				s := stream.String()
				for s != "" {
					k := min(len(s), 1+rng.IntN(3000))
					if _, err := io.WriteString(c.c, s[:k]); err != nil {
						return
					}
					s = s[k:]
				}
			}()
			for _, want := range reqs {
				resp, body := c.response(strings.SplitN(want.raw, " ", 2)[0])
				if resp.StatusCode != 200 || body != "answer "+want.path {
					t.Fatalf("answer %d %q, want the one to %s", resp.StatusCode, body, want.path)
				}
				got := recv(t, seenCh, "the handler")
				if got.path != want.path {
					t.Fatalf("handler saw %s, want %s", got.path, want.path)
				}
				if strings.HasSuffix(want.path, "/unread") {
					continue
				}
				if got.body != want.body || got.trailer != want.trailer {
					t.Fatalf("%s: body %d bytes (want %d), trailer %q (want %q)", want.path, len(got.body), len(want.body), got.trailer, want.trailer)
				}
			}
		})
	}
}
