package bench

import (
	"fmt"
	"slices"
)

// The sessions' checks: which sites served each session, and, from the admin API's explain,
// whether the proxy placed its requests by their affinity key.

// sessionChecks reports each session's sites. With the admin API it checks, on a sample
// of each session's requests (GET /api/v1/explain), that the proxy placed them by their
// affinity key and that a session's preferred site never changed; with strict (steady,
// soak) it checks that every session was served by one site, unless the proxy spilled
// (a full site spills a session's request, by design).
func (tg *targetRun) sessionChecks(r *Result, data *targetData, strict bool) {
	o := &tg.o
	if o.Sessions == 0 {
		return
	}
	t := tallySessions(data, o.Sessions)
	r.Figures["sessions"] = float64(o.Sessions)
	r.Figures["sessions.site_known"] = float64(t.known)
	r.Figures["sessions.on_more_than_one_site"] = float64(t.moved)
	if data.explainN.asked > 0 {
		r.Figures["sessions.explain_asked"] = float64(data.explainN.asked)
		r.Figures["sessions.explain_failed"] = float64(data.explainN.failed)
	}
	if t.sampled > 0 {
		r.Figures["sessions.explained"] = float64(t.sampled)
		r.Figures["sessions.placed_by_key_pct"] = round3(pct(t.byKey, t.sampled))
		r.Figures["sessions.preferred_changed"] = float64(t.prefChanged)
		r.Checks = append(r.Checks,
			AtLeast("session requests the proxy placed by their affinity key (GET /api/v1/explain)", pct(t.byKey, t.sampled), 100, "%"),
			AtMost("sessions whose preferred site changed", float64(t.prefChanged), 0, ""))
	}
	if t.known == 0 {
		how := "without -admin"
		if tg.view != nil {
			how = "and GET /api/v1/explain did not say"
		}
		r.Note = joinNote(r.Note, fmt.Sprintf("stickiness not determinable: answers carry no %s header %s which site served them", o.SiteHeader, how))
		return
	}
	if t.known < o.Sessions {
		r.Note = joinNote(r.Note, fmt.Sprintf("the site is known for %d of %d sessions", t.known, o.Sessions))
	}
	if !strict {
		return
	}
	if spills := r.Figures["proxy.spills"]; spills > 0 {
		r.Note = joinNote(r.Note, fmt.Sprintf("the proxy spilled %.0f requests: a full site spills a session's request too, so sessions served by more than one site are reported, not judged", spills))
		return
	}
	r.Checks = append(r.Checks, AtMost("sessions served by more than one site", float64(t.moved), 0, ""))
}

// sessionTally is what a run's 2xx answers say of its sessions.
type sessionTally struct {
	known       int // sessions whose site is known
	moved       int // sessions served by more than one site
	prefChanged int // sessions whose preferred site (explain) changed
	sampled     int // requests explained by the admin API
	byKey       int // of those, placed by their affinity key
}

// tallySessions reads each 2xx answer's site from the site header or, failing that, from
// its explain, and counts the sessions (request i is session i % sessions).
func tallySessions(data *targetData, sessions int) sessionTally {
	var t sessionTally
	sitesOf := make([][]string, sessions)
	prefOf := make([][]string, sessions)
	for i := range data.records {
		rec := &data.records[i]
		if rec.Outcome != OK {
			continue
		}
		k := int(rec.Seq) % sessions
		site := ""
		if rec.Site >= 0 && int(rec.Site) < len(data.sites) {
			site = data.sites[rec.Site]
		}
		if ex, ok := data.explains[rec.Seq]; ok {
			if site == "" {
				site = ex.Site
			}
			t.sampled++
			if ex.Chosen == "affinity" {
				t.byKey++
			}
			if ex.Preferred != "" && !slices.Contains(prefOf[k], ex.Preferred) {
				prefOf[k] = append(prefOf[k], ex.Preferred)
			}
		}
		if site != "" && !slices.Contains(sitesOf[k], site) {
			sitesOf[k] = append(sitesOf[k], site)
		}
	}
	for k, ss := range sitesOf {
		if len(ss) > 0 {
			t.known++
		}
		if len(ss) > 1 {
			t.moved++
		}
		if len(prefOf[k]) > 1 {
			t.prefChanged++
		}
	}
	return t
}
