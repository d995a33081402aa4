package ranges

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// Replica changes keep the descriptor's member list in step with Raft's
// (Dragonboat's state machine never sees config changes):
//
//  1. AddReplicaIntent through the range's log allocates a replica ID (never
//     reused) and records the store as pending.
//  2. Raft's config change adds the replica as a non-voting member (a
//     learner); the target store starts it with join and non-voting set, and
//     the leader brings it up to date by snapshot.
//  3. Once it applied what the range had applied when it joined, a second
//     config change promotes it to voter, and its store records that.
//  4. SetReplicas through the log makes the descriptor match Raft's
//     membership and clears pending.
//
// A new replica holds nothing until a snapshot reached it. Added at once as
// a voter, it would count in the quorum from the moment its config change
// applied: a range of three with one replica behind (a store that has just
// restarted, still waiting for its own snapshot) becomes a range of four that
// needs three acknowledgements, with two of its replicas unable to give one,
// and stops committing until one of them has caught up. As a learner it
// counts in no quorum until it is promoted, and it is promoted caught up.
//
// A crash between the steps leaves a pending entry (and perhaps a learner)
// or a descriptor that differs from Raft; the leader's reconciler finishes
// step 4 from Raft's membership, which is the truth, and removes a learner
// it gives up on.

// learnerCatchUp bounds the wait for a new replica to catch up before its
// promotion; it stays under pendingGrace, after which the background
// reconciler gives the pending replica up.
const learnerCatchUp = 25 * time.Second

// holds reports whether this store runs a replica of the range.
func (n *Node) holds(rangeID uint64) bool {
	_, err := n.store.Descriptor(rangeID)
	return err == nil
}

// retryNotReady runs f until it returns anything but a transient refusal of
// the local replica (no leader during an election, a busy or starting
// replica, a timed-out read) or ctx ends. Only reads go through it: their
// retry is harmless.
func retryNotReady(ctx context.Context, f func(ctx context.Context) error) error {
	backoff := 20 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(actx)
		cancel()
		if err == nil || !transient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

// transient reports whether the local replica refused for a moment only:
// no leader during an election, a busy or starting replica, a timeout.
func transient(err error) bool {
	return errors.Is(err, kvstore.ErrNotReady) || errors.Is(err, kvstore.ErrTimeout)
}

// descriptor reads the range's descriptor linearizably through the local
// replica, retrying while the range has no leader.
func (n *Node) descriptor(ctx context.Context, rangeID uint64) (*kvpb.RangeDescriptor, error) {
	var d *kvpb.RangeDescriptor
	err := retryNotReady(ctx, func(ctx context.Context) error {
		res, err := n.store.Read(ctx, rangeID, &kvpb.Query{DescriptorOnly: true}, false)
		if err != nil {
			return err
		}
		if res.Range == nil {
			return fmt.Errorf("range %d has no descriptor yet: %w", rangeID, kvstore.ErrNotReady)
		}
		d = res.Range
		return nil
	})
	return d, err
}

// membership reads Raft's voters and non-voting members of the range
// linearizably through the local replica, retrying while it has no leader.
func (n *Node) membership(ctx context.Context, rangeID uint64) (voters, learners map[uint64]string, err error) {
	err = retryNotReady(ctx, func(ctx context.Context) error {
		var err error
		voters, learners, err = n.store.RaftMembers(ctx, rangeID)
		return err
	})
	return voters, learners, err
}

func (n *Node) propose(ctx context.Context, rangeID uint64, cmd *kvpb.Command) (*kvpb.CommandResult, error) {
	cmd.RequestId = NewRequestID()
	return n.router.ProposeTo(ctx, rangeID, cmd)
}

// AddReplica adds a replica of the range on a store and waits until the
// descriptor lists it. The replica joins as a learner and becomes a voter
// only once it has caught up, so the range keeps its quorum meanwhile.
func (n *Node) AddReplica(ctx context.Context, rangeID, storeID uint64) (*kvpb.RangeDescriptor, error) {
	target, ok := n.members.Store(storeID)
	if !ok {
		return nil, fmt.Errorf("store %d: %w", storeID, ErrUnknownStore)
	}
	desc, err := n.descriptor(ctx, rangeID)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = n.compactForAdd(wctx, desc)
	cancel()
	if err != nil {
		return nil, err
	}
	res, err := n.propose(ctx, rangeID, &kvpb.Command{Ver: desc.Ver, Payload: &kvpb.Command_AddReplica{
		AddReplica: &kvpb.AddReplicaIntent{StoreId: storeID, RaftAddr: target.Meta.Raft}}})
	if err != nil {
		return nil, err
	}
	replicaID, addr := res.ReplicaId, target.Meta.Raft
	if err := n.addLearner(ctx, desc, replicaID, storeID, addr); err != nil {
		return nil, err
	}
	// It votes now (or already did): its store restarts it as a voter.
	boot := &kvpb.BootRecord{RangeId: rangeID, ReplicaId: replicaID, Join: true}
	if err := n.startOnRetrying(ctx, storeID, boot, desc); err != nil {
		return nil, fmt.Errorf("start replica %d on store %d: %w", replicaID, storeID, err)
	}
	n.log.Info("replica added", "range", rangeID, "replica", replicaID, "target", storeID)
	return n.reconcile(ctx, rangeID, true)
}

// addLearner makes the replica a voter of the range the safe way: added as
// a non-voting member and started, promoted once it caught up. A replica
// that Raft counts as a voter already is left as it is (an earlier attempt
// promoted it).
func (n *Node) addLearner(ctx context.Context, desc *kvpb.RangeDescriptor, replicaID, storeID uint64, addr string) error {
	rangeID := desc.Id
	for {
		voters, learners, err := n.membership(ctx, rangeID)
		if err != nil {
			return err
		}
		if _, ok := voters[replicaID]; ok {
			return nil
		}
		if _, ok := learners[replicaID]; ok {
			break
		}
		// A config change that times out may still apply: look again
		// before a retry.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = n.store.AddRaftNonVoting(cctx, rangeID, replicaID, addr)
		cancel()
		if err == nil {
			break
		}
		if !transient(err) || ctx.Err() != nil {
			return fmt.Errorf("raft add of non-voting replica %d: %w", replicaID, err)
		}
		if err := pause(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("raft add of non-voting replica %d: %w", replicaID, err)
		}
	}
	boot := &kvpb.BootRecord{RangeId: rangeID, ReplicaId: replicaID, Join: true, NonVoting: true}
	if err := n.startOnRetrying(ctx, storeID, boot, desc); err != nil {
		n.abandonLearner(rangeID, replicaID)
		return fmt.Errorf("start replica %d on store %d: %w", replicaID, storeID, err)
	}
	// What the range applied once the learner was a member: the leader's
	// snapshot for it, and the log after, hold at least that much.
	if _, err := n.descriptor(ctx, rangeID); err != nil {
		return err
	}
	want, err := n.store.Applied(rangeID)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, learnerCatchUp)
	err = n.waitReplicaApplied(wctx, storeID, rangeID, want)
	cancel()
	if err != nil {
		n.abandonLearner(rangeID, replicaID)
		return fmt.Errorf("%w: replica %d of range %d on store %d did not catch up, so it was not made a voter (%v); retry",
			ErrUnavailable, replicaID, rangeID, storeID, err)
	}
	// Promote. A timed-out promotion may have applied: look again.
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := n.store.AddRaftReplica(cctx, rangeID, replicaID, addr)
		cancel()
		if err == nil {
			n.log.Info("learner caught up and promoted", "range", rangeID, "replica", replicaID, "applied", want)
			return nil
		}
		if !transient(err) || ctx.Err() != nil {
			return fmt.Errorf("raft promotion of replica %d: %w", replicaID, err)
		}
		if err := pause(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("raft promotion of replica %d: %w", replicaID, err)
		}
		voters, _, merr := n.membership(ctx, rangeID)
		if merr != nil {
			return merr
		}
		if _, ok := voters[replicaID]; ok {
			return nil
		}
	}
}

// startOnRetrying starts a replica on a store (StartReplica is idempotent),
// retrying for a while when the store does not answer or gossip has it
// suspect for a moment: the replica is a Raft member already.
func (n *Node) startOnRetrying(ctx context.Context, storeID uint64, boot *kvpb.BootRecord, desc *kvpb.RangeDescriptor) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := n.startOn(ctx, storeID, boot, desc)
		if c := status.Code(err); err == nil || c != codes.Unavailable && c != codes.DeadlineExceeded || time.Now().After(deadline) {
			return err
		}
		if perr := pause(ctx, 200*time.Millisecond); perr != nil {
			return err
		}
	}
}

// pause waits d, or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// waitReplicaApplied waits until the range's replica on a store applied the
// index.
func (n *Node) waitReplicaApplied(ctx context.Context, storeID, rangeID, index uint64) error {
	var got uint64
	var lastErr error
	for {
		if storeID == n.store.ID() {
			got, lastErr = n.store.Applied(rangeID)
		} else if c, err := n.storeClient(storeID); err != nil {
			lastErr = err
		} else {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			resp, err := c.ReplicaDescriptor(cctx, &rangespb.ReplicaDescriptorRequest{RangeId: rangeID})
			cancel()
			if lastErr = err; err == nil {
				got = resp.Applied
			}
		}
		if lastErr == nil && got >= index {
			return nil
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("applied %d of %d: %w", got, index, lastErr)
			}
			return fmt.Errorf("applied %d of %d", got, index)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// abandonLearner takes a learner that will not be promoted out of Raft and
// drops the pending entry; the target store's reconciler then destroys the
// replica, which no descriptor lists. Best effort: the leader's reconciler
// does the same after its grace period.
func (n *Node) abandonLearner(rangeID, replicaID uint64) {
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	if err := n.store.RemoveRaftReplica(ctx, rangeID, replicaID); err != nil {
		n.log.Warn("remove a learner that did not catch up", "range", rangeID, "replica", replicaID, "err", err)
		return
	}
	if _, err := n.reconcile(ctx, rangeID, true); err != nil {
		n.log.Warn("drop a learner's pending entry", "range", rangeID, "replica", replicaID, "err", err)
	}
}

// RemoveReplica removes the range's replica on a store, then destroys it there.
func (n *Node) RemoveReplica(ctx context.Context, rangeID, storeID uint64) (*kvpb.RangeDescriptor, error) {
	desc, err := n.descriptor(ctx, rangeID)
	if err != nil {
		return nil, err
	}
	var rep *kvpb.Replica
	for _, r := range desc.Replicas {
		if r.StoreId == storeID {
			rep = r
		}
	}
	if rep == nil {
		return nil, fmt.Errorf("%w: store %d holds no replica of range %d", ErrBadRequest, storeID, rangeID)
	}
	if len(desc.Replicas) == 1 {
		return nil, fmt.Errorf("%w: replica %d is the last of range %d", ErrBadRequest, rep.ReplicaId, rangeID)
	}
	if desc.Pending != nil {
		return nil, &RefusedError{Status: kvpb.Status_STATUS_CONF_CHANGE_REFUSED,
			Message: fmt.Sprintf("range %d is adding a replica on store %d", rangeID, desc.Pending.StoreId)}
	}
	if desc.State != kvpb.RangeState_RANGE_STATE_NORMAL {
		// A merge waits for every replica of a frozen range and commits on
		// the left only where the right's replica is there: removing one
		// would let the commit apply on some stores and not on others.
		return nil, &RefusedError{Status: kvpb.Status_STATUS_CONF_CHANGE_REFUSED,
			Message: fmt.Sprintf("range %d is %s: no replica change until its split or merge ends", rangeID, desc.State)}
	}
	if storeID == n.store.ID() {
		return nil, fmt.Errorf("%w: remove the local replica from another store", ErrBadRequest)
	}
	if leader, _, ok := n.store.Leader(rangeID); ok && leader == rep.ReplicaId {
		// Hand leadership to this store's replica first, so the range keeps
		// serving without an election.
		if err := n.TransferLeader(ctx, rangeID, n.store.ID()); err != nil {
			return nil, err
		}
	}
	// The descriptor first, Raft after. SetReplicas applies only on a
	// normal range, alike on every replica: once it applied, a merge can
	// no longer freeze the range with the replica in it (it plans with the
	// descriptor, and the commit refuses ranges on different stores); if a
	// freeze came first, it is refused and Raft is left alone. Raft first
	// would let a freeze in between, and a frozen range whose Raft lost a
	// member that its descriptor still lists can never record the change.
	keep := make([]*kvpb.Replica, 0, len(desc.Replicas)-1)
	for _, r := range desc.Replicas {
		if r.ReplicaId != rep.ReplicaId {
			keep = append(keep, r)
		}
	}
	res, err := n.propose(ctx, rangeID, &kvpb.Command{Payload: &kvpb.Command_SetReplicas{
		SetReplicas: &kvpb.SetReplicas{ConfVer: desc.ConfVer, Replicas: keep}}})
	if err != nil {
		return nil, err
	}
	desc = res.Range
	// A crash here leaves Raft with a member no descriptor lists; the
	// leader's reconciler finishes the removal (reconcile).
	if err := n.store.RemoveRaftReplica(ctx, rangeID, rep.ReplicaId); err != nil {
		// The leader's reconciler may have finished it first.
		voters, learners, merr := n.membership(ctx, rangeID)
		_, voter := voters[rep.ReplicaId]
		_, learner := learners[rep.ReplicaId]
		if merr != nil || voter || learner {
			return nil, fmt.Errorf("raft remove of replica %d: %w", rep.ReplicaId, err)
		}
	}
	n.log.Info("replica removed", "range", rangeID, "replica", rep.ReplicaId, "target", storeID)
	if c, err := n.storeClient(storeID); err == nil {
		if _, err := c.DestroyReplica(ctx, &rangespb.DestroyReplicaRequest{RangeId: rangeID, ReplicaId: rep.ReplicaId}); err != nil {
			n.log.Warn("destroy removed replica", "range", rangeID, "replica", rep.ReplicaId, "target", storeID, "err", err)
		}
	}
	return desc, nil
}

// checkDestroy refuses the DestroyReplica RPC for a local replica that its
// range's current descriptor, read linearizably through the range's other
// replicas, still lists or is adding. RemoveReplica calls it once the
// descriptor no longer does; without cluster TLS anyone who reaches the
// store's gRPC port can call it too (docs/security.md), and it must never
// take a member's replica.
func (n *Node) checkDestroy(ctx context.Context, rangeID, replicaID uint64) error {
	local, err := n.store.Descriptor(rangeID)
	if err != nil {
		return err
	}
	rt := n.table.Get(rangeID)
	if rt == nil && local != nil {
		rt = &Route{Desc: local}
	}
	if rt == nil {
		return &RefusedError{Status: kvpb.Status_STATUS_CONF_CHANGE_REFUSED,
			Message: fmt.Sprintf("range %d is unknown here: its replica %d is not destroyed", rangeID, replicaID)}
	}
	cur, err := n.remoteDescriptor(ctx, rt)
	if err != nil {
		return fmt.Errorf("%w: the current descriptor of range %d could not be read, so its replica %d is not destroyed: %v", ErrUnavailable, rangeID, replicaID, err)
	}
	if hasReplica(cur, replicaID) || cur.Pending != nil && cur.Pending.ReplicaId == replicaID {
		return &RefusedError{Status: kvpb.Status_STATUS_CONF_CHANGE_REFUSED,
			Message: fmt.Sprintf("range %d still lists replica %d: remove it from the range first", rangeID, replicaID)}
	}
	return nil
}

// TransferLeader moves the range's leadership to the replica on a store and
// waits until it took over.
func (n *Node) TransferLeader(ctx context.Context, rangeID, storeID uint64) error {
	desc, err := n.store.Descriptor(rangeID)
	if err != nil {
		return err
	}
	var target uint64
	for _, r := range desc.Replicas {
		if r.StoreId == storeID {
			target = r.ReplicaId
		}
	}
	if target == 0 {
		return fmt.Errorf("%w: store %d holds no replica of range %d", ErrBadRequest, storeID, rangeID)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if id, _, ok := n.store.Leader(rangeID); ok && id == target {
			n.log.Info("leader transferred", "range", rangeID, "replica", target)
			return nil
		}
		if err := n.store.TransferLeader(rangeID, target); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%w: leadership of range %d did not move to store %d", ErrUnavailable, rangeID, storeID)
}

// startOn starts a replica of the range desc describes on a store; the
// store refuses while another of its replicas holds part of desc's span.
func (n *Node) startOn(ctx context.Context, storeID uint64, boot *kvpb.BootRecord, desc *kvpb.RangeDescriptor) error {
	if storeID == n.store.ID() {
		return n.store.StartReplica(boot, desc)
	}
	c, err := n.storeClient(storeID)
	if err != nil {
		return err
	}
	_, err = c.StartReplica(ctx, &rangespb.StartReplicaRequest{Boot: boot, Range: desc})
	return err
}

// reconcile makes the descriptor's replicas equal Raft's membership. A
// pending replica that Raft never added is dropped only when clearPending is
// set: the admin path sets it after its own Raft change; the background
// loop sets it only for pending entries older than a grace period.
func (n *Node) reconcile(ctx context.Context, rangeID uint64, clearPending bool) (*kvpb.RangeDescriptor, error) {
	for attempt := 0; attempt < 5; attempt++ {
		desc, err := n.descriptor(ctx, rangeID)
		if err != nil {
			return nil, err
		}
		if desc.State != kvpb.RangeState_RANGE_STATE_NORMAL {
			// A range in a split or merge takes no replica change (the
			// state machine refuses SetReplicas): look again once it ends.
			return desc, nil
		}
		members, learners, err := n.membership(ctx, rangeID)
		if err != nil {
			return nil, err
		}
		known := map[uint64]*kvpb.Replica{}
		for _, r := range desc.Replicas {
			known[r.ReplicaId] = r
		}
		if desc.Pending != nil {
			known[desc.Pending.ReplicaId] = desc.Pending
		}
		var want []*kvpb.Replica
		var unlisted []uint64
		for id := range members {
			if r := known[id]; r != nil {
				want = append(want, r)
			} else {
				unlisted = append(unlisted, id)
			}
		}
		if len(unlisted) > 0 && len(want) > 0 {
			// Voters no descriptor lists: a removal recorded in the
			// descriptor (RemoveReplica records it before Raft's change)
			// whose Raft change did not happen, or an add whose pending
			// entry was given up. Finish the removal.
			for _, id := range unlisted {
				if err := n.store.RemoveRaftReplica(ctx, rangeID, id); err != nil {
					return nil, fmt.Errorf("raft remove of replica %d, which the descriptor does not list: %w", id, err)
				}
				n.log.Info("raft member the descriptor does not list removed", "range", rangeID, "replica", id)
			}
			continue
		}
		if len(unlisted) > 0 {
			return nil, fmt.Errorf("range %d: no raft voter %v is in the descriptor", rangeID, unlisted)
		}
		sort.Slice(want, func(i, j int) bool { return want[i].ReplicaId < want[j].ReplicaId })
		pendingDone := desc.Pending == nil || clearPending
		if desc.Pending != nil {
			if _, added := members[desc.Pending.ReplicaId]; added {
				pendingDone = true
			}
		}
		if !pendingDone {
			return desc, nil // the Raft change is still to come
		}
		if p := desc.Pending; p != nil {
			if _, learner := learners[p.ReplicaId]; learner {
				// Given up before its promotion: out of Raft first, or it
				// would stay a member that no descriptor lists.
				if err := n.store.RemoveRaftReplica(ctx, rangeID, p.ReplicaId); err != nil {
					return nil, fmt.Errorf("raft remove of learner %d: %w", p.ReplicaId, err)
				}
				continue
			}
		}
		if desc.Pending == nil && sameReplicas(want, desc.Replicas) {
			return desc, nil
		}
		res, err := n.propose(ctx, rangeID, &kvpb.Command{Payload: &kvpb.Command_SetReplicas{
			SetReplicas: &kvpb.SetReplicas{ConfVer: desc.ConfVer, Replicas: want}}})
		var stale *EpochNotMatchError
		if errors.As(err, &stale) {
			continue // another change won the race; look again
		}
		if err != nil {
			return nil, err
		}
		return res.Range, nil
	}
	return nil, fmt.Errorf("%w: range %d kept changing while its replicas were reconciled", ErrUnavailable, rangeID)
}

func sameReplicas(a, b []*kvpb.Replica) bool {
	ids := func(rs []*kvpb.Replica) []uint64 {
		out := make([]uint64, len(rs))
		for i, r := range rs {
			out[i] = r.ReplicaId
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(ids(a), ids(b))
}

// pendingGrace is how long the background reconciler lets a pending replica
// wait for its Raft change before it drops it.
const pendingGrace = 30 * time.Second

// reconcileBatch bounds the ranges the replica reconciler looks at per
// tick; the rest wait for the next one.
const reconcileBatch = 256

// dirtyRanges is the set of ranges whose replicas the reconciler must look
// at: marked when a range's descriptor, leader or Raft membership changes
// here (kvstore.Store.OnDescriptorChange), and at start for every local
// replica.
type dirtyRanges struct {
	mu  sync.Mutex
	ids map[uint64]struct{}
}

func newDirtyRanges() *dirtyRanges { return &dirtyRanges{ids: map[uint64]struct{}{}} }

func (d *dirtyRanges) mark(rangeID uint64) {
	d.mu.Lock()
	d.ids[rangeID] = struct{}{}
	d.mu.Unlock()
}

// take removes and returns up to max ranges, in ascending order.
func (d *dirtyRanges) take(max int) []uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]uint64, 0, min(max, len(d.ids)))
	for id := range d.ids {
		out = append(out, id)
	}
	slices.Sort(out)
	out = out[:min(max, len(out))]
	for _, id := range out {
		delete(d.ids, id)
	}
	return out
}

// reconcileLoop makes each led range's descriptor match Raft's membership
// (reconcile), finishes or rolls back a merge left frozen for
// MergeResolveAfter, and drops a pending replica that Raft never added after
// pendingGrace. It looks only at ranges that changed (dirtyRanges): a
// descriptor, leader or membership change marks the range, and a range is
// looked at again every tick while it has work left (pending, frozen, or
// its reconcile failed). An idle range costs nothing: it is not read (a
// linearizable read would wake it from quiesce) and not listed.
func (n *Node) reconcileLoop() {
	t := time.NewTicker(n.cfg.ReconcileInterval)
	defer t.Stop()
	// Keyed by range and by the pending replica's ID or the frozen
	// descriptor's version, so that a new change is never mistaken for an
	// old one the loop did not see end.
	type seen struct {
		id    uint64
		since time.Time
	}
	pendingSince := map[uint64]seen{}
	frozenSince := map[uint64]seen{}
	age := func(m map[uint64]seen, rangeID, id uint64) time.Duration {
		if s, ok := m[rangeID]; ok && s.id == id {
			return time.Since(s.since)
		}
		m[rangeID] = seen{id: id, since: time.Now()}
		return 0
	}
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		var again []uint64
		for _, id := range n.replicaWork.take(reconcileBatch) {
			d, err := n.store.Descriptor(id)
			if err != nil || d == nil || !n.store.IsLeader(id) {
				// Gone, not initialised yet (its Init marks it), or led
				// elsewhere (a leader change here marks it).
				delete(frozenSince, id)
				delete(pendingSince, id)
				continue
			}
			work := false
			if d.State == kvpb.RangeState_RANGE_STATE_FROZEN {
				work = true
				if age(frozenSince, id, d.Ver) >= n.cfg.MergeResolveAfter {
					ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
					if _, err := n.resolveMerge(ctx, d); err != nil {
						n.log.Warn("resolve interrupted merge", "range", id, "err", err)
					}
					cancel()
				}
			} else {
				delete(frozenSince, id)
			}
			clear := false
			if p := d.Pending; p != nil {
				work = true
				clear = age(pendingSince, id, p.ReplicaId) > pendingGrace
			} else {
				delete(pendingSince, id)
			}
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			if _, err := n.reconcile(ctx, id, clear); err != nil {
				work = true
				n.log.Warn("reconcile replicas", "range", id, "err", err)
			}
			cancel()
			if work {
				again = append(again, id)
			}
		}
		for _, id := range again {
			n.replicaWork.mark(id)
		}
	}
}

// compactForAdd has the range's leader, and every other replica that can
// do so quickly, compact its log past the entry that made the range's
// current descriptor (kvstore.Store.CompactForAdd), so that the replica about
// to be added gets a snapshot of the range as it is, never a replay of its
// older history. A replica that is behind (restarting, waiting for a
// snapshot) cannot compact now, and cannot lead until it has caught up; if
// it then leads the new replica through an old log, the new replica stops
// rather than replay it (kvstore).
func (n *Node) compactForAdd(ctx context.Context, d *kvpb.RangeDescriptor) error {
	leaderReplica, _, _ := n.store.Leader(d.Id)
	for _, rep := range d.Replicas {
		if _, live := n.members.Store(rep.StoreId); !live {
			continue
		}
		isLeader := rep.ReplicaId == leaderReplica
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if !isLeader {
			rctx, cancel = context.WithTimeout(ctx, 3*time.Second)
		}
		got, err := n.compactReplica(rctx, rep.StoreId, d.Id)
		cancel()
		if err == nil && (got.Ver != d.Ver || got.ConfVer != d.ConfVer) {
			err = fmt.Errorf("%w: range %d changed during the add (replica %d is at version %d.%d, the add at %d.%d); retry",
				ErrUnavailable, d.Id, rep.ReplicaId, got.Ver, got.ConfVer, d.Ver, d.ConfVer)
		}
		if err != nil {
			if isLeader || leaderReplica == 0 {
				return fmt.Errorf("%w: replica %d of range %d on store %d could not compact its log before the add: %v; retry",
					ErrUnavailable, rep.ReplicaId, d.Id, rep.StoreId, err)
			}
			n.log.Info("replica behind: its log is not compacted before the add", "range", d.Id, "replica", rep.ReplicaId, "err", err)
		}
	}
	return nil
}

func (n *Node) compactReplica(ctx context.Context, storeID, rangeID uint64) (*kvpb.RangeDescriptor, error) {
	if storeID == n.store.ID() {
		return n.store.CompactForAdd(ctx, rangeID)
	}
	c, err := n.storeClient(storeID)
	if err != nil {
		return nil, err
	}
	resp, err := c.ReplicaDescriptor(ctx, &rangespb.ReplicaDescriptorRequest{RangeId: rangeID, Compact: true})
	if err != nil {
		return nil, FromStatus(err)
	}
	return resp.Range, nil
}
