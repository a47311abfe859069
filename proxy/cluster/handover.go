package cluster

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// weighDemand reports this replica's demand about once a second (when Options.Demand is
// set) and, on the coordinator — the member with the lowest name — divides the limits in
// proportion to the members' reports: a new table when some member's weight moved by more
// than 5% (each new table is a hand-over, shrink first). Every replica follows the table,
// whatever its own options, so that replicas that disagree on them still agree on the
// views. A coordinator without Demand removes a table, back to equal shares.
func (f *Fleet) weighDemand(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var smoothed float64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.mu.Lock()
		lease, v, old := f.lease, newView(f.members), f.table
		loads := maps.Clone(f.loads)
		f.mu.Unlock()
		c, cancel := context.WithTimeout(ctx, opTimeout)
		if f.o.Demand != nil && lease != 0 {
			smoothed = 0.5*smoothed + 0.5*f.o.Demand()
			loads[f.o.Node] = smoothed
			f.c.Put(c, f.loadKey(f.o.Node), strconv.FormatFloat(smoothed, 'f', 1, 64), clientv3.WithLease(lease))
		}
		if len(v.nodes) > 0 && v.nodes[0] == f.o.Node { // the coordinator
			switch {
			case f.o.Demand != nil:
				if next, changed := weigh(v, loads, old); changed {
					if data, err := json.Marshal(next); err == nil {
						f.c.Put(c, f.tableKey(), string(data))
					}
				}
			case old != nil:
				f.c.Delete(c, f.tableKey())
			}
		}
		cancel() // errors: etcd unreachable; the next second tries again
	}
}

func (f *Fleet) poke() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// handOver moves this replica's share from one membership to the next without a moment
// where the fleet holds more than a limit:
//
//  1. A new view (members joined or left) is added to the views the replica holds: its
//     share is the least of its shares in each, so it can only shrink now.
//  2. Once its in-flight is within that (Settled), it writes the view's ID to its ack key.
//  3. Once every member of the view has acked it, every one of them enforces at most its
//     share in it, and the replica drops the older views: its share may grow.
//
// A joining replica holds noView (0) until step 3; a dead one's share comes back to the
// others as soon as etcd lets its lease expire and they have acked the view without it.
// etcd unreachable: no view changes, nothing moves (fail static).
func (f *Fleet) handOver(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	var since time.Time // when this replica began to wait for its in-flight to settle
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.kick:
		case <-t.C:
		}
		f.mu.Lock()
		v := newView(f.members).withWeights(f.table)
		sh, acked, lease := f.share, f.acked, f.lease
		complete := len(v.nodes) > 0
		for _, n := range v.nodes {
			complete = complete && f.acks[n] == v.id
		}
		f.mu.Unlock()
		if _, member := slices.BinarySearch(v.nodes, f.o.Node); !member && len(sh.views) == 1 && sh.views[0].id == "" {
			continue // not registered yet (or again): nothing to hold
		}
		if sh.latest().id != v.id {
			sh = sh.with(v)
			f.setShare(sh)
			since = time.Now()
		}
		if acked != v.id && lease != 0 {
			settled := f.o.Settled == nil || f.o.Settled()
			if !settled && time.Since(since) < f.o.SettleTimeout {
				continue
			}
			if !settled {
				f.log.Warn("cluster: requests in flight still hold more than this replica's new share; handing over anyway",
					zap.Duration("waited", f.o.SettleTimeout))
			}
			c, cancel := context.WithTimeout(ctx, opTimeout)
			_, err := f.c.Put(c, f.ackKey(f.o.Node), v.id, clientv3.WithLease(lease))
			cancel()
			if err != nil {
				continue // etcd unreachable (or the lease gone): the next tick tries again
			}
			f.mu.Lock()
			f.acked = v.id
			f.acks[f.o.Node] = v.id // the watch will say so too
			f.mu.Unlock()
			continue // the watch brings the others' acks, and this one
		}
		if complete && !sh.settled() && acked == v.id {
			sh = sh.only(v)
			f.setShare(sh)
			if _, member := slices.BinarySearch(v.nodes, f.o.Node); member {
				select {
				case <-f.joined:
				default:
					close(f.joined)
					f.log.Info("cluster: joined the fleet", zap.String("cluster", f.o.Name), zap.String("node", f.o.Node),
						zap.Strings("members", v.nodes))
				}
			}
		}
	}
}

func (f *Fleet) setShare(sh *Share) {
	f.mu.Lock()
	f.share = sh
	f.mu.Unlock()
	f.publish(sh)
}

func (f *Fleet) publish(sh *Share) {
	if f.o.OnShare != nil {
		f.o.OnShare(sh)
	}
}
