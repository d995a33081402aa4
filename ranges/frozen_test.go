package ranges_test

import (
	"errors"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestNoReplicaRemovalWhileFrozen: a range frozen for a merge refuses to
// lose a replica (the merge's commit checks the right replica on every
// store; a removal in between made it apply on some stores only), and
// nothing changes.
func TestNoReplicaRemovalWhileFrozen(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{
		MergeResolveAfter: time.Minute, // keep the range frozen for the test
		Failpoint: func(s string) error {
			if s == ranges.FailAfterFreeze {
				return errors.New("injected crash at " + s)
			}
			return nil
		}})
	resp := split(t, c, 0, "m")
	if _, err := c.Client(0).Admin.Merge(ctxT(t, 30*time.Second), &rangespb.MergeRequest{RangeId: resp.Left.Id}); err == nil {
		t.Fatal("the failpoint did not fire")
	}
	before, err := c.Nodes[0].Router().Descriptor(ctxT(t, 10*time.Second), resp.Right.Id)
	if err != nil {
		t.Fatal(err)
	}
	if before.State != kvpb.RangeState_RANGE_STATE_FROZEN {
		t.Fatalf("right range is %s, want frozen", before.State)
	}
	victim := before.Replicas[0].StoreId
	from := 0
	for i, n := range c.Nodes {
		if n.Store().ID() != victim {
			from = i
		}
	}
	_, err = c.Client(from).Admin.RemoveReplica(ctxT(t, 30*time.Second), &rangespb.RemoveReplicaRequest{RangeId: resp.Right.Id, StoreId: victim})
	if err == nil {
		t.Fatal("a replica of a frozen range was removed")
	}
	after, err := c.Nodes[from].Router().Descriptor(ctxT(t, 10*time.Second), resp.Right.Id)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Replicas) != len(before.Replicas) || after.ConfVer != before.ConfVer {
		t.Fatalf("the refused removal changed the range: %v -> %v", before.Replicas, after.Replicas)
	}
}
