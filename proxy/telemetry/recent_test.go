package telemetry_test

import (
	"testing"
	"time"

	"github.com/spillway/spillway/proxy"
	"github.com/spillway/spillway/proxy/telemetry"
)

// Recent keeps the last n requests, finds them by ID, and forgets the older ones.
func TestRecentKeepsTheLastRequests(t *testing.T) {
	r := telemetry.NewRecent(2)
	for _, id := range []string{"a", "b", "c"} {
		r.Record(&proxy.RequestInfo{ID: id, Status: 200})
	}
	if _, ok := r.Find("a"); ok {
		t.Error("a is still kept, after two more requests in a ring of 2")
	}
	if info, ok := r.Find("c"); !ok || info.ID != "c" {
		t.Errorf("Find(c) = %+v %v, want it", info, ok)
	}
	if _, ok := r.Find(""); ok {
		t.Error("Find(\"\") found an empty slot")
	}
	r.Resize(5)
	if r.Size() != 5 {
		t.Errorf("Size after Resize(5) = %d", r.Size())
	}
	if _, ok := r.Find("c"); ok {
		t.Error("c is still kept after Resize")
	}
}

// Explain says in one sentence what chose the site, why the request went elsewhere, and
// how it ended.
func TestExplainSentences(t *testing.T) {
	for _, tc := range []struct {
		name string
		info proxy.RequestInfo
		want string
	}{
		{"no site", proxy.RequestInfo{Status: 503, Reason: "no_backend", Duration: time.Millisecond},
			"no site took it; it failed: no_backend; answered 503 in 1ms."},
		{"spilled", proxy.RequestInfo{Preferred: "idc1", Site: "aws", Backend: "10.0.0.9:80", Spill: "saturated",
			Chosen: "split", Status: 200, Queued: 2 * time.Millisecond, Duration: 5 * time.Millisecond},
			"the split preferred idc1; idc1 was full, so it spilled to aws; backend 10.0.0.9:80; it waited 2ms for a free slot; answered 200 in 5ms."},
		{"retried", proxy.RequestInfo{Preferred: "idc1", Site: "idc2", Backend: "b:80", Chosen: "affinity", Retries: 1,
			Status: 200, Duration: time.Millisecond},
			"its session (affinity) preferred idc1; it was retried at idc2; backend b:80; 1 retry; answered 200 in 1ms."},
		{"not retried", proxy.RequestInfo{Preferred: "idc1", Site: "idc1", Backend: "a:80", Chosen: "split", Status: 502,
			Reason: "bad_gateway", NoRetry: "not idempotent", Duration: time.Millisecond},
			"the split preferred idc1; backend a:80; it failed: bad_gateway (not retried: not idempotent); answered 502 in 1ms."},
		{"elastic", proxy.RequestInfo{Site: "aws", Status: 200, Duration: time.Millisecond},
			"no site of the split had a backend up; it went to the elastic site aws; answered 200 in 1ms."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := telemetry.Explain(&tc.info); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}
