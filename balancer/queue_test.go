package balancer

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestAdmitCongestedQueue: once the queue has stood non-empty for a tenth of the queue
// timeout, a freed slot goes to the newest waiter, and waiters older than a quarter of the
// timeout are shed from the head with ErrQueueDelay (counted as queue_delay).
func TestAdmitCongestedQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := NewRegistry()
		// Timeout 2s: congested after 200 ms non-empty; delay target 500 ms.
		p := admPicker(t, reg, queueOpts(1, 10, 2*time.Second))
		held := new(Lease)
		if err := p.Picker().Admit(t.Context(), held, 0); err != nil {
			t.Fatal(err)
		}
		var waiters []<-chan admitResult
		for range 5 { // join at 0, 100, ..., 400 ms
			waiters = append(waiters, admitAsync(t.Context(), p, 0))
			synctest.Wait()
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond) // now 600 ms: the oldest has waited 600 ms
		held.Done(Result{})
		synctest.Wait()
		r0, ok := recvNow(waiters[0])
		if !ok || !errors.Is(r0.err, ErrQueueDelay) || !errors.Is(r0.err, ErrSaturated) {
			t.Fatalf("oldest waiter (600 ms in a congested queue): %+v %v, want ErrQueueDelay matching ErrSaturated", r0, ok)
		}
		r4, ok := recvNow(waiters[4])
		if !ok || r4.err != nil || r4.l.Queued != 200*time.Millisecond {
			t.Fatalf("newest waiter: %+v %v, want the freed slot after 200 ms", r4, ok)
		}
		for i := 1; i < 4; i++ {
			if _, ok := recvNow(waiters[i]); ok {
				t.Fatalf("waiter %d returned; only the oldest is shed and only the newest served", i)
			}
		}
		if got := reg.Sheds()[ShedQueueDelay]; got != 1 {
			t.Errorf("queue_delay sheds %d, want 1", got)
		}
		// The next slot goes to the newest of those left.
		r4.l.Done(Result{})
		synctest.Wait()
		r3, ok := recvNow(waiters[3])
		if !ok || r3.err != nil {
			t.Fatalf("waiter 3: %+v %v, want the next slot", r3, ok)
		}
		r3.l.Done(Result{})
		synctest.Wait()
		for _, i := range []int{2, 1} {
			r, ok := recvNow(waiters[i])
			if !ok || r.err != nil {
				t.Fatalf("waiter %d: %+v %v", i, r, ok)
			}
			r.l.Done(Result{})
			synctest.Wait()
		}
		assertIdle(t, reg)
	})
}

// TestAdmitOverloadServesFast pins issue 12's queue that made everyone wait: at 5x capacity
// a FIFO queue is always full, so every request it served had waited nearly the whole
// timeout (p50 of successes 2.04 s with the 2 s default). Simulated (synctest) for 10 s: 2
// slots, 100 ms service, a request every 10 ms, queue 1000 / 2 s. The requests served wait
// at most a quarter of the timeout at the median; none waits longer than the timeout.
func TestAdmitOverloadServesFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := NewRegistry()
		p := admPicker(t, reg, queueOpts(2, 1000, 2*time.Second))
		var mu sync.Mutex
		var served []time.Duration
		var worst time.Duration
		reasons := map[string]int{}
		var wg sync.WaitGroup
		start := time.Now()
		for time.Since(start) < 10*time.Second {
			wg.Go(func() {
				l := new(Lease)
				t0 := time.Now()
				err := p.Picker().Admit(context.Background(), l, 0)
				waited := time.Since(t0)
				mu.Lock()
				worst = max(worst, waited)
				switch {
				case err == nil:
					served = append(served, l.Queued)
				case errors.Is(err, ErrQueueDelay):
					reasons["queue_delay"]++
				case errors.Is(err, ErrQueueTimeout):
					reasons["queue_timeout"]++
				case errors.Is(err, ErrQueueFull):
					reasons["queue_full"]++
				default:
					t.Errorf("Admit: %v", err)
				}
				mu.Unlock()
				if err == nil {
					time.Sleep(100 * time.Millisecond) // service time
					l.Done(Result{Status: 200})
				}
			})
			time.Sleep(10 * time.Millisecond)
		}
		wg.Wait()
		slices.Sort(served)
		p50 := served[len(served)/2]
		t.Logf("served %d, queue wait p50 %v, p90 %v; longest wait %v; shed %v", len(served), p50, served[len(served)*9/10], worst, reasons)
		if p50 > 500*time.Millisecond {
			t.Errorf("p50 of the waits of requests served %v, want at most 500ms (a quarter of the 2s timeout)", p50)
		}
		if worst > 2*time.Second {
			t.Errorf("a request waited %v, longer than the 2s queue timeout", worst)
		}
		if n := len(served); n < 180 {
			t.Errorf("served %d in 10 s, want about 200 (2 slots, 100 ms each): slots left idle", n)
		}
		assertIdle(t, reg)
	})
}

// TestRetryAfterFollowsTheQueue: Retry-After is the queue's estimated drain time (waiting
// requests + 1, times the recent time between admissions), in whole seconds from 1 to 30.
func TestRetryAfterFollowsTheQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := NewRegistry()
		p := admPicker(t, reg, queueOpts(1, 100, 10*time.Second))
		if got := p.RetryAfter(); got != time.Second {
			t.Errorf("empty queue: Retry-After %v, want 1s", got)
		}
		held := new(Lease)
		if err := p.Picker().Admit(t.Context(), held, 0); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		var waiters []<-chan admitResult
		for range 30 {
			waiters = append(waiters, admitAsync(ctx, p, 0))
			synctest.Wait()
		}
		if got := p.RetryAfter(); got != 10*time.Second {
			t.Errorf("nobody admitted yet: Retry-After %v, want the queue timeout, 10s", got)
		}
		// One admission every 100 ms for 10 of them.
		for range 10 {
			time.Sleep(100 * time.Millisecond)
			held.Done(Result{})
			synctest.Wait()
			held = nil
			for i, w := range waiters {
				if r, ok := recvNow(w); ok {
					if r.err != nil {
						t.Fatal(r.err)
					}
					held = r.l
					waiters = slices.Delete(waiters, i, i+1)
					break
				}
			}
			if held == nil {
				t.Fatal("a freed slot went to nobody")
			}
		}
		// 20 waiting, one admission per 100 ms: (20+1) x 100 ms = 2.1 s, rounded up.
		if got := p.RetryAfter(); got != 3*time.Second {
			t.Errorf("20 waiting, 100 ms between admissions: Retry-After %v, want 3s", got)
		}
		// Nothing admitted for 5 s: the drain estimate grows with the silence, to the bound.
		time.Sleep(5 * time.Second)
		if got := p.RetryAfter(); got != 30*time.Second {
			t.Errorf("no admission for 5 s with 20 waiting: Retry-After %v, want the 30s bound", got)
		}
		cancel() // the 20 still waiting leave
		for _, w := range waiters {
			if r := <-w; r.err == nil {
				t.Fatal("a waiter got a slot that nobody freed")
			}
		}
		held.Done(Result{})
		assertIdle(t, reg)
	})
}
