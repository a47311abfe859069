// Package cluster makes several Spillway replicas act as one fleet on etcd: the operators'
// runtime state and its audit trail live in etcd (Store), each replica registers under a
// lease and watches the others (Fleet), and each backend's limit is a budget the members
// share (Share), handed over between memberships so that the fleet never holds more of it
// than the limit.
//
// Everything lives under /spillway/<name>/:
//
//	state/overrides/<site>   a weight override (store.Override, JSON)
//	state/drains/<site>      a drain (store.Drain, JSON)
//	audit/<id, 20 digits>    an audit entry (store.Change, JSON)
//	audit-next               the ID of the next audit entry
//	members/<node>           a replica, under its lease
//	acks/<node>              the view (members, weights) a replica holds, under its lease
//	load/<node>              a replica's demand (shares: demand), under its lease
//	table                    the coordinator's weights for a membership (shares: demand)
package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/spillway/spillway/proxy/store"
)

// opTimeout bounds one request to etcd made for an operator (a change, a page of the
// trail): an unreachable cluster answers ErrUnavailable within it, not after the client's
// own retries give up.
const opTimeout = 3 * time.Second

// Store is the fleet's store.Store, in etcd: Commit writes the edits and the audit entry in
// one etcd transaction, so that every replica sees both or neither; Watch delivers the state
// whenever any replica changes it. Safe for concurrent use.
type Store struct {
	c      *clientv3.Client
	prefix string // "/spillway/<name>/"
	keep   int
	node   string
	log    *zap.Logger
	up     func() bool // the fleet's view of etcd; nil: always try
}

var (
	_ store.Store   = (*Store)(nil)
	_ store.Watcher = (*Store)(nil)
)

// NewStore returns the store of the fleet called name on the etcd client c, keeping up to
// keep audit entries (0: store.DefaultTrail). node names this replica in the entries it
// writes. It does not own c: Close leaves it open.
func NewStore(c *clientv3.Client, name, node string, keep int, log *zap.Logger) *Store {
	if keep <= 0 {
		keep = store.DefaultTrail
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Store{c: c, prefix: Prefix(name), keep: keep, node: node, log: log}
}

// Prefix is where the fleet called name keeps everything in etcd.
func Prefix(name string) string { return "/spillway/" + name + "/" }

func (s *Store) overrideKey(site string) string { return s.prefix + "state/overrides/" + site }
func (s *Store) drainKey(site string) string    { return s.prefix + "state/drains/" + site }
func (s *Store) auditKey(id uint64) string      { return fmt.Sprintf("%saudit/%020d", s.prefix, id) }
func (s *Store) nextKey() string                { return s.prefix + "audit-next" }

// unavailable wraps an error of etcd's as store.ErrUnavailable, unless the caller gave up
// (ctx is the caller's, not the one bounded by opTimeout).
// editOps are the etcd operations of edits: one per key, the last edit of a key winning,
// as State.Apply applies them (etcd refuses a transaction that names a key twice).
func (s *Store) editOps(edits []store.Edit) ([]clientv3.Op, error) {
	var keys []string
	byKey := map[string]clientv3.Op{}
	set := func(key string, op clientv3.Op) {
		if _, ok := byKey[key]; !ok {
			keys = append(keys, key)
		}
		byKey[key] = op
	}
	for _, e := range edits {
		switch {
		case e.Override != nil:
			v, err := json.Marshal(e.Override)
			if err != nil {
				return nil, err
			}
			set(s.overrideKey(e.Site), clientv3.OpPut(s.overrideKey(e.Site), string(v)))
		case e.ClearOverride:
			set(s.overrideKey(e.Site), clientv3.OpDelete(s.overrideKey(e.Site)))
		}
		switch {
		case e.Drain != nil:
			v, err := json.Marshal(e.Drain)
			if err != nil {
				return nil, err
			}
			set(s.drainKey(e.Site), clientv3.OpPut(s.drainKey(e.Site), string(v)))
		case e.Undrain:
			set(s.drainKey(e.Site), clientv3.OpDelete(s.drainKey(e.Site)))
		}
	}
	ops := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		ops[i] = byKey[k]
	}
	return ops, nil
}

// applied reports whether the audit entry id holds entry, as the transaction that failed
// would have written it (with its edits, in the same transaction), asked once, within
// opTimeout even when ctx has run out.
func (s *Store) applied(ctx context.Context, id uint64, entry []byte) bool {
	op, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	resp, err := s.c.Get(op, s.auditKey(id))
	return err == nil && len(resp.Kvs) == 1 && bytes.Equal(resp.Kvs[0].Value, entry)
}

// orEmpty is prev, or an empty state when there is none (the watch's first read: it is
// lenient too, as Load at start has refused a bad value already).
func orEmpty(prev *store.State) *store.State {
	if prev == nil {
		e := store.State{}.Clone()
		return &e
	}
	return prev
}

func unavailable(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("%w: etcd: %v", store.ErrUnavailable, err)
}

// down is ErrUnavailable while the fleet finds etcd unreachable: an operator's request is
// answered at once rather than after opTimeout.
func (s *Store) down() error {
	if s.up != nil && !s.up() {
		return fmt.Errorf("%w: etcd cannot be reached", store.ErrUnavailable)
	}
	return nil
}

// Load reads the whole state.
func (s *Store) Load(ctx context.Context) (store.State, error) {
	st, rev, err := s.load(ctx, nil)
	st.Revision = rev
	return st, err
}

// load reads the whole state and its revision. A value that does not parse is an error,
// unless prev is set (a running watch reading the state again): its entry is then what prev
// has for that key, and the value is logged, as the running watch does with it.
func (s *Store) load(ctx context.Context, prev *store.State) (store.State, int64, error) {
	op, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := s.c.Get(op, s.prefix+"state/", clientv3.WithPrefix())
	if err != nil {
		return store.State{}, 0, unavailable(ctx, err)
	}
	st := store.State{}.Clone()
	for _, kv := range resp.Kvs {
		if err := s.apply(st, string(kv.Key), kv.Value, false); err != nil {
			if prev == nil {
				return store.State{}, 0, err
			}
			s.log.Error("cluster store: ignoring a value that does not parse (the one in effect stays)", zap.Error(err))
			s.keepEntry(st, *prev, string(kv.Key))
		}
	}
	return st, resp.Header.Revision, nil
}

// keepEntry copies prev's entry at key (if any) into st.
func (s *Store) keepEntry(st, prev store.State, key string) {
	kind, site, _ := strings.Cut(strings.TrimPrefix(key, s.prefix+"state/"), "/")
	switch kind {
	case "overrides":
		if o, ok := prev.Overrides[site]; ok {
			st.Overrides[site] = o
		}
	case "drains":
		if d, ok := prev.Drains[site]; ok {
			st.Drains[site] = d
		}
	}
}

// apply sets (or, deleted, removes) the state's entry at key. A value that does not parse is
// an error that names the key: a drain dropped in silence would put a site under
// maintenance back into rotation.
func (s *Store) apply(st store.State, key string, value []byte, deleted bool) error {
	rest := strings.TrimPrefix(key, s.prefix+"state/")
	kind, site, ok := strings.Cut(rest, "/")
	if !ok {
		return nil
	}
	var err error
	switch kind {
	case "overrides":
		if deleted {
			delete(st.Overrides, site)
			return nil
		}
		var o store.Override
		if err = json.Unmarshal(value, &o); err == nil {
			st.Overrides[site] = o
		}
	case "drains":
		if deleted {
			delete(st.Drains, site)
			return nil
		}
		var d store.Drain
		if err = json.Unmarshal(value, &d); err == nil {
			st.Drains[site] = d
		}
	}
	if err != nil {
		return fmt.Errorf("cluster store: %s does not parse: %v", key, err)
	}
	return nil
}

// Commit writes the edits and c in one transaction. The entry's ID is the next of the
// trail's: two replicas committing at once both succeed, one after the other (the loser of
// the race on audit-next tries again). An unreachable etcd is store.ErrUnavailable, and
// nothing was written.
func (s *Store) Commit(ctx context.Context, c store.Change, edits ...store.Edit) (store.Change, error) {
	if err := s.down(); err != nil {
		return store.Change{}, err
	}
	op, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if c.Node == "" {
		c.Node = s.node
	}
	ops, err := s.editOps(edits)
	if err != nil {
		return store.Change{}, err
	}
	for range 100 { // a race lost 100 times in a row is a fleet gone wrong, not bad luck
		resp, err := s.c.Get(op, s.nextKey())
		if err != nil {
			return store.Change{}, unavailable(ctx, err)
		}
		next, rev := uint64(1), int64(0)
		if len(resp.Kvs) > 0 {
			rev = resp.Kvs[0].ModRevision
			if next, err = strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64); err != nil {
				return store.Change{}, fmt.Errorf("cluster store: %s does not parse: %v", s.nextKey(), err)
			}
		}
		c.ID = next
		v, err := json.Marshal(c)
		if err != nil {
			return store.Change{}, err
		}
		txn := append(ops[:len(ops):len(ops)],
			clientv3.OpPut(s.auditKey(next), string(v)),
			clientv3.OpPut(s.nextKey(), strconv.FormatUint(next+1, 10)))
		if next > uint64(s.keep) {
			txn = append(txn, clientv3.OpDelete(s.auditKey(next-uint64(s.keep))))
		}
		tr, err := s.c.Txn(op).If(clientv3.Compare(clientv3.ModRevision(s.nextKey()), "=", rev)).Then(txn...).Commit()
		if err != nil {
			// The reply may have been lost after etcd applied it: look before answering
			// "not applied", which must mean neither the edits nor the entry are stored.
			if s.applied(ctx, next, v) {
				return c, nil
			}
			return store.Change{}, unavailable(ctx, err)
		}
		if tr.Succeeded {
			c.Revision = tr.Header.Revision
			return c, nil
		}
	}
	return store.Change{}, errors.New("cluster store: the audit trail's next ID kept changing")
}

// Changes returns up to limit entries of the trail with IDs below before (0: from the
// newest), newest first, and how many entries the trail keeps.
func (s *Store) Changes(ctx context.Context, before uint64, limit int) ([]store.Change, int, error) {
	if err := s.down(); err != nil {
		return nil, 0, err // at once: the state API and the dashboard ask for the newest
	}
	op, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	from, end := s.prefix+"audit/", clientv3.GetPrefixRangeEnd(s.prefix+"audit/")
	if before > 0 {
		end = s.auditKey(before)
	}
	total, err := s.c.Get(op, from, clientv3.WithRange(clientv3.GetPrefixRangeEnd(from)), clientv3.WithCountOnly())
	if err != nil {
		return nil, 0, unavailable(ctx, err)
	}
	if limit <= 0 {
		return []store.Change{}, int(total.Count), nil
	}
	resp, err := s.c.Get(op, from, clientv3.WithRange(end), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend),
		clientv3.WithLimit(int64(limit)), clientv3.WithRev(total.Header.Revision))
	if err != nil {
		return nil, 0, unavailable(ctx, err)
	}
	out := make([]store.Change, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var c store.Change
		if err := json.Unmarshal(kv.Value, &c); err != nil {
			return nil, 0, fmt.Errorf("cluster store: %s does not parse: %v", kv.Key, err)
		}
		out = append(out, c)
	}
	return out, int(total.Count), nil
}

// Durable is true: the state is in etcd, whatever happens to this replica.
func (s *Store) Durable() bool { return true }

// Close does nothing: the client is the Fleet's.
func (s *Store) Close() error { return nil }

// Watch calls fn with the whole state now, and again whenever any replica changes it,
// until ctx ends. While etcd cannot be reached it waits (fail static: the caller keeps what
// it had) and, once etcd answers again, reads the state anew and calls fn with it.
func (s *Store) Watch(ctx context.Context, fn func(store.State)) error {
	backoff := newBackoff()
	var last *store.State // delivered last: what stays for a value that stops parsing
	for ctx.Err() == nil {
		st, rev, err := s.load(ctx, orEmpty(last))
		if err != nil {
			if ctx.Err() == nil {
				s.log.Debug("cluster store: cannot read the state; trying again", zap.Error(err))
			}
			if !backoff.wait(ctx) {
				break
			}
			continue
		}
		backoff.reset()
		st.Revision = rev
		fn(st.Clone())
		last = &st // (follow changes st in place as events come: it stays the newest)
		if err := s.follow(ctx, st, rev, fn); err != nil && ctx.Err() == nil {
			s.log.Debug("cluster store: watch ended; reading the state again", zap.Error(err))
			if !backoff.wait(ctx) {
				break
			}
		}
	}
	return nil
}

// follow applies the changes after rev to st, calling fn after each batch, until the watch
// fails (etcd lost its leader, compacted past rev) or ctx ends.
func (s *Store) follow(ctx context.Context, st store.State, rev int64, fn func(store.State)) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range s.c.Watch(wctx, s.prefix+"state/", clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			return err
		}
		if len(resp.Events) == 0 {
			continue
		}
		for _, ev := range resp.Events {
			if err := s.apply(st, string(ev.Kv.Key), ev.Kv.Value, ev.Type == clientv3.EventTypeDelete); err != nil {
				s.log.Error("cluster store: ignoring a value that does not parse", zap.Error(err))
			}
		}
		st.Revision = resp.Header.Revision
		fn(st.Clone())
	}
	return ctx.Err()
}

// backoff spaces out attempts to reach etcd: 100 ms, doubling to 2 s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 100 * time.Millisecond} }

func (b *backoff) reset() { b.d = 100 * time.Millisecond }

// wait sleeps for the next interval; false if ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	t := time.NewTimer(b.d)
	defer t.Stop()
	b.d = min(2*b.d, 2*time.Second)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
