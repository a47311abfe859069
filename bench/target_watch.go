package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// What runs beside target mode's load: the proxy sampled every SampleEvery (where the ramp
// decides whether to go on), and a progress line a second.

// watch samples the proxy every SampleEvery, asking stop (if set) after each sample
// whether the sending should end, and prints a progress line a second, until ctx is done.
func (tl *targetLoad) watch(ctx context.Context, stop func(now time.Duration, st *stepStats) bool) {
	tick := time.NewTicker(tl.tg.o.SampleEvery)
	defer tick.Stop()
	sec := time.NewTicker(time.Second)
	defer sec.Stop()
	var ps progressState
	if len(tl.data.proxy) > 0 {
		ps.prev = tl.data.proxy[0]
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if !tl.sample(ctx, stop) {
				return
			}
		case <-sec.C:
			tl.progress(&ps)
		}
	}
}

// sample reads the proxy's view and asks stop whether the sending should end; false when
// ctx ended during the read (cut short by the end of the run: not a failure of the admin
// API).
func (tl *targetLoad) sample(ctx context.Context, stop func(now time.Duration, st *stepStats) bool) bool {
	now := time.Since(tl.start)
	if view := tl.tg.view; view != nil {
		s := view.sample(ctx, now)
		if ctx.Err() != nil {
			return false
		}
		tl.data.proxy = append(tl.data.proxy, s)
	}
	if stop != nil && stop(now, tl.st) {
		tl.stopOnce.Do(func() {
			tl.data.stopAt = now
			close(tl.stopSend)
		})
	}
	return true
}

// progressState is what one progress line hands the next.
type progressState struct {
	next int           // the first request of the schedule not yet counted as offered
	last time.Duration // when the last line was printed
	prev proxySample   // the sample the last line counted spills and sheds to
}

// progress prints the last second's line: offered and achieved rates, shares by site, p99
// and errors, and with the admin API the proxy's spills and sheds (soak: its memory and
// goroutines). The second's counts are taken even with no Progress to print them to.
func (tl *targetLoad) progress(ps *progressState) {
	now := time.Since(tl.start)
	span := now - ps.last
	ps.last = now
	offered := 0
	for ps.next < len(tl.sched) && tl.sched[ps.next] <= now {
		offered++
		ps.next++
	}
	ok, errs, bySite, p99 := tl.lv.take()
	w := tl.tg.o.Progress
	if w == nil {
		return
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%-8s %5.0fs  offered %6.0f/s  achieved %6.0f/s ", tl.name, now.Seconds(),
		float64(offered)/span.Seconds(), float64(ok)/span.Seconds())
	for i, n := range tl.names.Names() {
		if i < len(bySite) && bySite[i] > 0 {
			fmt.Fprintf(&sb, " %s %5.1f%%", n, pct(bySite[i], ok))
		}
	}
	fmt.Fprintf(&sb, "  p99 %6s  errors %d", fmtMS(p99), errs)
	if n := len(tl.data.proxy); n > 0 && tl.data.proxy[n-1].err == nil {
		cur := tl.data.proxy[n-1]
		fmt.Fprintf(&sb, "  spills %.0f  sheds %.0f", cur.spillTotal()-ps.prev.spillTotal(), cur.shedTotal()-ps.prev.shedTotal())
		if tl.name == "soak" && len(cur.rss) == 1 && !math.IsNaN(cur.rss[0]) && !math.IsNaN(cur.goroutine[0]) {
			fmt.Fprintf(&sb, "  proxy rss %.0f MiB  goroutines %.0f", cur.rss[0]/(1<<20), cur.goroutine[0])
		}
		ps.prev = cur
	}
	sb.WriteByte('\n')
	io.WriteString(w, sb.String())
}
