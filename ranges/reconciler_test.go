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

// A store that catches a parent range up by a snapshot taken after a split
// never applies the split, so nothing on it starts the child's replica. The
// reconciler does: the child gets its third replica back, holding every key.
func TestReconcilerStartsSplitChildSkippedBySnapshot(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{SnapshotEntries: 20, CompactionOverhead: 5})
	kv := map[string]string{}
	for i := 0; i < 40; i++ {
		kv[fmt.Sprintf("a%03d", i)] = "before"
		kv[fmt.Sprintf("z%03d", i)] = "before"
	}
	putAll(t, c.Client(0), kv)
	down := 2
	if c.WaitLeader(1) == down {
		if err := c.Nodes[0].TransferLeader(ctxT(t, 15*time.Second), 1, c.Nodes[0].Store().ID()); err != nil {
			t.Fatal(err)
		}
	}
	downStore := c.Nodes[down].Store().ID()
	c.StopNode(down)
	for k := range kv {
		kv[k] = "while-down-1"
	}
	putAll(t, c.Client(0), kv)
	resp := split(t, c, 0, "m")
	// Enough writes to both sides that the parent's log is compacted past
	// the split: store 2 can only catch the parent up by snapshot.
	for round := 2; round <= 4; round++ {
		for k := range kv {
			kv[k] = fmt.Sprintf("while-down-%d", round)
		}
		putAll(t, c.Client(0), kv)
	}
	kv["zz-new"] = "written-after-split"
	mustPut(t, c.Client(0), "zz-new", kv["zz-new"])
	recoveredBefore := uint64(0)
	c.StartNode(down)
	n := c.Nodes[down]
	if got := n.Store().ID(); got != downStore {
		t.Fatalf("store restarted as %d, want %d", got, downStore)
	}

	// The parent catches up by snapshot: it shrinks without applying the split.
	deadline := time.Now().Add(30 * time.Second)
	for {
		d, err := n.Store().Descriptor(resp.Left.Id)
		if err == nil && d != nil && d.Ver >= resp.Left.Ver && string(d.End) == "m" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store %d never caught up range %d: %v %v", downStore, resp.Left.Id, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n.Store().SnapshotsRecovered() <= recoveredBefore {
		t.Fatalf("store %d caught the parent up without a snapshot: the test does not test the gap", downStore)
	}

	// Within a bound the child has three live replicas again, and the one on
	// the restarted store holds every key of the child with its last value.
	var childKeys []string
	for k := range kv {
		if k >= "m" {
			childKeys = append(childKeys, k)
		}
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		live := 0
		for _, node := range c.Nodes {
			if d, err := node.Store().Descriptor(resp.Right.Id); err == nil && d != nil && len(d.Replicas) == 3 {
				live++
			}
		}
		if live == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("range %d has %d live replicas after 30s, want 3", resp.Right.Id, live)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitRangeValues(t, c, down, resp.Right.Id, kv, childKeys)
	members, _, err := c.Nodes[0].Store().Membership(ctxT(t, 10*time.Second), resp.Right.Id)
	if err != nil || len(members) != 3 {
		t.Fatalf("range %d raft members %v (%v), want 3", resp.Right.Id, members, err)
	}
	if got := n.ReconcilerActions("start"); got < 1 {
		t.Fatalf("reconciler counted %v starts on store %d, want at least 1", got, downStore)
	}

	// The restarted store's child replica can lead and serve every key
	// linearizably, and no acknowledged write was lost anywhere.
	if err := c.Nodes[0].TransferLeader(ctxT(t, 15*time.Second), resp.Right.Id, downStore); err != nil {
		t.Fatal(err)
	}
	checkAll(t, c.Client(down), kv)
	checkNoOverlap(t, c)
}

// waitRangeValues waits until node i's own replica of a range (a local,
// stale read) holds every key with its value in kv.
func waitRangeValues(t *testing.T, c *rangestest.Cluster, i int, rangeID uint64, kv map[string]string, keys []string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, k := range keys {
		for {
			res, err := c.Nodes[i].Store().Read(ctxT(t, 5*time.Second), rangeID, staleGet(c, rangeID, k), true)
			if err == nil && res.Status == kvpb.Status_STATUS_OK && res.Results[0].Found && string(res.Results[0].Value) == kv[k] {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: range %d never got %s=%s: %v %v", i, rangeID, k, kv[k], res, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// A store that was down while it was removed from a range comes back with a
// replica that lists itself; the reconciler destroys it once the range's
// other replicas confirm, linearizably, that the store is no member.
func TestReconcilerRemovesReplicaRemovedWhileDown(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	kv := letters()
	putAll(t, c.Client(0), kv)
	down := 2
	if c.WaitLeader(1) == down {
		if err := c.Nodes[0].TransferLeader(ctxT(t, 15*time.Second), 1, c.Nodes[0].Store().ID()); err != nil {
			t.Fatal(err)
		}
	}
	downStore := c.Nodes[down].Store().ID()
	c.StopNode(down)
	if _, err := c.Client(0).Admin.RemoveReplica(ctxT(t, 30*time.Second), &rangespb.RemoveReplicaRequest{RangeId: 1, StoreId: downStore}); err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	c.StartNode(down)
	n := c.Nodes[down]
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := n.Store().Descriptor(1); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store %d still runs its removed replica of range 1 after 30s", downStore)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The reconciler is what removes it (without it the replica stays for
	// good); its counter may lag the removal it reports, so only a double
	// removal is an error here.
	if got := n.ReconcilerActions("remove"); got > 1 {
		t.Fatalf("reconciler counted %v removals, want at most 1", got)
	}
	// Its other replicas stay, and the range keeps every key.
	for _, fr := range ranges.FirstRanges[1:] {
		if _, err := n.Store().Descriptor(fr.ID); err != nil {
			t.Fatalf("store %d lost its replica of range %d: %v", downStore, fr.ID, err)
		}
	}
	checkAll(t, c.Client(down), kv)
}

// The replica reconciler looks only at ranges that changed: an idle cluster
// takes no read index (each would wake its range from quiesce) however many
// reconcile intervals pass. It used to read every led range's descriptor and
// Raft membership linearizably at every interval.
func TestReconcilerLeavesIdleRangesAlone(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	for id := range uint64(len(ranges.FirstRanges)) {
		c.WaitLeader(id + 1)
	}
	reads := func() uint64 {
		var n uint64
		for _, node := range c.Nodes {
			n += node.Store().ReadIndexes()
		}
		return n
	}
	// Let the start's own work (bootstrap, first reconciles) finish: 2 s
	// without a read index, or 10 s.
	var before uint64
	for settled, i := 0, 0; settled < 4 && i < 20; i++ {
		time.Sleep(500 * time.Millisecond)
		if now := reads(); now == before {
			settled++
		} else {
			before, settled = now, 0
		}
	}
	time.Sleep(6 * 500 * time.Millisecond) // 6 reconcile intervals
	if after := reads(); after != before {
		t.Fatalf("an idle cluster took %d read indexes in 6 reconcile intervals, want none", after-before)
	}
}
