package ranges

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// Split and merge orchestration. The protocols and their crash cases are in
// docs/split-merge.md; the rules every replica applies are in
// kvstore/splitmerge.go.

// Failpoint steps a test can stop an operation at (NodeConfig.Failpoint).
const (
	FailAfterFreeze = "merge-after-freeze"
	FailAfterWait   = "merge-after-wait"
	FailAfterCommit = "merge-after-commit"
	FailAfterSplit  = "split-after-propose"
)

func (n *Node) failpoint(step string) error {
	if n.cfg.Failpoint != nil {
		return n.cfg.Failpoint(step)
	}
	return nil
}

// Split splits a range at key and waits until the new right range serves.
func (n *Node) Split(ctx context.Context, rangeID uint64, key []byte) (left, right *kvpb.RangeDescriptor, err error) {
	desc, err := n.router.Descriptor(ctx, rangeID)
	if err != nil {
		return nil, nil, err
	}
	if len(key) == 0 || string(key) == string(desc.Start) || !kvstore.ContainsKey(desc, key) {
		return nil, nil, fmt.Errorf("%w: split key %q must lie strictly inside range %d [%q, %q)", ErrBadRequest, key, rangeID, desc.Start, desc.End)
	}
	// A split never cuts a unit of the keyspace's coprocessor (an inbox, a
	// dist subscription's routes): the key moves to the unit's start, as the
	// balancer's split keys do (kvstore.Store.SplitKey).
	if aligned := n.store.AlignSplitKey(desc.Keyspace, key); string(aligned) != string(key) {
		if string(aligned) <= string(desc.Start) {
			return nil, nil, fmt.Errorf("%w: split key %q lies in a unit of keyspace %s that starts at %q, at or before the start of range %d: the range cannot be split there",
				ErrBadRequest, key, kvstore.KeyspaceName(desc.Keyspace), aligned, rangeID)
		}
		n.log.Info("split key aligned to a unit boundary", "range", rangeID, "key", string(key), "aligned", string(aligned))
		key = aligned
	}
	if desc.State != kvpb.RangeState_RANGE_STATE_NORMAL || desc.Pending != nil {
		return nil, nil, &RefusedError{Status: kvpb.Status_STATUS_SPLIT_MERGE_REFUSED,
			Message: fmt.Sprintf("range %d is changing (%s); try again", rangeID, desc.State)}
	}
	alloc, err := n.router.ProposeTo(ctx, kvstore.IDAllocatorRange, &kvpb.Command{RequestId: NewRequestID(),
		Payload: &kvpb.Command_AllocateIds{AllocateIds: &kvpb.AllocateIDs{Count: 1}}})
	if err != nil {
		return nil, nil, fmt.Errorf("allocate a range ID: %w", err)
	}
	res, err := n.router.ProposeTo(ctx, rangeID, &kvpb.Command{RequestId: NewRequestID(), Ver: desc.Ver,
		Payload: &kvpb.Command_Split{Split: &kvpb.Split{Key: key, NewRangeId: alloc.Allocated}}})
	if err != nil {
		var stale *EpochNotMatchError
		if errors.As(err, &stale) {
			return nil, nil, &RefusedError{Status: kvpb.Status_STATUS_SPLIT_MERGE_REFUSED,
				Message: fmt.Sprintf("range %d changed while the split was planned: %s", rangeID, stale.Message)}
		}
		return nil, nil, err
	}
	if err := n.failpoint(FailAfterSplit); err != nil {
		return nil, nil, err
	}
	n.table.Update(&rangespb.RangeInfo{Range: res.Range})
	n.table.Update(&rangespb.RangeInfo{Range: res.SplitChild})
	// The child serves once its replicas started and elected a leader.
	right, err = n.waitServing(ctx, res.SplitChild.Id)
	if err != nil {
		return nil, nil, err
	}
	n.log.Info("range split", "range", rangeID, "key", string(key), "child", res.SplitChild.Id)
	return res.Range, right, nil
}

func (n *Node) waitServing(ctx context.Context, rangeID uint64) (*kvpb.RangeDescriptor, error) {
	for {
		d, err := n.router.Descriptor(ctx, rangeID)
		if err == nil {
			return d, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("range %d did not start serving: %w", rangeID, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Merge merges a range with its right neighbour: freeze the right range,
// wait until every replica of it applied the freeze, commit on the left. On
// any failure before the commit is known, the merge is rolled back: the left
// range is fenced so the commit can never apply, then the right unfrozen.
func (n *Node) Merge(ctx context.Context, leftID uint64) (*kvpb.RangeDescriptor, error) {
	left, err := n.router.Descriptor(ctx, leftID)
	if err != nil {
		return nil, err
	}
	if len(left.End) == 0 {
		return nil, fmt.Errorf("%w: range %d is the last of keyspace %s: it has no right neighbour", ErrBadRequest, leftID, kvstore.KeyspaceName(left.Keyspace))
	}
	_ = n.Refresh(ctx)
	route := n.table.Lookup(left.Keyspace, left.End)
	if route == nil {
		return nil, fmt.Errorf("%w: no range starts at %q", ErrUnavailable, left.End)
	}
	right, err := n.router.Descriptor(ctx, route.Desc.Id)
	if err != nil {
		return nil, err
	}
	switch {
	case right.Keyspace != left.Keyspace || string(right.Start) != string(left.End):
		return nil, fmt.Errorf("%w: ranges %d and %d are not adjacent", ErrBadRequest, leftID, right.Id)
	case !slices.Equal(storeIDs(left), storeIDs(right)):
		return nil, fmt.Errorf("%w: range %d is on stores %v and range %d on %v: align their replicas first",
			ErrBadRequest, leftID, storeIDs(left), right.Id, storeIDs(right))
	case left.State != kvpb.RangeState_RANGE_STATE_NORMAL || right.State != kvpb.RangeState_RANGE_STATE_NORMAL || left.Pending != nil || right.Pending != nil:
		return nil, &RefusedError{Status: kvpb.Status_STATUS_SPLIT_MERGE_REFUSED,
			Message: fmt.Sprintf("range %d or %d is changing; try again", leftID, right.Id)}
	}
	res, err := n.router.ProposeTo(ctx, right.Id, &kvpb.Command{RequestId: NewRequestID(), Ver: right.Ver,
		Payload: &kvpb.Command_PrepareMerge{PrepareMerge: &kvpb.PrepareMerge{Intent: &kvpb.MergeIntent{LeftId: leftID, LeftVer: left.Ver}}}})
	if err != nil {
		var stale *EpochNotMatchError
		if errors.As(err, &stale) {
			return nil, &RefusedError{Status: kvpb.Status_STATUS_SPLIT_MERGE_REFUSED,
				Message: fmt.Sprintf("range %d changed while the merge was planned: %s", right.Id, stale.Message)}
		}
		// The freeze may have applied: make sure it is undone.
		return nil, n.rollBack(ctx, err, right.Id)
	}
	frozen := res.Range
	if err := n.failpoint(FailAfterFreeze); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = n.waitApplied(wctx, frozen)
	cancel()
	if err != nil {
		return nil, n.rollBack(ctx, err, right.Id)
	}
	if err := n.failpoint(FailAfterWait); err != nil {
		return nil, err
	}
	res, err = n.router.ProposeTo(ctx, leftID, &kvpb.Command{RequestId: NewRequestID(), Ver: left.Ver,
		Payload: &kvpb.Command_CommitMerge{CommitMerge: &kvpb.CommitMerge{Right: frozen}}})
	if err != nil {
		merged, rbErr := n.resolveMerge(ctx, frozen)
		if merged != nil {
			return merged, nil
		}
		if rbErr != nil {
			return nil, fmt.Errorf("merge commit failed (%v); rollback failed too: %w", err, rbErr)
		}
		return nil, fmt.Errorf("merge commit failed and was rolled back: %w", err)
	}
	if err := n.failpoint(FailAfterCommit); err != nil {
		return nil, err
	}
	n.table.Update(&rangespb.RangeInfo{Range: res.Range})
	n.log.Info("ranges merged", "range", leftID, "right", right.Id)
	return res.Range, nil
}

// rollBack undoes a merge that did not commit, and returns cause.
func (n *Node) rollBack(ctx context.Context, cause error, rightID uint64) error {
	frozen, err := n.router.Descriptor(ctx, rightID)
	if err != nil {
		var stale *EpochNotMatchError
		if !errors.As(err, &stale) || stale.Current == nil {
			return fmt.Errorf("merge failed (%v) and range %d could not be read to roll it back: %w", cause, rightID, err)
		}
		frozen = stale.Current
	}
	if frozen.State != kvpb.RangeState_RANGE_STATE_FROZEN {
		return fmt.Errorf("merge failed: %w", cause)
	}
	if merged, err := n.resolveMerge(ctx, frozen); merged != nil {
		return nil
	} else if err != nil {
		return fmt.Errorf("merge failed (%v); rollback failed too: %w", cause, err)
	}
	return fmt.Errorf("merge failed and was rolled back: %w", cause)
}

func storeIDs(d *kvpb.RangeDescriptor) []uint64 {
	out := make([]uint64, 0, len(d.Replicas))
	for _, r := range d.Replicas {
		out = append(out, r.StoreId)
	}
	slices.Sort(out)
	return out
}

// waitApplied waits until every replica of the frozen range holds exactly
// its descriptor (version and conf version: the commit on the left range
// checks the whole descriptor on each store). A replica past it means the
// range changed under the merge, which then cannot commit.
func (n *Node) waitApplied(ctx context.Context, d *kvpb.RangeDescriptor) error {
	for _, rep := range d.Replicas {
		for {
			got, _, err := n.replicaDescriptor(ctx, rep.StoreId, d.Id)
			if err == nil && got.Ver == d.Ver && got.ConfVer == d.ConfVer {
				break
			}
			if err == nil && (got.Ver > d.Ver || got.Ver == d.Ver && got.ConfVer != d.ConfVer) {
				return fmt.Errorf("%w: replica %d of range %d on store %d is at version %d.%d, not the frozen %d.%d",
					ErrUnavailable, rep.ReplicaId, d.Id, rep.StoreId, got.Ver, got.ConfVer, d.Ver, d.ConfVer)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w: replica %d of range %d on store %d did not apply version %d (%v)",
					ErrUnavailable, rep.ReplicaId, d.Id, rep.StoreId, d.Ver, err)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

func (n *Node) replicaDescriptor(ctx context.Context, storeID, rangeID uint64) (*kvpb.RangeDescriptor, bool, error) {
	if storeID == n.store.ID() {
		d, err := n.store.Descriptor(rangeID)
		if err == nil && d == nil {
			err = kvstore.ErrNotReady
		}
		return d, n.store.LogCompacted(rangeID), err
	}
	c, err := n.storeClient(storeID)
	if err != nil {
		return nil, false, err
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := c.ReplicaDescriptor(cctx, &rangespb.ReplicaDescriptorRequest{RangeId: rangeID})
	if err != nil {
		return nil, false, err
	}
	return resp.Range, resp.LogCompacted, nil
}

// resolveMerge decides the fate of a frozen right range. It reads the left
// range linearizably: if the left covers the right, the merge committed
// (returns the left). If the left is still at the version the merge was
// planned at, it fences it (ver++) so the commit can never apply. Once the
// left is past that version without covering the right, the merge can never
// commit, and the right is unfrozen.
func (n *Node) resolveMerge(ctx context.Context, frozen *kvpb.RangeDescriptor) (*kvpb.RangeDescriptor, error) {
	intent := frozen.Merge
	if intent == nil {
		return nil, fmt.Errorf("range %d is frozen without a merge intent", frozen.Id)
	}
	for attempt := 0; attempt < 5; attempt++ {
		left, err := n.router.Descriptor(ctx, intent.LeftId)
		if err != nil {
			if gone, gerr := n.leftMergedAway(ctx, frozen); gerr == nil && gone {
				// The left range was merged into its own left neighbour
				// while this merge was pending: it was frozen first, so this
				// merge's commit can never apply.
				left = &kvpb.RangeDescriptor{Id: intent.LeftId, Ver: intent.LeftVer + 1}
			} else {
				return nil, fmt.Errorf("read left range %d: %w", intent.LeftId, err)
			}
		}
		if left.Keyspace == frozen.Keyspace && kvstore.SpanCovers(left, frozen) {
			return left, nil
		}
		if left.Ver == intent.LeftVer {
			_, err := n.router.ProposeTo(ctx, left.Id, &kvpb.Command{RequestId: NewRequestID(), Ver: left.Ver,
				Payload: &kvpb.Command_FenceMerge{FenceMerge: &kvpb.FenceMerge{RightId: frozen.Id}}})
			var stale *EpochNotMatchError
			if err != nil && !errors.As(err, &stale) {
				return nil, fmt.Errorf("fence left range %d: %w", left.Id, err)
			}
			continue // read the left again: fenced, or merged just before the fence
		}
		_, err = n.router.ProposeTo(ctx, frozen.Id, &kvpb.Command{RequestId: NewRequestID(), Ver: frozen.Ver,
			Payload: &kvpb.Command_Unfreeze{Unfreeze: &kvpb.Unfreeze{}}})
		var stale *EpochNotMatchError
		if err != nil && !errors.As(err, &stale) {
			return nil, fmt.Errorf("unfreeze range %d: %w", frozen.Id, err)
		}
		n.log.Info("merge rolled back", "range", intent.LeftId, "right", frozen.Id)
		return nil, nil
	}
	return nil, fmt.Errorf("%w: range %d kept changing while its merge was resolved", ErrUnavailable, intent.LeftId)
}

// leftMergedAway reports whether the range ending where the frozen range
// starts is no longer the merge's left range.
func (n *Node) leftMergedAway(ctx context.Context, frozen *kvpb.RangeDescriptor) (bool, error) {
	_ = n.Refresh(ctx)
	for _, r := range n.table.All() {
		if r.Desc.Keyspace != frozen.Keyspace || string(r.Desc.End) != string(frozen.Start) || r.Desc.Id == frozen.Merge.GetLeftId() {
			continue
		}
		d, err := n.router.Descriptor(ctx, r.Desc.Id)
		if err != nil {
			return false, err
		}
		return string(d.End) == string(frozen.Start) && d.State == kvpb.RangeState_RANGE_STATE_NORMAL, nil
	}
	return false, nil
}

// ParseKeyspace maps "kv", "dist", "inbox" or "retain" to its keyspace.
func ParseKeyspace(s string) (kvpb.Keyspace, error) {
	for _, fr := range FirstRanges {
		if kvstore.KeyspaceName(fr.Keyspace) == s {
			return fr.Keyspace, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown keyspace %q (want kv, dist, inbox or retain)", ErrBadRequest, s)
}

// mergeResolveAfter is how long a range may stay frozen before the leader of
// it resolves the merge itself (its orchestrator died).
const mergeResolveAfter = 10 * time.Second
