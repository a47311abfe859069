package cluster

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Registration: a replica's member key under a lease it keeps alive.

// ErrNodeTaken: another running replica is registered under this node name.
var ErrNodeTaken = errors.New("another running replica is registered under this node name (its lease keeps being renewed): give each replica its own cluster.node")

// claim registers this replica at start. Its member key must not exist: one left by a
// predecessor that crashed goes when its lease runs out (claim waits that long), so that the
// others first take its share back and this replica then joins as a new member; one that
// stays is another running replica with the same name, and claim fails with ErrNodeTaken.
func (f *Fleet) claim(ctx context.Context) error {
	start := time.Now()
	waited := false
	for {
		err := f.register(ctx, true)
		if !errors.Is(err, ErrNodeTaken) {
			return err
		}
		// A predecessor's lease is as long as etcd grants, which may be more than
		// cluster.lease (etcd's minimum): the lease just granted says how long.
		if time.Since(start) > max(f.o.Lease, f.grantedLease())+2*time.Second {
			return err
		}
		if !waited {
			waited = true
			f.log.Warn("cluster: this node is still registered, by a replica that stopped without leaving or by another one; waiting for its lease to run out",
				zap.String("node", f.o.Node), zap.Duration("lease", f.o.Lease))
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// noteGranted records the lease etcd granted, and says once when it is longer than
// cluster.lease: etcd grants no lease shorter than its own minimum (1.5 election timeouts), so
// a replica that dies gives its shares back only after the longer lease.
func (f *Fleet) noteGranted(d time.Duration) {
	f.mu.Lock()
	first := f.granted == 0
	f.granted = d
	f.mu.Unlock()
	if first && d > f.o.Lease {
		f.log.Warn("cluster: etcd grants a longer lease than cluster.lease (its minimum is 1.5 election timeouts); a replica that dies gives its shares back only after it",
			zap.Duration("cluster_lease", f.o.Lease), zap.Duration("granted", d))
	}
}

// grantedLease is the lease etcd last granted (0: none yet).
func (f *Fleet) grantedLease() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.granted
}

// register grants a lease and puts this replica's member and ack keys under it; only if its
// member key does not exist when first is set (else ErrNodeTaken). Registering again after
// the lease was lost (first false) overwrites the key: it may be this replica's own, kept
// by etcd while it could not reach it.
func (f *Fleet) register(ctx context.Context, first bool) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	ttl := int64((f.o.Lease + time.Second - 1) / time.Second)
	g, err := f.c.Grant(ctx, ttl)
	if err != nil {
		return err
	}
	f.noteGranted(time.Duration(g.TTL) * time.Second)
	f.mu.Lock()
	acked := f.acked
	f.mu.Unlock()
	txn := f.c.Txn(ctx)
	if first {
		txn = txn.If(clientv3.Compare(clientv3.CreateRevision(f.memberKey(f.o.Node)), "=", 0))
	}
	resp, err := txn.Then(
		clientv3.OpPut(f.memberKey(f.o.Node), time.Now().UTC().Format(time.RFC3339), clientv3.WithLease(g.ID)),
		clientv3.OpPut(f.ackKey(f.o.Node), acked, clientv3.WithLease(g.ID))).Commit()
	if err == nil && !resp.Succeeded {
		err = ErrNodeTaken
	}
	if err != nil {
		f.c.Revoke(context.WithoutCancel(ctx), g.ID)
		return err
	}
	f.mu.Lock()
	f.lease = g.ID
	f.mu.Unlock()
	return nil
}

// keepAlive keeps the lease alive, and registers again when it was lost (etcd let it
// expire while this replica could not reach it).
func (f *Fleet) keepAlive(ctx context.Context) {
	b := newBackoff()
	for ctx.Err() == nil {
		f.mu.Lock()
		lease := f.lease
		f.mu.Unlock()
		if lease != 0 {
			ch, err := f.c.KeepAlive(ctx, lease)
			if err == nil {
				for range ch {
					b.reset()
				}
			}
			if ctx.Err() != nil {
				return
			}
			// etcd unreachable (the health check logs that) or the lease expired: register
			// again once etcd answers. A member key that outlived its old lease keeps its
			// identity; one that expired comes back as a new member, and the shares hand over.
			f.log.Info("cluster: this replica's lease could not be kept alive; registering again when etcd answers", zap.String("node", f.o.Node))
			f.mu.Lock()
			f.lease = 0
			f.mu.Unlock()
		}
		if err := f.register(ctx, false); err != nil {
			if !b.wait(ctx) {
				return
			}
		}
	}
}
