package proxy

import (
	"context"

	"github.com/spillway/spillway/balancer"
)

// admit takes a lease for ex (balancer.Picker.Admit, which may wait in the queue) and
// returns the Table whose Balancer granted it: the lease's site indexes are that Table's.
//
// That is t, the Table the request started with, unless the request waited in the queue
// across a reload and got its slot from the new config's Balancer (see
// balancer.Balancer.MakeCurrent). Its Table is then the one being served: the Reloader
// swaps a Table in before it makes its Balancer current. Should yet another reload come in
// between, so that the lease's Balancer is no longer the one served, the lease is given back
// and the request admitted again under the Table served now. The proxy keeps this mapping
// itself, from the Tables it serves, rather than have the balancer hand its Table back as an
// untyped owner.
func (h *Handler) admit(t *Table, ex *exchange, ctx context.Context, key uint64) (*Table, error) {
	if err := t.bal.Picker().Admit(ctx, &ex.lease, key); err != nil {
		return t, err
	}
	for ex.lease.Balancer != t.bal {
		cur := h.table.Load()
		if cur.bal == ex.lease.Balancer {
			return cur, nil
		}
		queued := ex.lease.Queued
		ex.lease.Done(balancer.Result{}) // not tried: nothing to learn
		ex.lease = balancer.Lease{Preferred: -1}
		if cur == t {
			// A Balancer made current without its Table being served here (not the
			// Reloader's order): there is no Table to read the lease's indexes against.
			return t, balancer.ErrNoBackend
		}
		t = cur
		if err := t.bal.Picker().Admit(ctx, &ex.lease, key); err != nil {
			return t, err
		}
		ex.lease.Queued += queued
	}
	return t, nil
}
