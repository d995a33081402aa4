package ranges_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustPut(t *testing.T, c *ranges.Client, k, v string) {
	t.Helper()
	if err := c.Put(ctxT(t, 15*time.Second), []byte(k), []byte(v)); err != nil {
		t.Fatalf("put %s: %v", k, err)
	}
}

func expectValue(t *testing.T, c *ranges.Client, k, want string) {
	t.Helper()
	v, found, err := c.Get(ctxT(t, 15*time.Second), []byte(k))
	if err != nil {
		t.Fatalf("get %s: %v", k, err)
	}
	if !found || string(v) != want {
		t.Fatalf("get %s = %q (found %v), want %q", k, v, found, want)
	}
}

func TestBootstrapCreatesOneRangePerKeyspaceOnce(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	resp, err := c.Client(1).Admin.Ranges(ctxT(t, 10*time.Second), &rangespb.RangesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[kvpb.Keyspace]int{}
	for _, r := range resp.Ranges {
		seen[r.Range.Keyspace]++
		if len(r.Range.Replicas) != 3 {
			t.Errorf("range %d has %d replicas, want 3", r.Range.Id, len(r.Range.Replicas))
		}
	}
	for _, fr := range ranges.FirstRanges {
		if seen[fr.Keyspace] != 1 {
			t.Errorf("keyspace %v has %d ranges, want 1", fr.Keyspace, seen[fr.Keyspace])
		}
	}
	// Restarting every store bootstraps nothing new and keeps the data.
	mustPut(t, c.Client(0), "k", "v")
	for i := range c.Nodes {
		c.StopNode(i)
	}
	for i := range c.Nodes {
		c.StartNode(i)
	}
	c.WaitReady()
	expectValue(t, c.Client(2), "k", "v")
	for i, n := range c.Nodes {
		if got := len(n.Store().Replicas()); got != 4 {
			t.Errorf("store %d runs %d replicas after restart, want 4", i, got)
		}
	}
}

func TestWritesSurviveLeaderLossAndStoresCatchUp(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{SnapshotEntries: 50, CompactionOverhead: 5})
	for i := 0; i < 20; i++ {
		mustPut(t, c.Client(i%3), fmt.Sprintf("a%02d", i), "v1")
	}
	leader := c.WaitLeader(1)
	c.StopNode(leader)
	other := (leader + 1) % 3
	cl := c.Client(other)
	// The two survivors elect a leader and keep taking writes.
	for i := 0; i < 200; i++ {
		mustPut(t, cl, fmt.Sprintf("b%03d", i), "v2")
	}
	for i := 0; i < 20; i++ {
		expectValue(t, cl, fmt.Sprintf("a%02d", i), "v1")
	}
	// The store that was down comes back: with 200 entries past a 50-entry
	// snapshot interval and 5 kept behind, it can only catch up by snapshot.
	c.StartNode(leader)
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := c.Nodes[leader].Store().Read(ctxT(t, 5*time.Second), 1, staleGet(c, 1, "b199"), true)
		if err == nil && len(res.Results) == 1 && res.Results[0].Found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted store did not catch up: %v %v", res, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := c.Nodes[leader].Store().SnapshotsRecovered(); got == 0 {
		t.Fatal("the restarted store caught up without a snapshot; the test no longer covers that path")
	}
	// Every key, read from the restarted store's own replica.
	for i := 0; i < 200; i++ {
		res, err := c.Nodes[leader].Store().Read(ctxT(t, 5*time.Second), 1, staleGet(c, 1, fmt.Sprintf("b%03d", i)), true)
		if err != nil || !res.Results[0].Found {
			t.Fatalf("key b%03d missing on the restarted store: %v", i, err)
		}
	}
}

func staleGet(c *rangestest.Cluster, rangeID uint64, key string) *kvpb.Query {
	var ver uint64
	for _, n := range c.Nodes {
		if n != nil {
			if d, err := n.Store().Descriptor(rangeID); err == nil && d != nil {
				ver = d.Ver
			}
		}
	}
	return &kvpb.Query{Ver: ver, Ops: []*kvpb.Op{{Op: &kvpb.Op_Get{Get: &kvpb.GetOp{Key: []byte(key)}}}}}
}

func TestTypedErrors(t *testing.T) {
	c := rangestest.Start(t, 1, rangestest.Options{})
	cl := c.Client(0)
	ctx := ctxT(t, 10*time.Second)
	if err := cl.Put(ctx, nil, []byte("x")); !errors.Is(err, ranges.ErrBadRequest) {
		t.Errorf("empty key: %v, want ErrBadRequest", err)
	}
	ok, cur, err := cl.CompareAndSwap(ctx, []byte("c"), []byte("nope"), []byte("x"))
	if err != nil || ok || cur != nil {
		t.Errorf("cas on an absent key: ok=%v cur=%q err=%v", ok, cur, err)
	}
	_, err = cl.Admin.AddReplica(ctx, &rangespb.AddReplicaRequest{RangeId: 99, StoreId: 1})
	if err = ranges.FromStatus(err); !errors.Is(err, ranges.ErrUnknownRange) {
		t.Errorf("unknown range: %v, want ErrUnknownRange", err)
	}
	_, err = cl.Admin.AddReplica(ctx, &rangespb.AddReplicaRequest{RangeId: 1, StoreId: 12345})
	if err = ranges.FromStatus(err); !errors.Is(err, ranges.ErrUnknownStore) {
		t.Errorf("unknown store: %v, want ErrUnknownStore", err)
	}
}
