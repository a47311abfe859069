// Package discovery finds the members of an elastic site (the AWS pool whose instances come
// and go) from DNS, A/AAAA or SRV records re-resolved on an interval, or from a targets file
// that is watched. It reports the whole member set each time it changes; what to do with
// members that join (slow start) or vanish (drain) is the caller's business.
//
// Discovery never empties a pool because a source failed. A failed or empty DNS answer, an
// unreadable or empty targets file, keeps the last good set: it is logged, counted in
// Failures, and the pool goes on serving with the members it had. An elastic site is where
// traffic spills in a spike, and a resolver hiccup in a spike must not take its capacity
// away.
//
// The package imports none of Spillway's: the caller (proxy.Build) translates the config.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// ErrNoMembers is the failure of a resolution that worked but found no member: a DNS answer
// with no usable record, or a targets file with no valid line. Like any failure it keeps the
// last good set.
var ErrNoMembers = errors.New("no members found")

// Options configures a Discoverer. Set exactly one of DNS and File.
type Options struct {
	// Site names the site in logs.
	Site string
	// DNS is what to resolve: "host:port" looks up the A and AAAA records of host and makes
	// each address with port a member; a name that starts with "_" (e.g.
	// "_app._tcp.aws.internal") is an SRV name, whose targets are looked up in turn (A and
	// AAAA), each address with its record's port a member. SRV priorities and weights are
	// ignored: every target is a member, and the balancer chooses among them. An SRV target
	// that does not exist (NXDOMAIN, no address) is left out with a warning; any other error
	// fails the whole resolution. Names follow the resolver's search rules (/etc/resolv.conf
	// ndots and search); end one with "." to make it absolute.
	DNS string
	// File is the path of a targets file: one member per line, "host:port" or
	// "http://host:port" / "https://host:port" (the port defaults to 80 / 443; the scheme
	// is dropped, the site's config says how to talk to its members). Host names are
	// lower-cased and used as written, not resolved. Everything from '#' to the end of a
	// line is a comment; blank lines are ignored; an invalid line is logged with file:line
	// and skipped, and the rest is used. Replace the file atomically (write a temporary
	// file, then rename it over), as editors and Kubernetes ConfigMap volumes do: a read
	// that catches an in-place write half done may see half the members.
	File string
	// Resolver is the "ip:port" of the DNS server to ask, over UDP and TCP like any DNS
	// client; "" means the servers of the system's configuration. Only with DNS.
	Resolver string
	// Interval is the pause between DNS resolutions, and for File between re-reads that
	// back up the watch (a watch can miss changes: a symlink to a file in another
	// directory, a network file system). Required (> 0). One resolution may take up to
	// Interval, at least 1s and at most 10s, before it counts as failed.
	Interval time.Duration
	// Update, if set, is called with the full member set, sorted and without duplicates,
	// once with the first good set and then each time the set changes; never with an empty
	// set. Each member is "host:port", an IPv6 address in brackets ("[::1]:8080"). The
	// slice is the callee's. Calls come from the goroutine of Run or of a Resolve call,
	// one at a time and in the order the sets were found; Update must not block long and
	// must not call Resolve (it may call Members and Failures).
	Update func(members []string)
	// Log gets a Warn line per failure (site, name, error) and per invalid line or missing
	// SRV target, and an Info line per change of the set. Nil: no logs.
	Log *zap.Logger
	// Failures, if set, is where failures are counted (see Discoverer.Failures): a counter
	// that outlives this Discoverer, such as a site's across config reloads. Nil: its own.
	Failures *atomic.Uint64
	// Known is the set a Discoverer before this one found (a config reload): the first set
	// this one finds still goes to Update, but is logged as a change only where it differs.
	Known []string
	// Now is the clock of the failure log's pacing; nil: time.Now.
	Now func() time.Time
}

// failureLogEvery paces the log of a lasting failure: the first failure is logged at once,
// then one line at most this often, with the count since the last line.
const failureLogEvery = 5 * time.Minute

// Discoverer keeps an elastic site's member set up to date from one source. Members and
// Failures are safe for concurrent use; Run may be called once.
type Discoverer struct {
	site     string
	interval time.Duration
	update   func([]string)
	log      *zap.Logger
	src      source

	// file is the targets file; "" for DNS.
	file string

	members  atomic.Pointer[[]string] // the last good set; nil until the first
	failures *atomic.Uint64
	ran      atomic.Bool

	// resolving serialises resolutions, so that Update sees the sets in the order they
	// were found and never two calls at once. Members and Failures do not take it.
	resolving sync.Mutex
	failing   bool // guarded by resolving: the last resolution failed
	// Guarded by resolving too: the set the previous Discoverer found (Options.Known), when
	// the failure was last logged, and the failures since.
	known        []string
	now          func() time.Time
	loggedAt     time.Time
	unlogged     uint64
	failingSince time.Time
}

// source is where members come from: DNS or a targets file.
type source interface {
	// lookup returns the members found (in any order, perhaps with duplicates) or why
	// there are none to use. It may log what it skipped.
	lookup(ctx context.Context) ([]string, error)
	// String names the source in logs: the DNS name or the file's path.
	String() string
}

// New checks o and returns a Discoverer for it; nothing is resolved until Run or Resolve.
func New(o Options) (*Discoverer, error) {
	switch {
	case o.DNS == "" && o.File == "":
		return nil, errors.New("discovery: set dns or file")
	case o.DNS != "" && o.File != "":
		return nil, errors.New("discovery: set dns or file, not both")
	case o.Interval <= 0:
		return nil, fmt.Errorf("discovery: interval must be > 0, got %s", o.Interval)
	case o.Resolver != "" && o.DNS == "":
		return nil, errors.New("discovery: resolver is for dns only")
	}
	if o.Resolver != "" {
		if _, err := netip.ParseAddrPort(o.Resolver); err != nil {
			return nil, fmt.Errorf("discovery: resolver: want ip:port, got %q", o.Resolver)
		}
	}
	d := &Discoverer{site: o.Site, interval: o.Interval, update: o.Update, log: o.Log, failures: o.Failures,
		now: o.Now}
	if len(o.Known) > 0 {
		d.known = slices.Compact(slices.Sorted(slices.Values(o.Known)))
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.failures == nil {
		d.failures = new(atomic.Uint64)
	}
	if d.log == nil {
		d.log = zap.NewNop()
	}
	if o.DNS != "" {
		src, err := newDNSSource(o.DNS, o.Resolver, lookupTimeout(o.Interval), o.Site, d.log)
		if err != nil {
			return nil, fmt.Errorf("discovery: dns %q: %w", o.DNS, err)
		}
		d.src = src
		return d, nil
	}
	d.file = o.File
	d.src = &fileSource{path: o.File, site: o.Site, log: d.log}
	return d, nil
}

// lookupTimeout bounds one DNS resolution: the interval, so resolutions do not fall behind,
// but at least 1s, so a short interval does not fail a resolver that is merely slow, and at
// most 10s, so a long one does not keep a dead resolver's failure waiting.
func lookupTimeout(interval time.Duration) time.Duration {
	return min(max(interval, time.Second), 10*time.Second)
}

// Members returns a copy of the last good member set, sorted; nil until the first.
func (d *Discoverer) Members() []string {
	if p := d.members.Load(); p != nil {
		return slices.Clone(*p)
	}
	return nil
}

// Failures returns how many resolutions or reads have failed so far (each one kept the last
// good set), for a metric. A resolution cut short because its caller's context ended is not
// a failure.
func (d *Discoverer) Failures() uint64 { return d.failures.Load() }

// Resolve resolves the source once now. A good set becomes Members and, if it differs from
// the last, goes to Update from this goroutine. On failure the last good set stays, the
// failure is logged and counted, and Resolve returns it (ErrNoMembers for an empty answer or
// file). If ctx ends first, Resolve returns ctx's error and counts nothing. Callers that want
// members before they serve call it once before Run; it is safe to call at any time.
func (d *Discoverer) Resolve(ctx context.Context) error {
	d.resolving.Lock()
	defer d.resolving.Unlock()
	found, err := d.src.lookup(ctx)
	if err == nil && len(found) == 0 {
		err = ErrNoMembers
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d.failures.Add(1)
		d.logFailure(err)
		return fmt.Errorf("discover %s: %w", d.src, err)
	}
	if d.failing {
		d.failing = false
		d.log.Info("discovery works again",
			zap.String("site", d.site), zap.String("name", d.src.String()),
			zap.Duration("failing_for", d.now().Sub(d.failingSince)), zap.Uint64("failures_since_last_line", d.unlogged))
		d.unlogged = 0
	}
	slices.Sort(found)
	found = slices.Compact(found)
	last := d.known // before the first good set: what the previous Discoverer found
	if p := d.members.Load(); p != nil {
		last = *p
		if slices.Equal(last, found) {
			return nil
		}
	}
	d.members.Store(&found)
	d.known = nil
	if !slices.Equal(last, found) {
		added, removed := diff(last, found)
		d.log.Info("members changed",
			zap.String("site", d.site), zap.String("name", d.src.String()),
			zap.Int("members", len(found)), zap.Strings("added", added), zap.Strings("removed", removed))
	}
	if d.update != nil {
		d.update(slices.Clone(found))
	}
	return nil
}

// logFailure logs a failed resolution: the first of a run at once as a warning, then a
// warning at most every failureLogEvery with the number of failures since the last one, so
// that a resolver down for an hour is not a warning every interval; the others are logged
// at debug level. Every failure is counted (Failures) all the same. Called with resolving
// held.
func (d *Discoverer) logFailure(err error) {
	now := d.now()
	first := !d.failing
	if first {
		d.failing, d.failingSince = true, now
	}
	d.unlogged++
	level := zap.WarnLevel
	if !first && now.Sub(d.loggedAt) < failureLogEvery {
		level = zap.DebugLevel // paced: seen only with -log-level debug
	}
	if ce := d.log.Check(level, "discovery failed, keeping the last members"); ce != nil {
		ce.Write(zap.String("site", d.site), zap.String("name", d.src.String()), zap.Error(err),
			zap.Int("members", len(d.Members())), zap.Uint64("failures_since_last_line", d.unlogged),
			zap.Duration("failing_for", now.Sub(d.failingSince)))
	}
	if level == zap.WarnLevel {
		d.loggedAt, d.unlogged = now, 0
	}
}

// diff returns what b has that a lacks, and what a has that b lacks; both sorted.
func diff(a, b []string) (added, removed []string) {
	for _, m := range b {
		if _, ok := slices.BinarySearch(a, m); !ok {
			added = append(added, m)
		}
	}
	for _, m := range a {
		if _, ok := slices.BinarySearch(b, m); !ok {
			removed = append(removed, m)
		}
	}
	return added, removed
}

// Run resolves at once, then every Interval, until ctx is done; for a targets file it also
// watches the file's directory and re-reads the file shortly after it changes. It returns
// once everything it started has stopped: the watch is closed and no timer is left. The
// caller owns the goroutine that calls Run; Run may be called once.
//
// The watch is on the directory, not the file, so it sees the file replaced by a rename (as
// editors save) and a Kubernetes ConfigMap volume's update, which swaps the "..data" symlink
// that the file links through. If the watch cannot be set up (no such directory, inotify
// limits), Run logs it and relies on the periodic re-read.
func (d *Discoverer) Run(ctx context.Context) {
	if d.ran.Swap(true) {
		panic("discovery: Discoverer.Run called twice")
	}
	var changed <-chan struct{}
	if d.file != "" {
		// Watch before the first read, so that no change slips between the two.
		fw, err := WatchFile(d.file, d.log.With(zap.String("site", d.site)))
		if err != nil {
			d.log.Warn("cannot watch the targets file, re-reading it every interval only",
				zap.String("site", d.site), zap.String("name", d.file), zap.Error(err),
				zap.Duration("interval", d.interval))
		} else {
			watchCtx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); fw.Run(watchCtx) }()
			defer func() { stop(); <-done }()
			changed = fw.C
		}
	}
	tick := time.NewTicker(d.interval)
	defer tick.Stop()

	_ = d.Resolve(ctx) // failures are logged and counted by Resolve
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-changed:
		}
		if ctx.Err() != nil {
			return
		}
		_ = d.Resolve(ctx)
	}
}
