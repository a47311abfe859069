package telemetry

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/spillway/spillway/proxy"
)

// liveSeconds is how far back Live remembers, one count per second.
const liveSeconds = 300

// Live counts, for every second of the last five minutes, what each site answered, what
// failed, what spilled and what was shed: the live share and rates of the state API, the
// metrics and the dashboard. It is a proxy.Recorder and the Reloader's runtime.Live; the zero
// value is not usable, call NewLive. Safe for concurrent use; Record takes no lock.
type Live struct {
	now     func() time.Time
	mu      sync.Mutex // serialises adding a site
	sites   sync.Map   // name → *liveSite
	total   liveRing
	spilled liveRing
	shed    liveRing
}

type liveSite struct {
	answers, errors, spilledFrom, spilledTo liveRing
}

// liveRing is a count per second, in a ring of liveSeconds slots.
type liveRing struct {
	slots [liveSeconds]liveSlot
}

type liveSlot struct {
	sec atomic.Int64
	n   atomic.Int64
}

func (r *liveRing) add(sec int64) {
	s := &r.slots[sec%liveSeconds]
	if old := s.sec.Load(); old != sec && s.sec.CompareAndSwap(old, sec) {
		s.n.Store(0) // a count racing the reset may be lost; a live view can afford it
	}
	s.n.Add(1)
}

// at is the count of second sec, if the ring still has it.
func (r *liveRing) at(sec int64) int64 {
	s := &r.slots[sec%liveSeconds]
	if s.sec.Load() != sec {
		return 0
	}
	return s.n.Load()
}

// sum is the count of the n seconds before sec (sec itself, still counting, excluded).
func (r *liveRing) sum(sec int64, n int) int64 {
	var total int64
	for i := int64(1); i <= int64(n); i++ {
		total += r.at(sec - i)
	}
	return total
}

// NewLive returns an empty Live reading the clock now (nil: time.Now).
func NewLive(now func() time.Time) *Live {
	if now == nil {
		now = time.Now
	}
	return &Live{now: now}
}

func (l *Live) site(name string) *liveSite {
	if s, ok := l.sites.Load(name); ok {
		return s.(*liveSite)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s, _ := l.sites.LoadOrStore(name, new(liveSite))
	return s.(*liveSite)
}

// Record counts one finished request in the second it ended.
func (l *Live) Record(info *proxy.RequestInfo) {
	sec := info.Start.Add(info.Duration).Unix()
	l.total.add(sec)
	if info.Shed() {
		l.shed.add(sec)
	}
	if info.Site == "" {
		return
	}
	s := l.site(info.Site)
	if info.Reason == "" {
		s.answers.add(sec)
	} else if info.Failed() {
		s.errors.add(sec)
	}
	if info.Spill != "" && info.Preferred != "" {
		l.spilled.add(sec)
		s.spilledTo.add(sec)
		l.site(info.Preferred).spilledFrom.add(sec)
	}
}

// shareWindow is the span of the live share and rates: the last 10 full seconds.
const shareWindow = 10

// Site returns site's rates and its share of all answers, over the last 10 seconds.
func (l *Live) Site(name string, sites []string) (LiveRates, float64) {
	sec := l.now().Unix()
	s := l.site(name)
	answers := s.answers.sum(sec, shareWindow)
	var all int64
	for _, n := range sites {
		all += l.site(n).answers.sum(sec, shareWindow)
	}
	share := 0.0
	if all > 0 {
		share = float64(answers) / float64(all)
	}
	return LiveRates{
		Requests:    float64(answers) / shareWindow,
		Errors:      float64(s.errors.sum(sec, shareWindow)) / shareWindow,
		SpilledFrom: float64(s.spilledFrom.sum(sec, shareWindow)) / shareWindow,
		SpilledTo:   float64(s.spilledTo.sum(sec, shareWindow)) / shareWindow,
	}, share
}

// Totals returns the request and shed rates over the last 10 seconds.
func (l *Live) Totals() (requests, shed float64) {
	sec := l.now().Unix()
	return float64(l.total.sum(sec, shareWindow)) / shareWindow, float64(l.shed.sum(sec, shareWindow)) / shareWindow
}

// History returns the last n full seconds (at most five minutes), oldest first, for sites.
func (l *Live) History(sites []string, n int) []HistoryPoint {
	n = min(n, liveSeconds-1)
	sec := l.now().Unix()
	out := make([]HistoryPoint, 0, n)
	for t := sec - int64(n); t < sec; t++ {
		p := HistoryPoint{T: t, Answers: make(map[string]int64, len(sites)),
			Spilled: l.spilled.at(t), Shed: l.shed.at(t)}
		for _, name := range sites {
			p.Answers[name] = l.site(name).answers.at(t)
		}
		out = append(out, p)
	}
	return out
}

// LiveRates are a site's per-second rates over the last 10 seconds.
type LiveRates struct {
	Requests    float64 `json:"requests"`
	Errors      float64 `json:"errors"`
	SpilledFrom float64 `json:"spilled_from"`
	SpilledTo   float64 `json:"spilled_to"`
}

// HistoryPoint is one second: what each site answered, and what spilled and was shed.
type HistoryPoint struct {
	T       int64            `json:"t"` // Unix seconds
	Answers map[string]int64 `json:"answers"`
	Spilled int64            `json:"spilled"`
	Shed    int64            `json:"shed"`
}
