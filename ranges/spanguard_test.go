package ranges_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestLaggingParentAndReAddedChild (issue 15): a store's replica of range 1
// is held just before a split that the other replicas apply. Meanwhile the
// child's replica on that store (never started: its parent there has not
// split) is removed and added again. Before, the new child replica was
// installed from a snapshot while the store's replica of range 1 still held
// the child's span: range 1 then refused the split on that store alone (the
// child's ID was in use there) and kept its pre-split span for ever, apart
// from its other replicas. Now the store refuses to start a replica over a
// span another of its replicas holds, so range 1 splits there like
// everywhere, and the child can be added once it has.
func TestLaggingParentAndReAddedChild(t *testing.T) {
	const victim = 2
	var armed, held atomic.Bool
	hold := make(chan struct{})
	c := rangestest.Start(t, 3, rangestest.Options{StoreFailpoint: func(node int, step string) error {
		if step == kvstore.FailBeforeSplitApply && node == victim && armed.Load() {
			held.Store(true)
			<-hold
		}
		return nil
	}})
	var once sync.Once
	release := func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release)
	// Range 1's leader must not be the held replica: the split's result
	// comes from the leader's apply.
	if err := c.Nodes[0].TransferLeader(ctxT(t, 15*time.Second), 1, c.Nodes[0].Store().ID()); err != nil {
		t.Fatal(err)
	}
	kv := letters()
	putAll(t, c.Client(0), kv)
	armed.Store(true)
	resp := split(t, c, 0, "m")
	child := resp.Right.Id
	waitUntil(t, 10*time.Second, "the victim's replica of range 1 reaches the split", held.Load)

	var childKeys []string
	for k := range kv {
		if k >= "m" {
			kv[k] = "after the split"
			childKeys = append(childKeys, k)
		}
	}
	putAll(t, c.Client(0), kv)
	victimStore := c.Nodes[victim].Store().ID()
	if _, err := c.Client(0).Admin.RemoveReplica(ctxT(t, 30*time.Second), &rangespb.RemoveReplicaRequest{RangeId: child, StoreId: victimStore}); err != nil {
		t.Fatalf("remove the child's replica on the victim: %v", ranges.FromStatus(err))
	}
	_, err := c.Client(0).Admin.AddReplica(ctxT(t, 60*time.Second), &rangespb.AddReplicaRequest{RangeId: child, StoreId: victimStore})
	t.Logf("add of the child's replica while range 1 lags there: %v", ranges.FromStatus(err))

	release()
	waitUntil(t, 20*time.Second, "the victim's replica of range 1 applies the split as the others did", func() bool {
		d, err := c.Nodes[victim].Store().Descriptor(1)
		return err == nil && d != nil && string(d.End) == "m" && d.Ver == resp.Left.Ver
	})
	// The split started the child's replica the store had before its
	// removal; the reconciler destroys it (no descriptor lists it). Then
	// the child can be added there, and holds its newest keys.
	waitUntil(t, 30*time.Second, "the reconciler destroys the victim's removed child replica", func() bool {
		return !holds(c.Nodes[victim], child)
	})
	if _, err := c.Client(0).Admin.AddReplica(ctxT(t, 60*time.Second), &rangespb.AddReplicaRequest{RangeId: child, StoreId: victimStore}); err != nil {
		t.Fatalf("add the child's replica once range 1 split there: %v", ranges.FromStatus(err))
	}
	waitUntil(t, 30*time.Second, "the victim's new child replica holds the newest values", func() bool {
		for _, k := range childKeys {
			res, err := c.Nodes[victim].Store().Read(context.Background(), child, staleGet(c, child, k), true)
			if err != nil || res.Status != kvpb.Status_STATUS_OK || string(res.Results[0].Value) != kv[k] {
				return false
			}
		}
		return true
	})
	checkAll(t, c.Client(victim), kv)
	checkNoOverlap(t, c)
}

// TestRaftRemovalRacingMergeCommit (issue 15): a replica of the right range
// leaves Raft after the merge froze the range and every replica applied the
// freeze (a removal that checked the range's state just before the freeze),
// and the replica change is then recorded, as RemoveReplica and the
// reconciler did, before the left range commits the merge. Before, the
// record applied on the frozen range: the commit found the right replica
// changed on the stores that applied it and refused there, and merged on
// the removed store, whose right replica never saw the record: the left
// range's replicas diverged. Now a frozen range refuses the record, alike
// on every replica, and the merge commits everywhere.
func TestRaftRemovalRacingMergeCommit(t *testing.T) {
	var armed atomic.Bool
	var c *rangestest.Cluster
	var right atomic.Uint64
	raced := make(chan error, 1)
	c = rangestest.Start(t, 3, rangestest.Options{
		MergeResolveAfter: time.Minute,
		Failpoint: func(step string) error {
			if step == ranges.FailAfterWait && armed.CompareAndSwap(true, false) {
				raced <- raceRemoval(c, right.Load())
			}
			return nil
		}})
	kv := letters()
	putAll(t, c.Client(0), kv)
	resp := split(t, c, 0, "m")
	right.Store(resp.Right.Id)
	checkAll(t, c.Client(0), kv)
	armed.Store(true)
	_, err := c.Client(0).Admin.Merge(ctxT(t, 60*time.Second), &rangespb.MergeRequest{RangeId: resp.Left.Id})
	select {
	case rerr := <-raced:
		t.Logf("racing replica record: %v; merge: %v", rerr, ranges.FromStatus(err))
	default:
		t.Fatalf("the merge did not reach its commit: %v", ranges.FromStatus(err))
	}

	// Every replica of the left range ends with the same descriptor.
	var descs []*kvpb.RangeDescriptor
	ok := waitFor(30*time.Second, func() bool {
		descs = descs[:0]
		for _, n := range c.Nodes {
			d, err := n.Store().Descriptor(resp.Left.Id)
			if err != nil || d == nil {
				return false
			}
			descs = append(descs, d)
		}
		for _, d := range descs[1:] {
			if !proto.Equal(d, descs[0]) {
				return false
			}
		}
		return true
	})
	if !ok {
		var s string
		for i, d := range descs {
			s += fmt.Sprintf("\n  store %d: [%q, %q) version %d.%d", i, d.Start, d.End, d.Ver, d.ConfVer)
		}
		t.Fatalf("the left range's replicas diverged:%s", s)
	}
	if err == nil && len(descs[0].End) != 0 {
		t.Fatalf("the merge returned but the left range ends at %q", descs[0].End)
	}
	for k := range kv {
		kv[k] = "after"
	}
	putAll(t, c.Client(0), kv)
	checkAll(t, c.Client(1), kv)
	checkNoOverlap(t, c)
}

// raceRemoval takes a replica of the frozen right range (not the leader's,
// not node 0's) out of Raft and records it in the descriptor, as a removal
// that started just before the freeze would.
func raceRemoval(c *rangestest.Cluster, right uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	leader := c.LeaderNode(right)
	if leader < 0 {
		return fmt.Errorf("range %d has no leader", right)
	}
	frozen, err := c.Nodes[leader].Store().Descriptor(right)
	if err != nil {
		return err
	}
	var gone *kvpb.Replica
	var keep []*kvpb.Replica
	for _, r := range frozen.Replicas {
		if gone == nil && r.StoreId != c.Nodes[0].Store().ID() && r.StoreId != c.Nodes[leader].Store().ID() {
			gone = r
			continue
		}
		keep = append(keep, r)
	}
	if gone == nil {
		return fmt.Errorf("no replica of range %d to remove", right)
	}
	if err := c.Nodes[leader].Store().RemoveRaftReplica(ctx, right, gone.ReplicaId); err != nil {
		return fmt.Errorf("raft remove: %w", err)
	}
	_, err = c.Nodes[0].Router().ProposeTo(ctx, right, &kvpb.Command{RequestId: ranges.NewRequestID(),
		Payload: &kvpb.Command_SetReplicas{SetReplicas: &kvpb.SetReplicas{ConfVer: frozen.ConfVer, Replicas: keep}}})
	return err
}

// TestDestroyRefusedWhileListed (issue 15): the DestroyReplica RPC, which
// anyone who reaches a store's gRPC port can call on a cluster without
// TLS, destroyed whatever replica it named. Now it destroys only a replica
// its range no longer lists.
func TestDestroyRefusedWhileListed(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	victim := c.Nodes[1].Store().Replicas()[0]
	conn, err := grpc.NewClient(c.Addr(1), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = rangespb.NewStoreClient(conn).DestroyReplica(ctxT(t, 15*time.Second),
		&rangespb.DestroyReplicaRequest{RangeId: victim.RangeID, ReplicaId: victim.ReplicaID})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("DestroyReplica of a member = %v, want FailedPrecondition", err)
	}
	if !holds(c.Nodes[1], victim.RangeID) {
		t.Fatalf("range %d's replica on store 1 was destroyed while its range lists it", victim.RangeID)
	}
}

func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !waitFor(d, cond) {
		t.Fatalf("timed out waiting until %s", what)
	}
}
