package mqtt_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// countingDist counts the match requests and their topics that reach the
// real dist client.
type countingDist struct {
	mqtt.Dist
	requests, topics atomic.Int64
	// stall holds the next request back a while, so that the matches of
	// the publishes that arrive meanwhile wait behind it, however slowly
	// a loaded machine runs the publishers.
	stall atomic.Bool
}

func (d *countingDist) Match(ctx context.Context, req *distpb.MatchRequest) (*distpb.MatchResponse, error) {
	if d.stall.CompareAndSwap(true, false) {
		time.Sleep(300 * time.Millisecond)
	}
	d.requests.Add(1)
	d.topics.Add(int64(len(req.Topics)))
	return d.Dist.Match(ctx, req)
}

// TestConcurrentPublishesBatchTheirMatches: the matches of publishes that
// arrive while one is in flight go to dist together, and every message
// still reaches its subscriber.
func TestConcurrentPublishesBatchTheirMatches(t *testing.T) {
	var counter *countingDist
	e := startEnv(t, 1, func(c *mqtt.Config) {
		counter = &countingDist{Dist: c.Dist}
		c.Dist = counter
		c.MatchCacheTTL = -1 // every publish asks dist
	})
	sub := connectRaw(t, e.addr(0), packet.V311, "sub")
	sub.subscribe(1, packet.Subscription{Filter: "b/#", QoS: 0})
	const n = 40
	pubs := make([]*rawClient, n)
	for i := range pubs {
		pubs[i] = connectRaw(t, e.addr(0), packet.V311, fmt.Sprintf("pub%d", i))
	}
	before := counter.requests.Load()
	counter.stall.Store(true)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			p.send(&packet.Publish{Topic: fmt.Sprintf("b/%d", i), Payload: []byte("x")})
		}()
	}
	close(start)
	wg.Wait()
	got := map[string]bool{}
	for len(got) < n {
		got[sub.nextPublish().Topic] = true
	}
	requests, topics := counter.requests.Load()-before, counter.topics.Load()
	t.Logf("%d publishes matched in %d dist requests", n, requests)
	if topics < n || requests >= n {
		t.Fatalf("%d publishes made %d match requests (%d topics): none was batched", n, requests, topics)
	}
}
