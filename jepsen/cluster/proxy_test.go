package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/jepsen/internal/testbin"
	"github.com/bifrost-mq/bifrost/ranges"
)

// putLatency is the median time of a few puts through n.
func putLatency(t *testing.T, ctx context.Context, n *Node) time.Duration {
	t.Helper()
	cl, err := ranges.Dial(n.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var lat []time.Duration
	for i := 0; i < 5; i++ {
		start := time.Now()
		callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := cl.Put(callCtx, []byte("delay-probe"), []byte("x"))
		cancel()
		if err != nil {
			t.Fatalf("put through %s: %v", n.Name, err)
		}
		lat = append(lat, time.Since(start))
	}
	return lat[2]
}

// TestDelayProxy: with the delay proxy the stores form a cluster through it
// (Raft and gRPC between stores are redirected to the harness); a delay on
// every link makes a replicated write take at least one delay longer, and
// clearing it brings the latency back.
func TestDelayProxy(t *testing.T) {
	if err := RequireTools(); err != nil {
		t.Skip(err)
	}
	bin := testbin.Bifrost(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := New(ctx, Config{Binary: bin, Dir: t.TempDir(), Stores: 3, DelayProxy: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, "probe"); err != nil {
		t.Fatal(err)
	}
	n1 := c.Stores()[0]
	base := putLatency(t, ctx, n1)
	// Well under the election timeout (10 ticks of 100 ms, randomized up to
	// twice that): with 300 ms a link, a round trip between stores (600
	// ms) came close enough to it that, on a loaded box (make test runs
	// other packages alongside), leaders lost their check-quorum and puts
	// timed out during the elections that followed (once in make test, 10
	// s without a leader). etcd's rule of thumb is an election timeout of
	// 10 round trips; 150 ms a link keeps it above 3.
	const delay = 150 * time.Millisecond
	for _, a := range c.Stores() {
		for _, b := range c.Stores() {
			if a != b {
				if err := c.SetDelay(a, b, delay); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	slow := putLatency(t, ctx, n1)
	c.ClearDelays()
	after := putLatency(t, ctx, n1)
	t.Logf("put latency: %v, with %v on every link %v, after clearing %v", base, delay, slow, after)
	if slow < delay {
		t.Errorf("a replicated put took %v with %v on every link: the delay is not applied", slow, delay)
	}
	if after >= delay {
		t.Errorf("a put took %v after the delays were cleared", after)
	}
}
