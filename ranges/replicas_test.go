package ranges_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// waitLocalKeys waits until node i's own replica of range 1 holds every key.
func waitLocalKeys(t *testing.T, c *rangestest.Cluster, i int, keys []string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, k := range keys {
		for {
			res, err := c.Nodes[i].Store().Read(ctxT(t, 5*time.Second), 1, staleGet(c, 1, k), true)
			if err == nil && res.Status == kvpb.Status_STATUS_OK && res.Results[0].Found {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d never got key %s: %v %v", i, k, res, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func TestAddAndRemoveReplica(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{SnapshotEntries: 100, CompactionOverhead: 10})
	cl := c.Client(0)
	var keys []string
	for i := 0; i < 300; i++ {
		k := fmt.Sprintf("key%03d", i)
		keys = append(keys, k)
		mustPut(t, cl, k, "v")
	}
	n4 := c.AddNode()
	newStore := c.Nodes[n4].Store().ID()
	// The new store must be known by gossip before it can be named.
	deadline := time.Now().Add(10 * time.Second)
	for {
		known := 0
		for i := 0; i < 3; i++ {
			if _, ok := c.Nodes[i].Membership().Store(newStore); ok {
				known++
			}
		}
		if known == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new store never joined gossip")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Ask a store that is not the leader: the call is forwarded.
	resp, err := c.Client(1).Admin.AddReplica(ctxT(t, 30*time.Second), &rangespb.AddReplicaRequest{RangeId: 1, StoreId: newStore})
	if err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	if len(resp.Range.Replicas) != 4 || resp.Range.Pending != nil {
		t.Fatalf("after add: %v", resp.Range)
	}
	waitLocalKeys(t, c, n4, keys)
	// Adding it twice is refused, and changes nothing.
	_, err = cl.Admin.AddReplica(ctxT(t, 10*time.Second), &rangespb.AddReplicaRequest{RangeId: 1, StoreId: newStore})
	if err == nil {
		t.Fatal("a second replica on the same store was accepted")
	}

	// Remove the replica on the leader's store; the range keeps serving.
	leader := c.WaitLeader(1)
	victim := c.Nodes[leader].Store().ID()
	asker := (leader + 1) % 3
	resp, err = c.Client(asker).Admin.RemoveReplica(ctxT(t, 30*time.Second), &rangespb.RemoveReplicaRequest{RangeId: 1, StoreId: victim})
	if err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	if len(resp.Range.Replicas) != 3 {
		t.Fatalf("after remove: %v", resp.Range)
	}
	for _, r := range resp.Range.Replicas {
		if r.StoreId == victim {
			t.Fatalf("removed store still listed: %v", resp.Range)
		}
	}
	mustPut(t, c.Client(asker), "after-remove", "v")
	expectValue(t, c.Client(n4), "key150", "v")
	// The removed store no longer runs the range.
	deadline = time.Now().Add(10 * time.Second)
	for {
		if _, err := c.Nodes[leader].Store().Descriptor(1); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the removed replica still runs on its store")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Removing a replica the range does not have, or the last one, is refused.
	_, err = c.Client(asker).Admin.RemoveReplica(ctxT(t, 10*time.Second), &rangespb.RemoveReplicaRequest{RangeId: 1, StoreId: victim})
	if err == nil {
		t.Fatal("removing an absent replica was accepted")
	}
}

func TestRestartedFollowerCatchesUpByLogReplay(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	leader := c.WaitLeader(1)
	follower := (leader + 1) % 3
	c.StopNode(follower)
	cl := c.Client(leader)
	var keys []string
	for i := 0; i < 30; i++ {
		k := fmt.Sprintf("r%02d", i)
		keys = append(keys, k)
		mustPut(t, cl, k, "v")
	}
	c.StartNode(follower)
	waitLocalKeys(t, c, follower, keys)
	if got := c.Nodes[follower].Store().SnapshotsRecovered(); got != 0 {
		t.Fatalf("follower installed %d snapshots; this test covers log replay", got)
	}
}
