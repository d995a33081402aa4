package mqtt

import (
	"context"
	"sync"
	"time"

	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
)

// maxMatchBatch bounds the topics of one batched dist match.
const maxMatchBatch = 256

// matchBatcher batches the dist matches of concurrent publishes (cache
// misses) of one tenant into one Match request: while a tenant's match is
// in flight, the ones that arrive queue and go together when it returns.
// A lone publish goes at once, so batching adds no latency when the load
// is low and saves round trips and Raft reads when it is high. Each topic
// carries its own publisher ($oshare picks by publisher).
type matchBatcher struct {
	dist    Dist
	timeout time.Duration
	batches func(n int) // observes each request's size (metrics)

	mu      sync.Mutex
	tenants map[string]*tenantMatches
}

type tenantMatches struct {
	queue []*matchCall
}

type matchCall struct {
	topic, publisher string
	seed             uint64
	done             chan struct{}
	routes           []*distpb.Matched
	err              error
}

func newMatchBatcher(d Dist, timeout time.Duration, batches func(int)) *matchBatcher {
	return &matchBatcher{dist: d, timeout: timeout, batches: batches, tenants: map[string]*tenantMatches{}}
}

func (b *matchBatcher) match(ctx context.Context, tenant, topic, publisher string, seed uint64) ([]*distpb.Matched, error) {
	call := &matchCall{topic: topic, publisher: publisher, seed: seed, done: make(chan struct{})}
	b.mu.Lock()
	tm, running := b.tenants[tenant]
	if !running {
		tm = &tenantMatches{}
		b.tenants[tenant] = tm
	}
	tm.queue = append(tm.queue, call)
	b.mu.Unlock()
	if !running {
		go b.run(tenant, tm)
	}
	select {
	case <-call.done:
		return call.routes, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// run sends the tenant's queued matches, a batch at a time, until none is
// left.
func (b *matchBatcher) run(tenant string, tm *tenantMatches) {
	for {
		b.mu.Lock()
		if len(tm.queue) == 0 {
			delete(b.tenants, tenant)
			b.mu.Unlock()
			return
		}
		n := min(len(tm.queue), maxMatchBatch)
		batch := append([]*matchCall(nil), tm.queue[:n]...)
		tm.queue = append(tm.queue[:0:0], tm.queue[n:]...)
		b.mu.Unlock()
		b.send(tenant, batch)
	}
}

func (b *matchBatcher) send(tenant string, batch []*matchCall) {
	req := &distpb.MatchRequest{Tenant: tenant, Seed: batch[0].seed}
	for _, c := range batch {
		req.Topics = append(req.Topics, c.topic)
		req.Publishers = append(req.Publishers, c.publisher)
		req.Seeds = append(req.Seeds, c.seed)
	}
	if b.batches != nil {
		b.batches(len(batch))
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	resp, err := b.dist.Match(ctx, req)
	cancel()
	if err != nil && len(batch) > 1 {
		// One bad topic must not fail the others: ask for each alone.
		for _, c := range batch {
			b.send(tenant, []*matchCall{c})
		}
		return
	}
	for i, c := range batch {
		switch {
		case err != nil:
			c.err = err
		case i < len(resp.Topics):
			c.routes = resp.Topics[i].Matched
		}
		close(c.done)
	}
}
