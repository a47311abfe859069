package bench

import (
	"context"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway/spillway/bench/sim"
)

func TestScheduleConstant(t *testing.T) {
	s := Schedule(Constant(200), Uniform, 3*time.Second, 0, nil)
	if len(s) != 600 {
		t.Fatalf("200/s for 3s: %d requests, want 600", len(s))
	}
	for i := 1; i < len(s); i++ {
		if gap := s[i] - s[i-1]; gap < 4999*time.Microsecond || gap > 5001*time.Microsecond {
			t.Fatalf("gap %d is %s, want 5ms", i, gap)
		}
	}
	if s[0] != 0 || s[len(s)-1] >= 3*time.Second {
		t.Fatalf("first %s last %s", s[0], s[len(s)-1])
	}
}

func TestSchedulePoisson(t *testing.T) {
	// Counts over a long run are Poisson: within 4 standard deviations of rate × duration.
	for seed := range uint64(5) {
		rng := rand.New(rand.NewPCG(seed, 7))
		s := Schedule(Constant(1000), Poisson, 10*time.Second, 0, rng)
		want := 10000.0
		if d := math.Abs(float64(len(s)) - want); d > 4*math.Sqrt(want) {
			t.Errorf("seed %d: %d requests, want %.0f ± %.0f", seed, len(s), want, 4*math.Sqrt(want))
		}
		// Gaps are exponential: their coefficient of variation is 1 (uniform would be 0).
		var sum, sq float64
		for i := 1; i < len(s); i++ {
			g := float64(s[i] - s[i-1])
			sum += g
			sq += g * g
		}
		n := float64(len(s) - 1)
		mean := sum / n
		cv := math.Sqrt(sq/n-mean*mean) / mean
		if cv < 0.9 || cv > 1.1 {
			t.Errorf("seed %d: gaps' coefficient of variation %.3f, want about 1", seed, cv)
		}
	}
	a := Schedule(Constant(100), Poisson, time.Second, 0, rand.New(rand.NewPCG(9, 9)))
	b := Schedule(Constant(100), Poisson, time.Second, 0, rand.New(rand.NewPCG(9, 9)))
	if len(a) != len(b) || a[len(a)-1] != b[len(b)-1] {
		t.Error("the same seed gave two schedules")
	}
}

func TestScheduleProfiles(t *testing.T) {
	count := func(s []time.Duration, from, to time.Duration) int {
		n := 0
		for _, x := range s {
			if x >= from && x < to {
				n++
			}
		}
		return n
	}
	for _, tc := range []struct {
		name    string
		p       Profile
		windows [][2]time.Duration
		want    []int
	}{
		{"step", Step(100, 300, time.Second), [][2]time.Duration{{0, time.Second}, {time.Second, 2 * time.Second}}, []int{100, 300}},
		{"spike", Spike(100, 500, time.Second, 2*time.Second), [][2]time.Duration{{0, time.Second}, {time.Second, 2 * time.Second}, {2 * time.Second, 3 * time.Second}}, []int{100, 500, 100}},
		{"ramp", Ramp(0, 400, 0, 2*time.Second), [][2]time.Duration{{0, time.Second}, {time.Second, 2 * time.Second}}, []int{100, 300}},
		{"idle then constant", Step(0, 100, time.Second), [][2]time.Duration{{0, time.Second}, {time.Second, 2 * time.Second}}, []int{0, 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			end := tc.windows[len(tc.windows)-1][1]
			s := Schedule(tc.p, Uniform, end, 0, nil)
			for i, w := range tc.windows {
				// A rate change lands between two gaps: allow the one request it moves.
				if got := count(s, w[0], w[1]); math.Abs(float64(got-tc.want[i])) > 2 {
					t.Errorf("[%s, %s): %d requests, want %d", w[0], w[1], got, tc.want[i])
				}
			}
		})
	}
	if s := Schedule(Constant(1000), Uniform, time.Hour, 50, nil); len(s) != 50 {
		t.Errorf("bounded to 50 requests: got %d", len(s))
	}
}

func TestGenerateRefusesAnythingButLoopback(t *testing.T) {
	for _, target := range []string{"http://10.0.0.1/", "http://example.com/", "http://0.0.0.0:80/"} {
		if _, err := Generate(context.Background(), LoadOptions{Target: target, Schedule: []time.Duration{0}}); err == nil ||
			!strings.Contains(err.Error(), "loopback") {
			t.Errorf("%s: %v", target, err)
		}
	}
}

func TestGenerateRecordsEveryRequest(t *testing.T) {
	b, err := sim.StartWith("127.0.0.1:0", sim.Options{Site: "idc1", Name: "idc1-1", Capacity: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sched := Schedule(Constant(500), Uniform, 200*time.Millisecond, 0, nil)
	var mu sync.Mutex
	seen := 0
	recs, err := Generate(context.Background(), LoadOptions{Target: b.URL() + "/", Schedule: sched, Sites: []string{"aws", "idc1"},
		OnRecord: func(Record) { mu.Lock(); seen++; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(sched) || seen != len(sched) {
		t.Fatalf("%d records, %d seen, for %d requests", len(recs), seen, len(sched))
	}
	for i, r := range recs {
		if r.Outcome != OK || r.Status != 200 || r.Site != 1 || r.Sched != sched[i] || r.Latency <= 0 || r.Sent < r.Sched {
			t.Fatalf("record %d: %+v", i, r)
		}
	}
}

// A request due while MaxInflight are out is not sent, and says so: the generator never
// waits for an answer before sending the next (open loop).
func TestGenerateOverflowIsCountedNotQueued(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer srv.CloseClientConnections()
	var once sync.Once
	var mu sync.Mutex
	overflow := 0
	recs, err := Generate(context.Background(), LoadOptions{Target: srv.URL, Schedule: make([]time.Duration, 5), MaxInflight: 2,
		OnRecord: func(r Record) {
			mu.Lock()
			defer mu.Unlock()
			if r.Outcome == Overflow {
				if overflow++; overflow == 3 {
					once.Do(func() { close(release) })
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	counts := map[Outcome]int{}
	for _, r := range recs {
		counts[r.Outcome]++
	}
	if counts[OK] != 2 || counts[Overflow] != 3 {
		t.Fatalf("outcomes %v, want 2 ok and 3 not sent", counts)
	}
}

func TestClassifyAnswer(t *testing.T) {
	for _, tc := range []struct {
		status   int
		fromSite bool
		err      error
		want     Outcome
	}{
		{200, true, nil, OK},
		{204, false, nil, OK},
		{503, false, nil, Shed},
		{503, true, nil, Status5xx},
		{502, false, nil, Status5xx},
		{404, true, nil, Status4xx},
		{0, false, context.DeadlineExceeded, Failed},
		{200, true, context.Canceled, Failed},
	} {
		if got := classifyAnswer(tc.status, tc.fromSite, tc.err); got != tc.want {
			t.Errorf("status %d from site %v err %v: %s, want %s", tc.status, tc.fromSite, tc.err, got, tc.want)
		}
	}
}
