package sim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// GroupOptions describe a simulated autoscaling group: instances that are all alike, a
// targets file that lists them (what the proxy's file discovery watches), and the rules
// that add and remove instances.
type GroupOptions struct {
	// Instance is the model of each instance; Name is replaced by Site-N.
	Instance Options
	// TargetsFile is rewritten (temp file + rename) whenever the set of instances changes.
	TargetsFile string
	// Min and Max bound the number of instances; the group starts with Min.
	Min, Max int
	// Check is how often utilisation is looked at.
	Check time.Duration
	// ScaleOutAt is the utilisation (in-flight / capacity over all instances) at or above
	// which the group is saturated; ScaleInBelow, below which it is idle.
	ScaleOutAt, ScaleInBelow float64
	// ScaleOutDelay is how long the group must stay saturated before an instance is added
	// (the time to boot one), and again before the next; ScaleInDelay, idle before one is
	// removed.
	ScaleOutDelay, ScaleInDelay time.Duration
	// Warmup is how long a new instance is left out of the utilisation, as a cloud
	// autoscaler leaves a warming instance's metrics out: while the proxy ramps it up
	// (slow start) it is not yet busy, and counting it would stop the scale-out early.
	Warmup time.Duration
	// Drain is how long a removed instance keeps serving after it left the targets file,
	// so that the proxy stops sending to it before it goes.
	Drain time.Duration
	// OnChange, if set, is called after every change with the new number of instances.
	OnChange func(instances int, added bool)
}

// Group is a simulated autoscaling group. Run scales it; Close stops every instance.
type Group struct {
	opts GroupOptions

	mu        sync.Mutex
	instances []*Backend
	born      map[*Backend]time.Time
	draining  []*Backend
	next      int // number of the next instance
	peak      int
	added     int
	removed   int
}

// StartGroup starts the group's Min instances on loopback and writes the targets file.
func StartGroup(o GroupOptions) (*Group, error) {
	if o.Min < 1 || o.Max < o.Min || o.Instance.Capacity < 1 || o.TargetsFile == "" || o.Check <= 0 {
		return nil, fmt.Errorf("autoscaling group %s: want 1 <= min <= max, capacity >= 1, a targets file and a check interval", o.Instance.Site)
	}
	g := &Group{opts: o, born: map[*Backend]time.Time{}}
	g.mu.Lock()
	defer g.mu.Unlock()
	for range o.Min {
		if err := g.addLocked(); err != nil {
			g.closeLocked()
			return nil, err
		}
	}
	g.added = 0
	return g, g.writeLocked()
}

func (g *Group) addLocked() error {
	g.next++
	o := g.opts.Instance
	o.Name = fmt.Sprintf("%s-%d", o.Site, g.next)
	o.Seed += uint64(g.next)
	b, err := StartWith("127.0.0.1:0", o)
	if err != nil {
		return err
	}
	g.instances = append(g.instances, b)
	g.born[b] = time.Now()
	g.added++
	g.peak = max(g.peak, len(g.instances))
	return nil
}

// writeLocked writes the targets file atomically: a reader sees the old set or the new.
func (g *Group) writeLocked() error {
	var sb strings.Builder
	sb.WriteString("# written by the simulated autoscaling group\n")
	for _, b := range g.instances {
		sb.WriteString(b.Addr() + "\n")
	}
	tmp, err := os.CreateTemp(filepath.Dir(g.opts.TargetsFile), ".targets-*")
	if err != nil {
		return err
	}
	if _, err := tmp.WriteString(sb.String()); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), g.opts.TargetsFile)
}

// Run scales the group until ctx ends: it adds an instance after the group has been
// saturated for ScaleOutDelay, and removes one (after Drain) once it has been idle for
// ScaleInDelay. Removed instances are stopped before Run returns.
func (g *Group) Run(ctx context.Context) error {
	tick := time.NewTicker(g.opts.Check)
	defer tick.Stop()
	var drains sync.WaitGroup
	defer drains.Wait()
	var saturatedSince, idleSince time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			u := g.Utilisation()
			switch {
			case u >= g.opts.ScaleOutAt:
				idleSince = time.Time{}
				if saturatedSince.IsZero() {
					saturatedSince = now
				} else if now.Sub(saturatedSince) >= g.opts.ScaleOutDelay {
					if err := g.scaleOut(); err != nil {
						return err
					}
					saturatedSince = now
				}
			case u < g.opts.ScaleInBelow:
				saturatedSince = time.Time{}
				if idleSince.IsZero() {
					idleSince = now
				} else if now.Sub(idleSince) >= g.opts.ScaleInDelay {
					if b, err := g.scaleIn(); err != nil {
						return err
					} else if b != nil {
						drains.Go(func() {
							t := time.NewTimer(g.opts.Drain)
							defer t.Stop()
							select {
							case <-t.C:
							case <-ctx.Done():
							}
							b.Close()
						})
					}
					idleSince = now
				}
			default:
				saturatedSince, idleSince = time.Time{}, time.Time{}
			}
		}
	}
}

func (g *Group) scaleOut() error {
	g.mu.Lock()
	if len(g.instances) >= g.opts.Max {
		g.mu.Unlock()
		return nil
	}
	err := g.addLocked()
	if err == nil {
		err = g.writeLocked()
	}
	n := len(g.instances)
	g.mu.Unlock()
	if err == nil && g.opts.OnChange != nil {
		g.opts.OnChange(n, true)
	}
	return err
}

// scaleIn takes the newest instance out of the targets file and returns it, to be closed
// after its drain; nil at Min.
func (g *Group) scaleIn() (*Backend, error) {
	g.mu.Lock()
	if len(g.instances) <= g.opts.Min {
		g.mu.Unlock()
		return nil, nil
	}
	b := g.instances[len(g.instances)-1]
	g.instances = g.instances[:len(g.instances)-1]
	delete(g.born, b)
	g.draining = append(g.draining, b)
	g.removed++
	err := g.writeLocked()
	n := len(g.instances)
	g.mu.Unlock()
	if err == nil && g.opts.OnChange != nil {
		g.opts.OnChange(n, false)
	}
	return b, err
}

// Utilisation is in-flight over capacity, over the instances in the targets file that
// have warmed up (all of them while none has).
func (g *Group) Utilisation() float64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	var inflight int64
	n := 0
	for _, b := range g.instances {
		if time.Since(g.born[b]) >= g.opts.Warmup {
			inflight += b.inflight.Load()
			n++
		}
	}
	if n == 0 {
		for _, b := range g.instances {
			inflight += b.inflight.Load()
		}
		n = len(g.instances)
	}
	return float64(inflight) / float64(n*g.opts.Instance.Capacity)
}

// GroupStats count the group's instances.
type GroupStats struct {
	Instances int `json:"instances"` // in the targets file now
	Peak      int `json:"peak"`      // most at once
	Added     int `json:"added"`     // by scaling out, after the first Min
	Removed   int `json:"removed"`   // by scaling in
}

// Stats returns the group's counts.
func (g *Group) Stats() GroupStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return GroupStats{Instances: len(g.instances), Peak: g.peak, Added: g.added, Removed: g.removed}
}

// Instances lists the instances in the targets file now.
func (g *Group) Instances() []*Backend {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]*Backend(nil), g.instances...)
}

// Close stops every instance, those draining included. Call it after Run has returned.
func (g *Group) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closeLocked()
}

func (g *Group) closeLocked() {
	for _, b := range append(g.instances, g.draining...) {
		b.Close()
	}
	g.instances, g.draining = nil, nil
}
