package suite

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/jepsen/cluster"
	"github.com/bifrost-mq/bifrost/jepsen/internal/testbin"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// TestReplicaMovesKeepNeighboursData is the scenario the moving-keys
// workload found (the ci profile's first run, 2026-11-25): a split makes
// range 1 ["", mk/000010) and its child [mk/000010, ""); range 1's replica
// on n3 is then removed and added anew, twice. Nothing touches the child,
// so n3's replica of the child must keep both of its keys. On the build of
// that day the second removal empties it (the re-added replica of range 1
// carries the descriptor from before the split, and destroying it deletes
// that whole span), and the next addition brings back only the key written
// before the split; a leader on n3 then answers reads of the child's keys
// with nothing.
func TestReplicaMovesKeepNeighboursData(t *testing.T) {
	requireIntegration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := cluster.New(ctx, cluster.Config{Binary: testbin.Bifrost(t, ""), Dir: t.TempDir(), Stores: 3,
		StoreArgs: []string{"--balancer-paused", "--raft-rtt-ms", "50"}})
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
	n1, n3 := c.Stores()[0], c.Stores()[2]
	admin, err := ranges.Dial(n1.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.Put(ctx, []byte("mk/000015"), []byte("before the split")); err != nil {
		t.Fatal(err)
	}
	split, err := admin.Admin.Split(ctx, &rangespb.SplitRequest{Keyspace: "kv", Key: []byte("mk/000010")})
	if err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	child := split.Right
	if err := admin.Put(ctx, []byte("mk/000016"), []byte("after the split")); err != nil {
		t.Fatal(err)
	}
	members, err := admin.Admin.Cluster(ctx, &rangespb.ClusterRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var n3ID uint64
	for _, m := range members.Members {
		if m.Name == n3.Name {
			n3ID = m.StoreId
		}
	}
	local, err := ranges.Dial(n3.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	store := rangespb.NewStoreClient(local.Conn())
	// n3's own replica of the child must hold both keys (waiting a little
	// for it to apply them).
	requireChildKeys := func(after string) {
		t.Helper()
		var got int
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			resp, err := store.Execute(ctx, &rangespb.ExecuteRequest{RangeId: child.Id, Stale: true,
				Request: &rangespb.ExecuteRequest_Query{Query: &kvpb.Query{Ver: child.Ver,
					Ops: []*kvpb.Op{{Op: &kvpb.Op_Scan{Scan: &kvpb.ScanOp{Start: []byte("mk/"), End: []byte("mk/1")}}}}}}})
			if err != nil || len(resp.GetResult().GetResults()) == 0 {
				continue
			}
			if got = len(resp.Result.Results[0].Pairs); got == 2 {
				return
			}
		}
		t.Fatalf("after %s, n3's replica of range %d (untouched) holds %d of its 2 keys", after, child.Id, got)
	}
	requireChildKeys("the split")
	for round := 1; round <= 2; round++ {
		if _, err := admin.Admin.RemoveReplica(ctx, &rangespb.RemoveReplicaRequest{RangeId: 1, StoreId: n3ID}); err != nil {
			t.Fatal(ranges.FromStatus(err))
		}
		requireChildKeys(fmt.Sprintf("removing range 1's replica on n3, round %d", round))
		if _, err := admin.Admin.AddReplica(ctx, &rangespb.AddReplicaRequest{RangeId: 1, StoreId: n3ID}); err != nil {
			t.Fatal(ranges.FromStatus(err))
		}
		requireChildKeys(fmt.Sprintf("adding range 1's replica on n3 again, round %d", round))
	}
}
