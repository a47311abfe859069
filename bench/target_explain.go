package bench

import (
	"context"
	"sync"
	"time"
)

// explainDrain bounds how long after the load the explain API is still asked about its
// last requests.
const explainDrain = 2 * time.Second

// explainer asks the admin API (GET /api/v1/explain) where a sample of the sessions'
// requests went and what placed them (the affinity key, or the split): a few requests of
// each session, at most a budget in all, by two workers. It records into data's explains
// and explainN.
type explainer struct {
	view       *proxyView
	mk         *requestMaker
	q          chan int32 // requests to ask about, by Seq
	perSession int
	workers    sync.WaitGroup

	mu     sync.Mutex // guards budget, asked, data.explains and data.explainN
	budget int        // requests still to be asked about
	asked  map[int]int
	data   *targetData
}

// newExplainer is nil without sessions or without the admin API.
func newExplainer(tg *targetRun, mk *requestMaker, data *targetData, scheduled int) *explainer {
	if tg.o.Sessions == 0 || tg.view == nil {
		return nil
	}
	budget := min(2000, scheduled)
	return &explainer{view: tg.view, mk: mk, q: make(chan int32, 256), perSession: max(2, budget/tg.o.Sessions),
		budget: budget, asked: map[int]int{}, data: data}
}

// start starts the workers; they ask until drain, or until ctx is done.
func (e *explainer) start(ctx context.Context) {
	for range 2 {
		e.workers.Go(func() {
			for seq := range e.q {
				e.explain(ctx, seq)
			}
		})
	}
}

// offer queues request seq, answered 2xx, when its session's share and the budget allow.
// It never blocks the load: a full queue drops the request (counted).
func (e *explainer) offer(seq int32) {
	s := e.mk.session(int(seq))
	e.mu.Lock()
	ok := e.asked[s] < e.perSession && e.budget > 0
	if ok {
		e.asked[s]++
		e.budget--
	}
	e.mu.Unlock()
	if !ok {
		return
	}
	select {
	case e.q <- seq:
		e.mu.Lock()
		e.data.explainN.asked++
		e.mu.Unlock()
	default:
		e.mu.Lock()
		e.data.explainN.dropped++
		e.mu.Unlock()
	}
}

// explain asks about request seq and records the answer, or the failure.
func (e *explainer) explain(ctx context.Context, seq int32) {
	ex, err := e.view.explain(ctx, e.mk.requestID(int(seq)))
	if err != nil && ctx.Err() == nil {
		// The client can have the answer before the proxy has recorded the request: ask
		// once more, a moment later.
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-t.C:
			ex, err = e.view.explain(ctx, e.mk.requestID(int(seq)))
		}
		t.Stop()
	}
	if err != nil && ctx.Err() != nil {
		return // cut short at the end of the run: neither found nor failed
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		e.data.explainN.failed++
	} else {
		e.data.explains[seq] = ex
	}
}

// drain closes the queue and waits for the workers to ask about what is in it, for at most
// explainDrain: then stop (the cancel of start's ctx) cuts them short.
func (e *explainer) drain(stop context.CancelFunc) {
	close(e.q)
	t := time.AfterFunc(explainDrain, stop)
	e.workers.Wait()
	t.Stop()
}
