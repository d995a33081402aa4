package ranges_test

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestStoreDiesBeforeStartingItsSplitChild: a store dies after the split
// applied (the child's descriptor and boot record are written) but before
// it started the child, and restarts. It runs the child from its boot
// record and compacts its log, so a replica added to the child later holds
// every key; no acknowledged write is lost and no key is served by two
// ranges. The same when it dies after starting the child, before the
// compaction (kvstore.FailSplitChildBeforeCompaction).
//
// The restarted store's child replica is still catching up when the replica
// is added (its keys are there from before the split, so the wait below
// does not wait for that): the add must not make the range's quorum depend
// on it and on the new replica (TestAddedReplicaCountsInNoQuorumUntilCaughtUp).
func TestStoreDiesBeforeStartingItsSplitChild(t *testing.T) {
	for _, step := range []string{kvstore.FailSplitChildBeforeStart, kvstore.FailSplitChildBeforeCompaction} {
		t.Run(step, func(t *testing.T) {
			var armed atomic.Int64 // node index + 1 the failpoint fires on; 0: off
			var fired atomic.Bool
			c := rangestest.Start(t, 3, rangestest.Options{StoreFailpoint: func(node int, s string) error {
				if s == step && int64(node+1) == armed.Load() {
					fired.Store(true)
					return errors.New("injected crash at " + s)
				}
				return nil
			}})
			kv := map[string]string{}
			var childKeys []string
			for i := 0; i < 200; i++ {
				k := fmt.Sprintf("k%03d", i)
				kv[k] = "v1"
				if k >= "k100" {
					childKeys = append(childKeys, k)
				}
			}
			putAll(t, c.Client(0), kv)
			const victim = 2
			armed.Store(victim + 1)
			resp := split(t, c, 0, "k100")
			deadline := time.Now().Add(10 * time.Second)
			for !fired.Load() {
				if time.Now().After(deadline) {
					t.Fatal("the failpoint did not fire")
				}
				time.Sleep(20 * time.Millisecond)
			}
			// The store dies there; the others carry on.
			c.StopNode(victim)
			armed.Store(0)
			for k := range kv {
				kv[k] = "v2"
			}
			putAll(t, c.Client(0), kv)
			c.StartNode(victim)
			// Its child replica runs again and catches up.
			waitRangeKeys(t, c, victim, resp.Right.Id, childKeys)
			// A replica added later gets a snapshot, not a replay of the
			// bootstrap log onto an empty state machine.
			n4 := c.AddNode()
			newStore := c.Nodes[n4].Store().ID()
			waitGossip(t, c, newStore)
			if _, err := c.Client(0).Admin.AddReplica(ctxT(t, 60*time.Second), &rangespb.AddReplicaRequest{RangeId: resp.Right.Id, StoreId: newStore}); err != nil {
				t.Fatal(ranges.FromStatus(err))
			}
			waitRangeKeys(t, c, n4, resp.Right.Id, childKeys)
			checkAll(t, c.Client(victim), kv)
			checkNoOverlap(t, c)
		})
	}
}
