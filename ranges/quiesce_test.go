package ranges_test

import (
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestIdleRangeElectsWhenItsLeadersStoreDies: an idle range, quiesced, whose
// leader's store dies gets a new leader with no request to wake it: gossip
// declares the store dead, and the survivors wake the ranges it led. Before,
// the quiesced followers kept the dead leader for good, so the range had no
// leader to replace the dead replica with until a client wrote to it.
func TestIdleRangeElectsWhenItsLeadersStoreDies(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	leader := c.WaitLeader(1)
	// Idle past the quiesce threshold (10 election timeouts: 2 s at the
	// tests' 20 ms tick); nothing reads or writes range 1 from here on.
	time.Sleep(4 * time.Second)
	dead := c.Nodes[leader].Store().ID()
	c.StopNode(leader)
	deadline := time.Now().Add(20 * time.Second)
	for {
		for i, n := range c.Nodes {
			if n == nil || i == leader {
				continue
			}
			id, _, ok := n.Store().Leader(1)
			if !ok || id == 0 {
				continue
			}
			desc, err := n.Store().Descriptor(1)
			if err != nil || desc == nil {
				continue
			}
			for _, r := range desc.Replicas {
				if r.ReplicaId == id && r.StoreId != dead {
					t.Logf("store %d's replica leads range 1 after its leader's store died", r.StoreId)
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the idle range still follows its dead leader 20 s after its store stopped")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
