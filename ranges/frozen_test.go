package ranges_test

import (
	"errors"
	"strings"
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

	// Neither a split of the frozen range nor a second merge may start.
	if _, err := c.Client(from).Admin.Split(ctxT(t, 30*time.Second), &rangespb.SplitRequest{RangeId: resp.Right.Id, Key: []byte("t")}); err == nil {
		t.Fatal("a frozen range was split")
	}
	if _, err := c.Client(from).Admin.Merge(ctxT(t, 30*time.Second), &rangespb.MergeRequest{RangeId: resp.Left.Id}); err == nil {
		t.Fatal("a second merge started on a frozen range")
	}
	again, err := c.Nodes[from].Router().Descriptor(ctxT(t, 10*time.Second), resp.Right.Id)
	if err != nil {
		t.Fatal(err)
	}
	if again.Ver != before.Ver || string(again.End) != string(before.End) || again.State != before.State {
		t.Fatalf("a refused change changed the range: %v -> %v", before, again)
	}
}

// TestMergeRefusesDifferentReplicaSets: ranges whose replicas are on
// different stores are not merged (the balancer aligns them first), and
// nothing changes.
func TestMergeRefusesDifferentReplicaSets(t *testing.T) {
	c := rangestest.Start(t, 4, rangestest.Options{})
	resp := split(t, c, 0, "m")
	inLeft := map[uint64]bool{}
	for _, r := range resp.Left.Replicas {
		inLeft[r.StoreId] = true
	}
	var other uint64
	for _, n := range c.Nodes {
		if !inLeft[n.Store().ID()] {
			other = n.Store().ID()
		}
	}
	if other == 0 {
		t.Fatal("every store holds the left range")
	}
	if _, err := c.Client(0).Admin.AddReplica(ctxT(t, 60*time.Second), &rangespb.AddReplicaRequest{RangeId: resp.Right.Id, StoreId: other}); err != nil {
		t.Fatalf("add replica: %v", ranges.FromStatus(err))
	}
	_, err := c.Client(0).Admin.Merge(ctxT(t, 30*time.Second), &rangespb.MergeRequest{RangeId: resp.Left.Id})
	if err == nil || !strings.Contains(err.Error(), "align their replicas") {
		t.Fatalf("merge of ranges on different stores: %v", err)
	}
	for _, id := range []uint64{resp.Left.Id, resp.Right.Id} {
		d, err := c.Nodes[0].Router().Descriptor(ctxT(t, 10*time.Second), id)
		if err != nil {
			t.Fatal(err)
		}
		if d.State != kvpb.RangeState_RANGE_STATE_NORMAL {
			t.Fatalf("range %d is %s after a refused merge", id, d.State)
		}
	}
}
