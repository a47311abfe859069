package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spillway/spillway/bench/sim"
)

// The fleet scenario runs Spillway as a fleet: three `spillway run` replicas sharing one
// etcd, each enforcing its share of every backend's limit, with the load spread over them
// as a balancer in front would; one replica is stopped midway and a replacement joins.

var fleetScenario = Scenario{
	Name:  "fleet",
	Title: "three replicas on one etcd: a replica stops, another joins",
	Description: "Three `spillway run` replicas (child processes of the spillway binary) with the same config and a " +
		"`cluster` section (lease 2s) on one etcd (a child process, Debian's etcd-server; the scenario is skipped " +
		"without it), in front of idc1 (2 backends x 15), idc2 (2 x 9) and an elastic aws pool (2 x 30); every " +
		"max_inflight is a budget for the whole fleet, which each replica enforces a share of. The simulated " +
		"backends accept twice their limit, so what they hold at once is measured, not capped. Open-loop load is " +
		"spread round robin over the replicas' listeners: for the first 30% of the run at 45% of the IDCs' " +
		"capacity, then at 115% of it, so that idc1 and idc2 fill and spill. At half the run one replica is taken " +
		"out of the rotation and stopped (SIGTERM); at 65% a replacement starts, and joins the rotation once ready " +
		"and joined. Judged: the split before the overload within 5 points of 5:3:2; the most requests any " +
		"backend held at once, measured at the backend, never above its max_inflight, over the whole run (the stop " +
		"and the join included); requests not answered 2xx at most those in flight at the stopped replica when it " +
		"was stopped; spills happened and at least 90% of them went to aws (the rest may find room at the other IDC); the replacement joined.",
	run: runFleet,
}

// fleetSites are the fleet's sites: the standard IDCs and a larger elastic pool that takes
// what they spill.
func fleetSites() []SiteSpec {
	return []SiteSpec{
		{Name: "idc1", Weight: 5, Backends: 2, Limit: 15},
		{Name: "idc2", Weight: 3, Backends: 2, Limit: 9},
		{Name: "aws", Weight: 2, Elastic: true, Backends: 2, Limit: 30},
	}
}

// fleetMinDuration is the fleet's shortest run (-short's 4 s cannot fit a stop and a join).
const fleetMinDuration = 8 * time.Second

// fleet is one run of the fleet scenario.
type fleet struct {
	c        *runContext
	sites    []SiteSpec
	names    []string
	backends map[string][]*sim.Backend
	dir, bin string
	etcd     string

	mu       sync.Mutex // replicas, marks, errs
	replicas []*replica // every replica started, in order
	marks    []Mark
	errs     []error
	joined   int // replicas that became ready and joined
	active   atomic.Pointer[[]int]
	stopped  int    // index of the stopped replica; -1: none
	routed   []int8 // by Seq: the replica each request went to
}

func runFleet(ctx context.Context, c *runContext) (*Result, error) {
	r := &Result{Params: map[string]any{}, Figures: map[string]float64{}}
	etcdBin, err := lookEtcd()
	switch {
	case c.SpillwayBinary == "":
		r.Verdict, r.Note = Skip, "no spillway binary given (run `spillway bench`)"
		return r, nil
	case err != nil:
		r.Verdict, r.Note = Skip, "etcd: not installed (Debian's etcd-server), skipped"
		return r, nil
	}
	f := &fleet{c: c, sites: fleetSites(), backends: map[string][]*sim.Backend{}, bin: c.SpillwayBinary,
		dir: filepath.Join(c.dir, "fleet"), stopped: -1}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return nil, err
	}
	defer f.close()
	if err := f.startBackends(); err != nil {
		return nil, err
	}
	etcdURL, etcdChild, err := startEtcd(ctx, etcdBin, f.dir)
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	defer etcdChild.stop()
	f.etcd = etcdURL
	for range 3 {
		if _, err := f.addReplica(); err != nil {
			return nil, err
		}
	}
	for i, rep := range f.replicas {
		if err := rep.waitJoined(ctx, time.Minute); err != nil {
			return nil, fmt.Errorf("replica %s: %w", rep.node, err)
		}
		f.joined++
		f.setActive(append(f.activeList(), i))
	}
	data, err := f.drive(ctx)
	if err != nil {
		return nil, err
	}
	c.lastRun = data
	f.result(r, data)
	return r, nil
}

func (f *fleet) startBackends() error {
	for _, s := range f.sites {
		f.names = append(f.names, s.Name)
		for j := range s.Backends {
			b, err := sim.StartWith("127.0.0.1:0", sim.Options{Site: s.Name, Name: fmt.Sprintf("%s-%d", s.Name, j+1),
				Service: service, Capacity: 2 * s.Limit, Overflow: sim.Reject, HealthPath: "/healthz",
				Seed: f.c.Seed + uint64(len(f.names)*100+j)})
			if err != nil {
				return err
			}
			f.backends[s.Name] = append(f.backends[s.Name], b)
		}
	}
	return nil
}

// addReplica starts replica r<N+1>; it does not wait for it.
func (f *fleet) addReplica() (int, error) {
	f.mu.Lock()
	node := "r" + strconv.Itoa(len(f.replicas)+1)
	f.mu.Unlock()
	rep, err := startReplica(f.bin, f.dir, node, f.etcd, f.sites, f.backends)
	if err != nil {
		return 0, fmt.Errorf("replica %s: %w", node, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.replicas = append(f.replicas, rep)
	return len(f.replicas) - 1, nil
}

func (f *fleet) activeList() []int {
	if p := f.active.Load(); p != nil {
		return append([]int(nil), *p...)
	}
	return nil
}

func (f *fleet) setActive(l []int) { f.active.Store(&l) }

// close stops every replica still running and the backends.
func (f *fleet) close() {
	f.mu.Lock()
	reps := append([]*replica(nil), f.replicas...)
	f.mu.Unlock()
	for i := range reps {
		f.stopReplica(i)
	}
	for _, bs := range f.backends {
		for _, b := range bs {
			b.Close()
		}
	}
}

// stopReplica stops replica i (SIGTERM; killed after 5 s) unless it is stopped already.
func (f *fleet) stopReplica(i int) {
	f.mu.Lock()
	c := f.replicas[i].child
	f.replicas[i].child = nil
	f.mu.Unlock()
	if c != nil {
		c.stop()
	}
}

// timeline is the run's moments: the overload from high, the stop, the replacement.
type fleetTimeline struct {
	duration, high, stop, join time.Duration
	low, rate                  float64
}

func (f *fleet) timeline() fleetTimeline {
	d := max(f.c.duration, fleetMinDuration)
	frac := func(x float64) time.Duration { return time.Duration(x * float64(d)).Round(time.Millisecond) }
	idc := rps(slots(f.sites[0]) + slots(f.sites[1]))
	return fleetTimeline{duration: d, high: frac(0.3), stop: frac(0.5), join: frac(0.65), low: 0.45 * idc, rate: 1.15 * idc}
}

func (f *fleet) mark(at time.Duration, label string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.marks = append(f.marks, Mark{T: at.Seconds(), Label: label})
}

func (f *fleet) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, err)
}

// events stops replica r2 at tl.stop (out of the rotation first, as a balancer would take
// it out on its failing /readyz) and starts a replacement at tl.join, in the rotation once
// it has joined.
func (f *fleet) events(ctx context.Context, start time.Time, tl fleetTimeline) {
	if !sleepUntil(ctx, start.Add(tl.stop)) {
		return
	}
	const victim = 1
	f.setActive(removeInt(f.activeList(), victim))
	rep := f.replicas[victim]
	if err := rep.scrape(); err != nil {
		f.fail(fmt.Errorf("metrics of %s: %w", rep.node, err))
	}
	f.mark(time.Since(start), rep.node+" stopped (SIGTERM)")
	f.mu.Lock()
	f.stopped = victim
	f.mu.Unlock()
	f.stopReplica(victim)
	if !sleepUntil(ctx, start.Add(tl.join)) {
		return
	}
	i, err := f.addReplica()
	if err != nil {
		f.fail(err)
		return
	}
	nr := f.replicas[i]
	f.mark(time.Since(start), nr.node+" started")
	if err := nr.waitJoined(ctx, 30*time.Second); err != nil {
		f.fail(fmt.Errorf("replacement %s: %w", nr.node, err))
		return
	}
	f.mu.Lock()
	f.joined++
	f.mu.Unlock()
	f.setActive(append(f.activeList(), i))
	f.mark(time.Since(start), nr.node+" joined")
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	tm := time.NewTimer(time.Until(t))
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

func removeInt(l []int, v int) []int {
	out := l[:0:0]
	for _, x := range l {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

// drive sends the load over the active replicas, runs the events and samples what each
// site's backends hold. replicaOf in the returned data's records is by Seq.
func (f *fleet) drive(ctx context.Context) (*runData, error) {
	tl := f.timeline()
	rng := rand.New(rand.NewPCG(f.c.Seed, 0x5eed))
	sched := Schedule(Step(tl.low, tl.rate, tl.high), Poisson, tl.duration, maxRequestsPerRun, rng)
	f.routed = make([]int8, len(sched))
	lv := &live{bySite: make([]int, len(f.names))}
	data := &runData{sites: f.names, duration: tl.duration, weights: []weightsAt{{0, []int{5, 3, 2}}}}
	bg, stopBG := context.WithCancel(ctx)
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() { f.events(bg, start, tl) })
	wg.Go(func() { data.samples = f.sample(bg, start) })
	wg.Go(func() { f.progress(bg, start, lv, sched) })
	records, err := Generate(ctx, LoadOptions{Target: f.replicas[0].url + "/", Schedule: sched, Sites: f.names,
		OnRecord: lv.add, MaxInflight: 2000, NewRequest: func(ctx context.Context, i int) (*http.Request, error) {
			act := *f.active.Load()
			k := act[i%len(act)]
			f.routed[i] = int8(k)
			f.mu.Lock()
			u := f.replicas[k].url
			f.mu.Unlock()
			return http.NewRequestWithContext(ctx, http.MethodGet, u+"/", nil)
		}})
	stopBG()
	wg.Wait()
	if err != nil {
		return nil, err
	}
	data.records = records
	data.marks = append([]Mark{{T: tl.high.Seconds(), Label: "overload"}}, f.marks...)
	return data, nil
}

// sample reads what every site's backends hold, every sampleEvery, until ctx ends.
func (f *fleet) sample(ctx context.Context, start time.Time) []sample {
	var out []sample
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return out
		case <-tick.C:
		}
		s := sample{t: time.Since(start)}
		for _, site := range f.sites {
			var in int64
			for _, b := range f.backends[site.Name] {
				in += b.Stats().Inflight
			}
			s.inflight = append(s.inflight, in)
			s.limit = append(s.limit, int64(slots(site)))
		}
		out = append(out, s)
	}
}

// progress prints a line a second: offered and achieved rate, each site's share, the
// replicas in the rotation.
func (f *fleet) progress(ctx context.Context, start time.Time, lv *live, sched []time.Duration) {
	if f.c.Progress == nil {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	next, last := 0, time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Since(start)
		offered := 0
		for next < len(sched) && sched[next] <= now {
			offered++
			next++
		}
		span := (now - last).Seconds()
		last = now
		ok, errs, bySite, p99 := lv.take()
		var sb strings.Builder
		fmt.Fprintf(&sb, "%-10s %5.0fs  offered %5.0f/s  achieved %5.0f/s ", "fleet", now.Seconds(),
			float64(offered)/span, float64(ok)/span)
		for i, name := range f.names {
			fmt.Fprintf(&sb, " %s %5.1f%%", name, pct(bySite[i], ok))
		}
		fmt.Fprintf(&sb, "  p99 %6s  errors %d  replicas in rotation %d\n", fmtMS(p99), errs, len(f.activeList()))
		io.WriteString(f.c.Progress, sb.String())
	}
}
