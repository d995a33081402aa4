package ranges_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore"
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

// TestReAddedReplicaLeavesSplitChildAlone is the case the jepsen moving-keys
// run found: range 1 splits; its replica on a store is removed and added
// again, twice. The re-added replica replayed range 1's log from its first
// entry (the bootstrap log was never compacted): it wrote the pre-split
// values of the child's keys into the store's engine, under the child's
// replica there, and was refused the replayed split (the child's ID was in
// use), so it kept the pre-split span, and removing it again deleted that
// whole span, the child's keys included. A replica added to a range must
// start from a snapshot of the range as it is now.
func TestReAddedReplicaLeavesSplitChildAlone(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	cl := c.Client(0)
	mustPut(t, cl, "a", "left")
	mustPut(t, cl, "n1", "before the split")
	resp := split(t, c, 0, "m")
	child := resp.Right.Id
	mustPut(t, cl, "n1", "after the split")
	mustPut(t, cl, "n2", "after the split")
	victim := 2
	victimStore := c.Nodes[victim].Store().ID()
	want := map[string]string{"n1": "after the split", "n2": "after the split"}
	checkLocal := func(after string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			bad := ""
			for k, v := range want {
				res, err := c.Nodes[victim].Store().Read(ctxT(t, 5*time.Second), child, staleGet(c, child, k), true)
				if err != nil || res.Status != kvpb.Status_STATUS_OK || string(res.Results[0].Value) != v {
					bad = fmt.Sprintf("key %s: %v %v", k, res, err)
				}
			}
			if bad == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s, the victim's replica of the untouched child range %d is wrong: %s", after, child, bad)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	checkLocal("the split")
	for round := 1; round <= 2; round++ {
		if _, err := c.Client(0).Admin.RemoveReplica(ctxT(t, 30*time.Second), &rangespb.RemoveReplicaRequest{RangeId: 1, StoreId: victimStore}); err != nil {
			t.Fatal(ranges.FromStatus(err))
		}
		checkLocal(fmt.Sprintf("removing range 1's replica, round %d", round))
		if _, err := c.Client(0).Admin.AddReplica(ctxT(t, 30*time.Second), &rangespb.AddReplicaRequest{RangeId: 1, StoreId: victimStore}); err != nil {
			t.Fatal(ranges.FromStatus(err))
		}
		checkLocal(fmt.Sprintf("adding range 1's replica again, round %d", round))
		// The re-added replica has range 1's span as it is now.
		deadline := time.Now().Add(20 * time.Second)
		for {
			d, err := c.Nodes[victim].Store().Descriptor(1)
			if err == nil && d != nil && string(d.End) == "m" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the re-added replica of range 1 has descriptor %v (%v), want the span [\"\", \"m\")", round, d, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	checkAll(t, c.Client(victim), map[string]string{"a": "left", "n1": "after the split", "n2": "after the split"})
}

// TestAddedReplicaCountsInNoQuorumUntilCaughtUp: a range of three, one of
// whose replicas has just restarted and waits for a snapshot that is slow to
// come, gets a replica on a fourth store. The range keeps taking writes all
// along: the new replica counts in no quorum until it has caught up. (Added
// as a voter at once, it made the range need three acknowledgements of four
// while two of its replicas could give none before a snapshot reached them,
// and the leader streams one snapshot of a range at a time: no write
// committed until the slow stream ended. That is the flake of
// TestStoreDiesBeforeStartingItsSplitChild, where the restarted store's
// split child is the replica behind.)
func TestAddedReplicaCountsInNoQuorumUntilCaughtUp(t *testing.T) {
	var mu sync.Mutex
	hold := map[int]chan struct{}{} // node index: its snapshot sends wait until the channel closes
	held := make(chan int, 16)
	c := rangestest.Start(t, 3, rangestest.Options{SnapshotEntries: 20, CompactionOverhead: 5, RTTMillisecond: 100,
		StoreFailpoint: func(node int, step string) error {
			if step != kvstore.FailBeforeSnapshotSend {
				return nil
			}
			mu.Lock()
			ch := hold[node]
			mu.Unlock()
			if ch != nil {
				select {
				case held <- node:
				default:
				}
				<-ch
			}
			return nil
		}})
	releaseAll := func() {
		mu.Lock()
		for i, ch := range hold {
			close(ch)
			delete(hold, i)
		}
		mu.Unlock()
	}
	t.Cleanup(releaseAll) // before the cluster closes: cleanups run last first
	leader := c.WaitLeader(1)
	cl := c.Client(leader)
	put := func(prefix string, n int) (keys []string) {
		for i := 0; i < n; i++ {
			k := fmt.Sprintf("%s%03d", prefix, i)
			keys = append(keys, k)
			mustPut(t, cl, k, "v")
		}
		return keys
	}
	keys := put("a", 20)
	// A store misses enough that it needs a snapshot, and restarts; the
	// snapshot is slow to come (held wherever the leader is): the store is
	// alive, and behind.
	behind := (leader + 1) % 3
	c.StopNode(behind)
	keys = append(keys, put("b", 100)...)
	mu.Lock()
	for i := 0; i < 3; i++ {
		if i != behind {
			hold[i] = make(chan struct{})
		}
	}
	mu.Unlock()
	c.StartNode(behind)
	select {
	case <-held:
	case <-time.After(60 * time.Second):
		t.Fatal("no snapshot was sent to the restarted store")
	}

	n4 := c.AddNode()
	newStore := c.Nodes[n4].Store().ID()
	waitGossip(t, c, newStore)
	added := make(chan error, 1)
	go func() {
		_, err := cl.Admin.AddReplica(ctxT(t, 90*time.Second), &rangespb.AddReplicaRequest{RangeId: 1, StoreId: newStore})
		added <- ranges.FromStatus(err)
	}()
	// Until the new replica is in Raft's membership.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if d, err := c.Nodes[leader].Store().Descriptor(1); err == nil && d.Pending != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the new replica was never pending")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second)
	// The new replica holds nothing yet, and an old one is behind: the
	// range commits with the two others.
	for i := 0; i < 5; i++ {
		k := fmt.Sprintf("during%d", i)
		if err := cl.Put(ctxT(t, 10*time.Second), []byte(k), []byte("v")); err != nil {
			t.Fatalf("write %s while the new replica catches up: %v", k, err)
		}
		keys = append(keys, k)
	}
	releaseAll()
	select {
	case err := <-added:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("AddReplica did not return")
	}
	d, err := c.Nodes[leader].Store().Descriptor(1)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Replicas) != 4 || d.Pending != nil {
		t.Fatalf("after the add: %v", d)
	}
	keys = append(keys, put("c", 3)...)
	waitLocalKeys(t, c, n4, keys)
	waitLocalKeys(t, c, behind, keys)
}
