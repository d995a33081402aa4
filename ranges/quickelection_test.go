package ranges_test

import (
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestSoleVoterElectsQuicklyUntilItHasPeers: a store that bootstraps alone
// runs its ranges with a sole voter's short election timeout, again after a
// restart; a range that gets a second voter has its replica restarted with
// the normal timeout and keeps serving, while the ranges still alone keep the
// short one.
func TestSoleVoterElectsQuicklyUntilItHasPeers(t *testing.T) {
	c := rangestest.Start(t, 1, rangestest.Options{})
	quick := func(rangeID uint64) bool { return c.Nodes[0].Store().QuickElection(rangeID) }
	for id := uint64(1); id <= 4; id++ {
		if !quick(id) {
			t.Fatalf("range %d of a lone store runs the normal election timeout", id)
		}
	}
	c.StopNode(0)
	c.StartNode(0)
	c.WaitReady()
	if !quick(1) {
		t.Fatal("after a restart, the lone store's range 1 runs the normal election timeout")
	}
	mustPut(t, c.Client(0), "before", "v")

	n2 := c.AddNode()
	newStore := c.Nodes[n2].Store().ID()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := c.Nodes[0].Membership().Store(newStore); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new store never joined gossip")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := c.Client(0).Admin.AddReplica(ctxT(t, 30*time.Second), &rangespb.AddReplicaRequest{RangeId: 1, StoreId: newStore}); err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	deadline = time.Now().Add(10 * time.Second)
	for quick(1) {
		if time.Now().After(deadline) {
			t.Fatal("range 1 has two voters and still runs the short election timeout")
		}
		time.Sleep(20 * time.Millisecond)
	}
	mustPut(t, c.Client(0), "after", "v")
	expectValue(t, c.Client(n2), "before", "v")
	if !quick(2) {
		t.Fatal("range 2, still alone, lost its short election timeout")
	}
	// Restarted now, the two-voter range stays on the normal timeout.
	c.StopNode(0)
	c.StartNode(0)
	c.WaitReady()
	if quick(1) {
		t.Fatal("a range with two voters restarted with the short election timeout")
	}
	mustPut(t, c.Client(0), "restarted", "v")
}
