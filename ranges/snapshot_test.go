package ranges_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestAddedReplicaInstallsLargeSnapshotByIngestion: a replica added to a
// range with more data than kvstore installs as one batch (6 MiB, over its
// 4 MiB) gets the snapshot through Dragonboat as tables that its store
// ingests. It then holds every value, goes on from the snapshot's applied
// index, and the store's replica of the neighbouring range, in the same
// engine, keeps its keys.
func TestAddedReplicaInstallsLargeSnapshotByIngestion(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{SnapshotEntries: 20, CompactionOverhead: 5})
	cl := c.Client(0)
	child := split(t, c, 0, "m").Right.Id
	neighbour := map[string]string{"m": "right", "n1": "right", "n2": "right"}
	putAll(t, cl, neighbour)
	rng := rand.New(rand.NewChaCha8([32]byte{15}))
	values := map[string]string{"l": "left"} // l: right against the split key
	keys := []string{"l"}
	for i := range 24 {
		k := fmt.Sprintf("big%02d", i)
		v := make([]byte, 256<<10)
		for j := range v {
			v[j] = byte(rng.Uint32())
		}
		values[k] = string(v)
		keys = append(keys, k)
	}
	putAll(t, cl, values)

	n4 := c.AddNode()
	store := c.Nodes[n4].Store()
	waitGossip(t, c, store.ID())
	// The neighbour first: a small snapshot, one batch.
	if _, err := cl.Admin.AddReplica(ctxT(t, 30*time.Second), &rangespb.AddReplicaRequest{RangeId: child, StoreId: store.ID()}); err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	waitRangeValues(t, c, n4, child, neighbour, slices.Collect(maps.Keys(neighbour)))
	if got := store.SnapshotsIngested(); got != 0 {
		t.Fatalf("the small snapshot was ingested (%d); it should be one batch", got)
	}
	if _, err := cl.Admin.AddReplica(ctxT(t, 60*time.Second), &rangespb.AddReplicaRequest{RangeId: 1, StoreId: store.ID()}); err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	waitRangeKeys(t, c, n4, 1, keys)
	if got := store.SnapshotsIngested(); got != 1 {
		t.Fatalf("the new store ingested %d snapshots, want 1", got)
	}
	for _, k := range keys {
		res, err := store.Read(ctxT(t, 5*time.Second), 1, staleGet(c, 1, k), true)
		if err != nil || res.Status != kvpb.Status_STATUS_OK || string(res.Results[0].Value) != values[k] {
			t.Fatalf("key %s on the new replica: %v, %v", k, res.GetStatus(), err)
		}
	}
	waitRangeValues(t, c, n4, child, neighbour, slices.Collect(maps.Keys(neighbour)))
	// The new replica applies the log after the snapshot.
	mustPut(t, cl, "after", "v")
	waitRangeKeys(t, c, n4, 1, []string{"after"})
}
