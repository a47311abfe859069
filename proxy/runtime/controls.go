package runtime

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/spillway/spillway/configs"
	"github.com/spillway/spillway/proxy/store"
)

// The operators' runtime controls — weight overrides with ramps, drains — and the audit
// trail. Every change is committed to the store (with its audit entry) before it is
// applied, so a change the store refuses (the cluster store unreachable, a state file that
// cannot be written) is not in effect either; and what a restart restores is what was in
// effect.

// override is an operator's weight for a site in effect, with its ramp's stop.
type override struct {
	store.Override
	stop context.CancelFunc // its ramp's; a no-op without one
}

// fleet reports whether the store is a fleet's, which other replicas change too
// (store.Watcher): its state for sites this replica's config lacks is theirs to keep, and
// the config file is this replica's copy only.
func (r *Reloader) fleet() bool {
	_, ok := r.store.(store.Watcher)
	return ok
}

// storeTimeout bounds one call to the store made on an operator's behalf.
const storeTimeout = 5 * time.Second

// commit stores c with edits, for a change that is applied only once stored: a store
// that cannot take it refuses the change (store.ErrUnavailable). Called with r.mu held.
func (r *Reloader) commit(c Change, edits ...store.Edit) (Change, error) {
	stored, err := r.store1(c, edits...)
	if err != nil {
		r.log.Error("runtime change not stored, so not applied", zap.String("who", c.Who),
			zap.String("action", c.Action), zap.String("site", c.Site), zap.Error(err))
		if !errors.Is(err, store.ErrUnavailable) {
			err = fmt.Errorf("%w: %v", store.ErrUnavailable, err)
		}
		return c, err
	}
	return stored, nil
}

// record stores c, an entry of something that happened whether or not the store takes it
// (a reload, a refused attempt, a ramp's end). When the store cannot take it, the error is
// logged and the audit line is written anyway, marked not stored. It returns c as stored
// (ID 0: not stored).
func (r *Reloader) record(c Change, edits ...store.Edit) Change {
	stored, err := r.store1(c, edits...)
	if err != nil {
		r.log.Error("audit entry not stored", zap.String("who", c.Who), zap.String("action", c.Action),
			zap.String("site", c.Site), zap.Error(err))
		r.auditLine(c, false)
		return c
	}
	return stored
}

// store1 commits c with edits to the store and, once stored, writes its audit line.
func (r *Reloader) store1(c Change, edits ...store.Edit) (Change, error) {
	if c.Time.IsZero() {
		c.Time = r.now()
	}
	ctx, cancel := context.WithTimeout(r.ctx, storeTimeout)
	defer cancel()
	stored, err := r.store.Commit(ctx, c, edits...)
	if err == nil {
		r.auditLine(stored, true)
		r.stateRev = max(r.stateRev, stored.Revision)
	}
	return stored, err
}

// auditLine writes c to the audit log; stored says whether the trail has it too.
func (r *Reloader) auditLine(c Change, stored bool) {
	r.audit.Info("change", zap.Uint64("id", c.ID), zap.Bool("stored", stored), zap.String("who", c.Who),
		zap.String("action", c.Action), zap.String("result", c.Result), zap.String("reason", c.Reason),
		zap.String("site", c.Site), zap.String("before", c.Before), zap.String("after", c.After), zap.Any("items", c.Items))
}

// refused records an attempt refused with err and returns err.
func (r *Reloader) refused(c Change, err error) error {
	c.Result, c.Reason = "refused", cutText(err.Error(), maxReason)
	c.Site = cutText(c.Site, maxSiteName) // as sent, by anyone with a token
	r.record(c)
	return err
}

// maxReason bounds the reason an audit entry keeps; maxSiteName the site name of a refused
// attempt (a real one has at most 63 characters).
const (
	maxReason   = 2000
	maxSiteName = 100
)

// cutText is s cut to at most n bytes, on a character boundary, marked when cut.
func cutText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + " [cut]"
}

// Refused records, in the audit trail, a change an operator asked for that was refused
// before it reached the runtime (a malformed request): who, what, and why.
func (r *Reloader) Refused(who, action, site, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.store == nil {
		return
	}
	r.refused(Change{Who: who, Action: action, Site: site}, errors.New(reason))
}

// Durable reports whether the runtime state survives a restart (state.file or cluster).
func (r *Reloader) Durable() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.store != nil && r.store.Durable()
}

// Changes returns up to limit entries of the audit trail with IDs below before (0: the
// newest), newest first, and how many the store keeps.
func (r *Reloader) Changes(before uint64, limit int) ([]Change, int, error) {
	r.mu.Lock()
	s := r.store
	r.mu.Unlock()
	if s == nil {
		return nil, 0, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	return s.Changes(ctx, before, limit)
}

// SetWeight makes weight the weight of site, reached linearly over ramp (0: at once),
// until ClearWeight; it survives reloads, and restarts with a durable store. With persist
// the file is changed too (see persistWeight). who is recorded in the audit trail.
func (r *Reloader) SetWeight(site string, weight int, ramp time.Duration, who string, persist bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg := r.gen.cfg
	now := r.now()
	c := Change{Time: now, Who: who, Action: "weight", Site: site, Before: formatWeight(r.effectiveWeight(site, now)),
		After: fmt.Sprint(weight)}
	if ramp > 0 {
		c.After += " (ramp " + ramp.String() + ")"
	}
	s := cfg.Site(site)
	switch {
	case s == nil:
		return r.refused(c, fmt.Errorf("%w %q", ErrNoSite, site))
	case weight < 0 || weight > configs.MaxWeight:
		return r.refused(c, fmt.Errorf("%w: weight must be between 0 and %d, got %d", ErrInvalid, configs.MaxWeight, weight))
	case ramp < 0 || ramp > time.Hour:
		return r.refused(c, fmt.Errorf("%w: ramp must be between 0s and 1h, got %s", ErrInvalid, ramp))
	case weight == 0 && r.othersZero(cfg, site, false):
		return r.refused(c, fmt.Errorf("%w: every site would have weight 0", ErrInvalid))
	}
	if persist && r.fleet() {
		// The file is this replica's; the others would keep theirs (and the override,
		// dropped as "in the file", would be gone from every one of them).
		return r.refused(c, fmt.Errorf("%w: persist is not available in a fleet: each replica reads its own copy of the config; change the weight where the config comes from (a ConfigMap, config management) and let the replicas reload it, or set it without persist to apply it on every replica now", ErrInvalid))
	}
	var writeFile func() error
	if persist {
		var err error
		if writeFile, err = persistWeight(r.opts.Path, site, weight, r.sum, r.checks()...); err != nil {
			return r.refused(c, fmt.Errorf("persist: %w", err))
		}
		c.After += " (persisted)"
	}
	o := store.Override{Weight: weight, From: r.effectiveWeight(site, now), Start: now, End: now.Add(ramp), By: who, Persisted: persist}
	edit := store.Edit{Site: site, Override: &o}
	if persist && ramp == 0 {
		edit = store.Edit{Site: site, ClearOverride: true} // the file says so now
	}
	if persist {
		// Stored first, then written: a change the store refuses leaves the file alone.
		// Should the write then fail, the stored entry is undone by one that says so.
		before := r.storedOverride(site)
		if _, err := r.commit(c, edit); err != nil {
			return err
		}
		if err := writeFile(); err != nil {
			undo := store.Edit{Site: site, Override: before, ClearOverride: before == nil}
			r.record(Change{Who: who, Action: "weight", Site: site, Before: c.After, After: c.Before,
				Result: "refused", Reason: cutText("persist: the file could not be written: "+err.Error(), maxReason)}, undo)
			return fmt.Errorf("%w: persist: %v", ErrInvalid, err)
		}
	} else if _, err := r.commit(c, edit); err != nil {
		return err
	}
	r.setOverride(site, o)
	if persist && ramp == 0 {
		r.dropOverride(site)
	}
	if persist {
		// The file changed: load it now rather than when the watch sees it. It passed
		// every check before it was written; should the reload still be refused (the file
		// changed again meanwhile), the override keeps the weight in effect.
		if err := r.reloadLocked("api: "+who, false); err != nil {
			r.setOverride(site, o)
			r.record(Change{Who: who, Action: "weight", Site: site, Before: c.Before, After: c.After + " (its reload was refused: in effect as an override)"},
				store.Edit{Site: site, Override: &o})
			return fmt.Errorf("the weight is in effect and written to the file, but the file's reload was refused: %w", err)
		}
	}
	return nil
}

func formatWeight(w float64) string { return fmt.Sprintf("%.4g", w) }

// storedOverride is site's override as the store has it (nil: none), for an undo.
func (r *Reloader) storedOverride(site string) *store.Override {
	if o := r.weights[site]; o != nil {
		v := o.Override
		return &v
	}
	return nil
}

// setOverride puts o in effect for site, replacing any other, and starts its ramp.
func (r *Reloader) setOverride(site string, o store.Override) {
	if old := r.weights[site]; old != nil {
		old.stop()
	}
	ov := &override{Override: o, stop: func() {}}
	r.weights[site] = ov
	now := r.now()
	r.gen.table.Balancer().SetWeight(site, o.At(now))
	if now.Before(o.End) {
		r.startRamp(site, ov)
	}
}

// dropOverride ends site's override: its configured weight applies again at once.
func (r *Reloader) dropOverride(site string) {
	if o := r.weights[site]; o != nil {
		o.stop()
		delete(r.weights, site)
	}
	if s := r.gen.cfg.Site(site); s != nil {
		r.gen.table.Balancer().SetWeight(site, float64(s.Weight))
	}
}

// othersZero reports whether every site but site has effective weight 0 or is drained, as
// a config may not have (configs.Validate). With elastic, a weight-0 elastic site counts as
// taking traffic, as it does when nothing else can (for drains: drain idc1 and the burst
// pool takes it all).
func (r *Reloader) othersZero(cfg *configs.Config, site string, elastic bool) bool {
	now := r.now()
	for _, s := range cfg.Sites {
		if _, drained := r.drained[s.Name]; s.Name != site && !drained && ((elastic && s.Elastic) || r.effectiveWeight(s.Name, now) > 0) {
			return false
		}
	}
	return true
}

// effectiveWeight is site's weight now: its override's, or the config's.
func (r *Reloader) effectiveWeight(site string, now time.Time) float64 {
	if o := r.weights[site]; o != nil {
		return o.At(now)
	}
	if s := r.gen.cfg.Site(site); s != nil {
		return float64(s.Weight)
	}
	return 0
}

// rampStep is how often a ramp moves the weight.
const rampStep = 100 * time.Millisecond

// startRamp moves site's weight along o until its ramp is over or it is replaced.
func (r *Reloader) startRamp(site string, o *override) {
	ctx, cancel := context.WithCancel(r.ctx)
	o.stop = cancel
	r.wg.Go(func() {
		tick := time.NewTicker(rampStep)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if over := r.rampStep(site, o); over {
				return
			}
		}
	})
}

// rampStep moves site's weight to where o's ramp is now, and reports whether the ramp is
// over (or o replaced). A persisted weight's override ends with its ramp: the file has it.
func (r *Reloader) rampStep(site string, o *override) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.weights[site] != o { // replaced or cleared meanwhile
		return true
	}
	now := r.now()
	r.gen.table.Balancer().SetWeight(site, o.At(now))
	if now.Before(o.End) {
		return false
	}
	if o.Persisted {
		r.record(Change{Who: o.By, Action: "clear_weight", Site: site, Before: fmt.Sprint(o.Weight),
			After: fmt.Sprint(o.Weight) + " (ramp over: the file has it)"}, store.Edit{Site: site, ClearOverride: true})
		r.dropOverride(site)
	}
	return true
}

// ClearWeight drops the override of site: its configured weight applies again at once.
func (r *Reloader) ClearWeight(site, who string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	c := Change{Time: now, Who: who, Action: "clear_weight", Site: site, Before: formatWeight(r.effectiveWeight(site, now))}
	s := r.gen.cfg.Site(site)
	if s == nil {
		return r.refused(c, fmt.Errorf("%w %q", ErrNoSite, site))
	}
	c.After = fmt.Sprint(s.Weight) + " (configured)"
	if _, err := r.commit(c, store.Edit{Site: site, ClearOverride: true}); err != nil {
		return err
	}
	r.dropOverride(site)
	return nil
}

// SetDrained drains site (no new requests, not even spillover; in-flight ones finish;
// sessions map elsewhere) or undrains it. It survives reloads until undone, and restarts
// with a durable store.
func (r *Reloader) SetDrained(site string, drained bool, who string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, before := r.drained[site]
	word := map[bool]string{true: "drained", false: "serving"}
	c := Change{Time: r.now(), Who: who, Action: map[bool]string{true: "drain", false: "undrain"}[drained],
		Site: site, Before: word[before], After: word[drained]}
	if r.gen.cfg.Site(site) == nil {
		return r.refused(c, fmt.Errorf("%w %q", ErrNoSite, site))
	}
	if drained && r.othersZero(r.gen.cfg, site, true) {
		return r.refused(c, fmt.Errorf("%w: draining %s would leave no site in the split", ErrInvalid, site))
	}
	edit := store.Edit{Site: site, Undrain: !drained}
	d := store.Drain{By: who, Since: c.Time}
	if drained {
		edit.Drain = &d
	}
	if _, err := r.commit(c, edit); err != nil {
		return err
	}
	r.setDrained(site, drained, d)
	return nil
}

func (r *Reloader) setDrained(site string, drained bool, d store.Drain) {
	if drained {
		r.drained[site] = d
	} else {
		delete(r.drained, site)
	}
	r.gen.table.Balancer().SetDrained(site, drained)
}

// ReloadBy is Reload on an operator's request, recorded in the audit trail as every
// reload is; it returns the reload's entry (ID 0 when the store could not take it).
func (r *Reloader) ReloadBy(who string) (Change, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reloadEntry("api: "+who, true)
}

// restore puts saved in effect over cfg at start (or as a fleet's watch delivers it):
// overrides, their ramps where they are now, and drains. With prune, those of sites cfg
// does not have are dropped from the store, with an audit entry and a warning; without (a
// fleet, whose replicas may run another version of the config for a while) they are
// left to the replicas that have the site. Called with r.mu held.
func (r *Reloader) restore(cfg *configs.Config, saved store.State, prune bool) {
	now := r.now()
	for site, o := range saved.Overrides {
		if o.Persisted && !now.Before(o.End) {
			// Written to the file, and its ramp is over: the file has the weight (a stop
			// during the ramp, or a commit of its end that failed, left it stored).
			if cur := r.weights[site]; cur != nil && cur.Override == o {
				r.dropOverride(site)
			}
			if prune {
				r.record(Change{Who: "start", Action: "clear_weight", Site: site, Before: fmt.Sprint(o.Weight),
					After: fmt.Sprint(o.Weight) + " (ramp over: the file has it)"}, store.Edit{Site: site, ClearOverride: true})
			}
			delete(saved.Overrides, site)
			continue
		}
		if cfg.Site(site) == nil {
			if !prune {
				continue
			}
			r.log.Warn("weight override dropped: the config has no such site", zap.String("site", site))
			r.record(Change{Who: "start", Action: "clear_weight", Site: site, Before: fmt.Sprint(o.Weight),
				After: "dropped: the config has no such site"}, store.Edit{Site: site, ClearOverride: true})
			continue
		}
		if cur := r.weights[site]; cur == nil || cur.Override != o {
			r.setOverride(site, o)
		}
	}
	for site := range r.weights {
		if _, ok := saved.Overrides[site]; !ok {
			r.dropOverride(site)
		}
	}
	for site, d := range saved.Drains {
		if cfg.Site(site) == nil {
			if !prune {
				continue
			}
			r.log.Warn("drain dropped: the config has no such site", zap.String("site", site))
			r.record(Change{Who: "start", Action: "undrain", Site: site, Before: "drained",
				After: "dropped: the config has no such site"}, store.Edit{Site: site, Undrain: true})
			continue
		}
		if _, ok := r.drained[site]; !ok {
			r.setDrained(site, true, d)
		}
	}
	for site := range r.drained {
		if _, ok := saved.Drains[site]; !ok {
			r.setDrained(site, false, store.Drain{})
		}
	}
}

// applyState puts a state that another replica committed in effect (store.Watcher).
func (r *Reloader) applyState(st store.State) {
	if err := checkState(st); err != nil {
		r.log.Error("the runtime state's store delivered a state that cannot be applied; the one in effect stays", zap.Error(err))
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen == nil {
		return
	}
	if st.Revision != 0 && st.Revision < r.stateRev {
		// Read before a change this replica has stored since (the delivery waited for the
		// lock while the change was made): it would put the old value back. The watch
		// brings the change itself next.
		return
	}
	r.stateRev = max(r.stateRev, st.Revision)
	r.restore(r.gen.cfg, st, false)
}

// checkState refuses stored values that no change through the API could have made (a
// file edited by hand): they would be shown but not applied, or applied wrongly.
func checkState(st store.State) error {
	for site, o := range st.Overrides {
		switch {
		case o.Weight < 0 || o.Weight > configs.MaxWeight:
			return fmt.Errorf("override of %s: weight %d is not between 0 and %d", site, o.Weight, configs.MaxWeight)
		case !(o.From >= 0 && o.From <= configs.MaxWeight): // also refuses NaN
			return fmt.Errorf("override of %s: ramp start %g is not between 0 and %d", site, o.From, configs.MaxWeight)
		case o.End.Before(o.Start) || o.End.Sub(o.Start) > time.Hour:
			return fmt.Errorf("override of %s: ramp from %s to %s is not between 0s and 1h", site, o.Start, o.End)
		}
	}
	return nil
}
