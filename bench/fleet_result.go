package bench

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The fleet scenario's figures, checks and table.

// fleetSpills sums the replicas' spillway_spillover_total by the site spilled to.
func fleetSpills(reps []*replica) (total float64, to map[string]float64, byReplica []map[string]float64) {
	to = map[string]float64{}
	for _, rep := range reps {
		by := rep.metricsLast.By("spillway_spillover_total", "to")
		byReplica = append(byReplica, by)
		for k, v := range by {
			to[k] += v
			total += v
		}
	}
	return total, to, byReplica
}

// stoppedInflight counts the requests sent to the stopped replica that had not been
// answered when it was stopped: the errors its stop may account for.
func (f *fleet) stoppedInflight(data *runData, at time.Duration) int {
	n := 0
	for i := range data.records {
		r := &data.records[i]
		if int(f.routed[r.Seq]) != f.stopped || r.Outcome == Overflow {
			continue
		}
		if r.Sched+r.Latency >= at {
			n++
		}
	}
	return n
}

func (f *fleet) result(r *Result, data *runData) {
	tl := f.timeline()
	for _, rep := range f.replicas {
		if rep.child != nil {
			if err := rep.scrape(); err != nil {
				f.errs = append(f.errs, fmt.Errorf("metrics of %s: %w", rep.node, err))
			}
		}
	}
	all := data.window(0, tl.duration)
	low := data.window(f.c.settle(), tl.high)
	high := data.window(tl.high+f.c.settle(), tl.duration)
	r.Params = f.c.baseParams(f.sites, tl.rate)
	r.Params["duration_s"] = tl.duration.Seconds()
	r.Params["rate_rps"] = fmt.Sprintf("%.0f until %s (45%% of idc1+idc2), then %.0f (115%%)", tl.low, tl.high, tl.rate)
	r.Params["replicas"] = "3, cluster {name: bench, lease: 2s} on one etcd; load round robin over their listeners"
	r.Params["stop_at"], r.Params["replacement_at"] = tl.stop.String(), tl.join.String()
	r.Params["backend_capacity"] = "twice max_inflight, so that what a backend holds is measured, not capped"
	r.Figures = figures(all, f.names)
	r.Series = data.series()
	for i, s := range f.names {
		r.Figures["before_overload.share."+s] = round3(low.share(i))
		r.Figures["overload.share."+s] = round3(high.share(i))
	}
	stopAt := tl.stop
	for _, m := range f.marks {
		if strings.HasSuffix(m.Label, "stopped (SIGTERM)") {
			stopAt = time.Duration(m.T * float64(time.Second))
		}
	}
	bound := 0
	if f.stopped >= 0 {
		bound = f.stoppedInflight(data, stopAt)
	}
	r.Figures["inflight_at_stopped_replica"] = float64(bound)
	spills, to, _ := fleetSpills(f.replicas)
	r.Figures["spills"], r.Figures["spills.to_aws"] = spills, to["aws"]
	r.Checks = append(r.Checks, shareChecks(low, f.names, defaultTarget, 5, "before the overload")...)
	r.Checks = append(r.Checks, f.peakChecks(r, data, stopAt)...)
	r.Checks = append(r.Checks,
		AtMost("requests not answered 2xx over the run (bound: in flight at the stopped replica when stopped)",
			float64(all.errors()), float64(bound), ""),
		AtLeast("requests spilled (replicas' spillway_spillover_total)", spills, 1, ""),
		AtLeast("spills that went to aws", pct(int(to["aws"]), int(spills)), 90, "%"),
		AtLeast("replicas that joined the fleet (3, then the replacement)", float64(f.joined), 4, ""))
	var notes []string
	for _, err := range f.errs {
		notes = append(notes, err.Error())
	}
	r.Note = strings.Join(notes, "; ")
	r.Table = f.table(data)
}

// peakChecks judge what each site's backends held at once, measured at the backends.
func (f *fleet) peakChecks(r *Result, data *runData, stopAt time.Duration) []Check {
	var out []Check
	for i, s := range f.sites {
		peak, rejected := int64(0), int64(0)
		for _, b := range f.backends[s.Name] {
			st := b.Stats()
			peak = max(peak, st.Peak)
			rejected += st.Rejected
		}
		r.Figures["peak_inflight."+s.Name] = float64(peak)
		r.Figures["backend_503s."+s.Name] = float64(rejected)
		r.Figures["sampled_site_inflight_max_after_stop."+s.Name] = float64(data.sampleMax(i, stopAt, data.duration+time.Minute))
		out = append(out, AtMost(fmt.Sprintf("most requests one %s backend held at once, at the backend, over the run "+
			"(stop and join included; limit: max_inflight, the fleet's budget)", s.Name), float64(peak), float64(s.Limit), "requests"))
	}
	return out
}

// table is one row per replica: what it was sent and answered, and what it spilled.
func (f *fleet) table(data *runData) *Table {
	t := &Table{Header: []string{"replica", "life", "requests sent to it", "answered 2xx", "not 2xx",
		"spilled to aws", "spilled elsewhere"}}
	_, _, byReplica := fleetSpills(f.replicas)
	sent := make([]int, len(f.replicas))
	ok := make([]int, len(f.replicas))
	for i := range data.records {
		rec := &data.records[i]
		if rec.Outcome == Overflow {
			continue
		}
		k := int(f.routed[rec.Seq])
		sent[k]++
		if rec.Outcome == OK {
			ok[k]++
		}
	}
	for i, rep := range f.replicas {
		life := "whole run"
		switch {
		case i == f.stopped:
			life = "stopped midway"
		case i >= 3:
			life = "replacement"
		}
		aws, other := 0.0, 0.0
		for k, v := range byReplica[i] {
			if k == "aws" {
				aws += v
			} else {
				other += v
			}
		}
		t.Rows = append(t.Rows, []string{rep.node, life, strconv.Itoa(sent[i]), strconv.Itoa(ok[i]),
			strconv.Itoa(sent[i] - ok[i]), strconv.FormatFloat(aws, 'f', 0, 64), strconv.FormatFloat(other, 'f', 0, 64)})
	}
	return t
}
