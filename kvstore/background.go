package kvstore

import (
	"context"
	"sync"
)

// background runs the store's goroutines that outlive the call that started
// them (starting split children, retiring merged ranges, watching a
// promotion). Apply goroutines start them, so a start can race the store's
// Close: once stop began, a start is refused instead of running on a closed
// NodeHost and engine, and the WaitGroup is never added to while stop waits.
type background struct {
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	stopped bool
	wg      sync.WaitGroup
}

func newBackground() *background {
	b := &background{}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b
}

// run starts f on a goroutine that stop waits for; after stop it does
// nothing and reports false.
func (b *background) run(f func(ctx context.Context)) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f(b.ctx)
	}()
	return true
}

// stop cancels the goroutines' context and waits for them to return.
func (b *background) stop() {
	b.mu.Lock()
	b.stopped = true
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
}
