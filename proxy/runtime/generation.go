package runtime

import (
	"context"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/spillway/spillway/balancer/discovery"
	"github.com/spillway/spillway/proxy"
)

// RunTable does a Table's background work until ctx ends: the active health checks of its
// configured backends and, for each site with discovery, finding its members and checking
// their health. It returns once all of it has stopped. The Reloader runs it for each
// generation, under the generation's context; a test that serves a bare Table runs it
// itself.
func RunTable(ctx context.Context, t *proxy.Table, log *zap.Logger) {
	if log == nil {
		log = zap.NewNop()
	}
	var wg sync.WaitGroup
	if m := t.Monitor(); m != nil {
		wg.Go(func() { m.Run(ctx) })
	}
	for _, d := range t.Discovered() {
		wg.Go(func() { runDiscovery(ctx, t, d, log) })
	}
	wg.Wait()
}

// runDiscovery keeps site d's members up to date: each new set from its Discoverer becomes
// the Table's members (new ones slow-start, vanished ones drain), and the site's health
// checks follow the new set. Until the first lookup answers, the site has the members the
// previous Table had (none at the start), and its share of the split goes to the others.
func runDiscovery(ctx context.Context, t *proxy.Table, d proxy.DiscoveredSite, log *zap.Logger) {
	updates := make(chan []string, 1)
	opts := d.Options
	// What the previous config's discovery found (the site's members now, carried over):
	// the first lookup logs a change only where it differs.
	for _, m := range t.SiteMembers(d.Name) {
		opts.Known = append(opts.Known, strings.TrimPrefix(m, d.Scheme+"://"))
	}
	opts.Update = func(members []string) {
		select { // only the latest set matters
		case <-updates:
		default:
		}
		updates <- members
	}
	disc, err := discovery.New(opts)
	if err != nil { // configs.Validate checks what New does; keep the proxy up regardless
		log.Error("discovery not started", zap.String("site", d.Name), zap.Error(err))
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { disc.Run(ctx) })

	checks := memberChecks{ctx: ctx, t: t, d: d, running: map[string]*memberCheck{}}
	defer checks.stopAll()
	// Members carried over from the previous config are checked from the start, not from
	// the first lookup that answers (DNS may be failing just then).
	checks.sync(t.SiteMembers(d.Name))
	// The first set a proxy that just started finds is its deployment, not newcomers.
	joining := !t.Fresh()
	for {
		select {
		case <-ctx.Done():
			return
		case members := <-updates:
			addrs := make([]string, len(members))
			for i, m := range members {
				addrs[i] = d.Scheme + "://" + m
			}
			if _, err := t.SetMembers(d.Name, addrs, joining); err != nil {
				log.Error("discovered members refused", zap.String("site", d.Name), zap.Error(err))
			} else {
				checks.sync(addrs)
			}
			joining = true
		}
	}
}

// memberChecks are the active health checks of a discovered site's members, one per
// member, each running for as long as the member is listed, whatever else joins or leaves.
type memberChecks struct {
	ctx     context.Context
	t       *proxy.Table
	d       proxy.DiscoveredSite
	running map[string]*memberCheck // by address
}

type memberCheck struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (c *memberCheck) stop() { c.cancel(); <-c.done }

// sync runs the checks of exactly the members addrs: it starts those of members that have
// none and stops those of members no longer listed.
func (cs *memberChecks) sync(addrs []string) {
	if cs.d.Health == nil {
		return
	}
	listed := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		listed[a] = true
		if cs.running[a] != nil {
			continue
		}
		m := cs.t.MemberMonitor(cs.d.Name, a, cs.d.Health)
		ctx, cancel := context.WithCancel(cs.ctx)
		c := &memberCheck{cancel: cancel, done: make(chan struct{})}
		go func() { defer close(c.done); m.Run(ctx) }()
		cs.running[a] = c
	}
	for a, c := range cs.running {
		if !listed[a] {
			c.stop()
			delete(cs.running, a)
		}
	}
}

func (cs *memberChecks) stopAll() {
	for _, c := range cs.running {
		c.stop()
	}
}
