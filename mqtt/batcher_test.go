package mqtt

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBatcherLingersAndServesEverything: the batcher's goroutine serves
// calls that come while it lingers idle (without a new goroutine), ends
// after batcherLinger without work, and no call is lost around its end:
// every done is called once, with its own results.
func TestBatcherLingersAndServesEverything(t *testing.T) {
	var calls, items atomic.Int64
	b := &batcher[int, int]{max: 8, do: func(_ context.Context, in []int) ([]int, error) {
		calls.Add(1)
		items.Add(int64(len(in)))
		out := make([]int, len(in))
		for i, v := range in {
			out[i] = v * 2
		}
		return out, nil
	}}
	check := func(n int, gap time.Duration) {
		t.Helper()
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			b.add(context.Background(), []int{i}, func(r []int, err error) {
				defer wg.Done()
				if err != nil || len(r) != 1 || r[0] != 2*i {
					t.Errorf("item %d: %v %v", i, r, err)
				}
			})
			time.Sleep(gap)
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("a call was never served")
		}
	}
	check(50, 0)
	check(20, batcherLinger/10) // while it lingers
	// Across its end: calls land just before, at and after the linger.
	for _, gap := range []time.Duration{batcherLinger - time.Millisecond, batcherLinger, batcherLinger + time.Millisecond} {
		check(3, gap)
	}
	if got := items.Load(); got != 50+20+9 {
		t.Fatalf("%d items served, want 79", got)
	}
	// Idle past the linger, the goroutine ends.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		running := b.running
		b.mu.Unlock()
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the batcher's goroutine never ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
