package kvstore

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/kvstore/bugzoo"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// IDAllocatorRange is the range that hands out range IDs. It starts the kv
// keyspace, keeps its ID when it splits, and can never be the right side of a
// merge, so it exists for the life of the cluster.
const IDAllocatorRange = 1

// FirstAllocatedRangeID is the first ID the allocator hands out; lower IDs
// are the bootstrap ranges'.
const FirstAllocatedRangeID = 100

func refusedSplitMerge(d *kvpb.RangeDescriptor, format string, args ...any) *kvpb.CommandResult {
	return &kvpb.CommandResult{Status: kvpb.Status_STATUS_SPLIT_MERGE_REFUSED, Range: d, Message: fmt.Sprintf(format, args...)}
}

// checkNormal refuses a split or merge step on a range that is not at the
// expected version, not normal, or changing replicas.
func (a *applier) checkNormal(ver uint64) *kvpb.CommandResult {
	d := a.desc
	if d == nil {
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_RANGE_NOT_READY, Message: "range has no descriptor yet"}
	}
	if ver != d.Ver {
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_EPOCH_NOT_MATCH, Range: d,
			Message: fmt.Sprintf("range %d is at version %d, command has %d", d.Id, d.Ver, ver)}
	}
	if d.State != kvpb.RangeState_RANGE_STATE_NORMAL {
		return refusedSplitMerge(d, "range %d is %s", d.Id, stateName(d.State))
	}
	if d.Pending != nil {
		return refusedSplitMerge(d, "range %d is adding a replica on store %d", d.Id, d.Pending.StoreId)
	}
	return nil
}

func stateName(s kvpb.RangeState) string {
	switch s {
	case kvpb.RangeState_RANGE_STATE_FROZEN:
		return "frozen for a merge"
	case kvpb.RangeState_RANGE_STATE_SPLITTING:
		return "splitting"
	case kvpb.RangeState_RANGE_STATE_MERGED:
		return "merged"
	case kvpb.RangeState_RANGE_STATE_REMOVED:
		return "removed"
	}
	return "normal"
}

// applySplit shrinks the range to [start, key) and creates the child
// [key, end) with the same replicas and the new version. The child's
// descriptor and this replica's boot record for it are written in the same
// synced batch; the store starts the child after the batch commits.
func (a *applier) applySplit(ver uint64, p *kvpb.Split) (*kvpb.CommandResult, error) {
	if res := a.checkNormal(ver); res != nil {
		return res, nil
	}
	d := a.desc
	if len(p.Key) == 0 || bytes.Equal(p.Key, d.Start) || !ContainsKey(d, p.Key) {
		return refusedSplitMerge(d, "split key %q must lie strictly inside range %d [%q, %q)", p.Key, d.Id, d.Start, d.End), nil
	}
	if len(p.Key) > MaxKeySize {
		return badRequest("split key too long"), nil
	}
	if p.NewRangeId == 0 || p.NewRangeId == d.Id {
		return badRequest("split needs a new range ID"), nil
	}
	if a.beforeSplit != nil {
		a.beforeSplit()
	}
	// Every check above reads the range's replicated state, so it decides
	// the same on every replica. What follows looks at this store's own
	// records of the child, which differ between stores: a mismatch must
	// never make this replica refuse a split the others apply (its span
	// would stay wider than theirs for ever).
	if _, exists, err := get(a.batch, metaKey(p.NewRangeId, metaDescriptor)); err != nil {
		return nil, err
	} else if exists {
		// The child was installed here before this replica of its parent
		// applied the split: the parent's replay may have written older
		// values over the child's keys. The store's span index keeps a
		// child's snapshot out while its parent's replica here still
		// overlaps it, so this is a broken invariant: stop.
		return nil, fmt.Errorf("%w: split of range %d at %q creates range %d, which already has a descriptor on this store",
			errSplitChildExists, d.Id, p.Key, p.NewRangeId)
	}
	parent := proto.CloneOf(d)
	parent.End = p.Key
	parent.Ver++
	child := &kvpb.RangeDescriptor{
		Id: p.NewRangeId, Keyspace: d.Keyspace, Start: p.Key, End: d.End, Ver: parent.Ver, ConfVer: d.ConfVer,
		Replicas: d.Replicas, NextReplicaId: d.NextReplicaId,
	}
	if _, found, err := get(a.batch, localBootKey(child.Id)); err != nil {
		return nil, err
	} else if found {
		// A replica of the child was started here already (added to the
		// child while this parent replica lagged behind the split) and
		// waits for its snapshot, which the span index holds back until
		// now. The child's records here are that replica's: the parent
		// shrinks as on every replica, and leaves them alone.
		if _, err := a.size.split(parent, child); err != nil {
			return nil, err
		}
		a.setDesc(parent)
		a.sync = true
		return &kvpb.CommandResult{Range: parent, SplitChild: child}, nil
	}
	childDesc, err := proto.Marshal(child)
	if err != nil {
		return nil, err
	}
	if err := a.batch.Set(metaKey(child.Id, metaDescriptor), childDesc, nil); err != nil {
		return nil, err
	}
	childSize, err := a.size.split(parent, child)
	if err != nil {
		return nil, err
	}
	if err := a.batch.Set(metaKey(child.Id, metaBytes), u64(childSize), nil); err != nil {
		return nil, err
	}
	// The child judges the dedupe window of the records it inherits from the
	// parent's mark: a record the parent's sweeps took as expired on some
	// replicas must be expired for the child on all of them.
	if err := a.batch.Set(metaKey(child.Id, metaRangeTime), u64(uint64(a.rangeMs)), nil); err != nil {
		return nil, err
	}
	boot := &kvpb.BootRecord{RangeId: child.Id, ReplicaId: a.replicaID, InitialMembers: map[uint64]string{}, CompactOnStart: !bugzoo.SkipChildCompaction}
	for _, r := range child.Replicas {
		boot.InitialMembers[r.ReplicaId] = r.RaftAddr
	}
	bootBytes, err := proto.Marshal(boot)
	if err != nil {
		return nil, err
	}
	if err := a.batch.Set(localBootKey(child.Id), bootBytes, nil); err != nil {
		return nil, err
	}
	a.setDesc(parent)
	a.splits = append(a.splits, child)
	a.sync = true
	return &kvpb.CommandResult{Range: parent, SplitChild: child}, nil
}

// applyPrepareMerge freezes the right range of a merge.
func (a *applier) applyPrepareMerge(ver uint64, p *kvpb.PrepareMerge) *kvpb.CommandResult {
	if res := a.checkNormal(ver); res != nil {
		return res
	}
	if p.Intent == nil || p.Intent.LeftId == 0 {
		return badRequest("prepare merge without its left range")
	}
	n := proto.CloneOf(a.desc)
	n.State = kvpb.RangeState_RANGE_STATE_FROZEN
	n.Ver++
	n.Merge = p.Intent
	a.setDesc(n)
	// Synced: once the merge saw a replica frozen, a crash must not take
	// the freeze back (the left range's commit checks it on this store,
	// and a replay could come after the commit's).
	a.sync = true
	return &kvpb.CommandResult{Range: n}
}

func storeSet(d *kvpb.RangeDescriptor) []uint64 {
	out := make([]uint64, 0, len(d.Replicas))
	for _, r := range d.Replicas {
		out = append(out, r.StoreId)
	}
	slices.Sort(out)
	return out
}

// applyCommitMerge extends the left range over its frozen right neighbour.
// The local replica of the right range must be frozen with exactly the
// descriptor the command carries: the merge protocol makes every right
// replica apply the freeze before the commit is proposed, and keeps it until
// the left replica on the same store has applied the commit.
func (a *applier) applyCommitMerge(ver uint64, p *kvpb.CommitMerge) (*kvpb.CommandResult, error) {
	if res := a.checkNormal(ver); res != nil {
		return res, nil
	}
	d, r := a.desc, p.Right
	if r == nil {
		return badRequest("commit merge without the right range"), nil
	}
	switch {
	case r.Keyspace != d.Keyspace:
		return refusedSplitMerge(d, "ranges %d and %d are in different keyspaces", d.Id, r.Id), nil
	case len(d.End) == 0 || !bytes.Equal(d.End, r.Start):
		return refusedSplitMerge(d, "ranges %d and %d are not adjacent", d.Id, r.Id), nil
	case r.State != kvpb.RangeState_RANGE_STATE_FROZEN || r.Merge.GetLeftId() != d.Id || r.Merge.GetLeftVer() != d.Ver:
		return refusedSplitMerge(d, "range %d is not frozen for a merge into range %d at version %d", r.Id, d.Id, d.Ver), nil
	case !slices.Equal(storeSet(d), storeSet(r)):
		return refusedSplitMerge(d, "ranges %d and %d have different replicas", d.Id, r.Id), nil
	}
	localBytes, found, err := get(a.batch, metaKey(r.Id, metaDescriptor))
	if err != nil {
		return nil, err
	}
	local := &kvpb.RangeDescriptor{}
	if !found || proto.Unmarshal(localBytes, local) != nil || !proto.Equal(local, r) {
		// Every check above reads replicated state and decides alike on
		// every replica; this one reads the right range's replica on this
		// store. The merge commits only after every right replica applied
		// the (synced) freeze, and a frozen range takes no replica change
		// (applySetReplicas), so the local right replica holds exactly
		// this descriptor until this commit retires it. Refusing here
		// would merge on the other stores and not on this one: stop.
		return nil, fmt.Errorf("%w: range %d commits the merge of range %d at version %d.%d, but the replica of range %d here has %v",
			errMergeRightMismatch, d.Id, r.Id, r.Ver, r.ConfVer, r.Id, describeLocal(found, local))
	}
	// The left takes the newer of the two marks, for the right's records
	// (see applySplit); the frozen right's mark no longer moves.
	if v, found, err := get(a.batch, metaKey(r.Id, metaRangeTime)); err != nil {
		return nil, err
	} else if found && len(v) == 8 {
		a.rangeMs = max(a.rangeMs, int64(decodeU64(v)))
	}
	if err := a.size.absorb(r); err != nil {
		return nil, err
	}
	n := proto.CloneOf(d)
	n.End = r.End
	n.Ver = max(d.Ver, r.Ver) + 1
	n.NextReplicaId = max(d.NextReplicaId, r.NextReplicaId)
	var localReplica uint64
	for _, rep := range r.Replicas {
		if rep.StoreId == a.storeID() {
			localReplica = rep.ReplicaId
		}
	}
	tomb, err := proto.Marshal(&kvpb.Tombstone{RangeId: r.Id, ReplicaId: localReplica})
	if err != nil {
		return nil, err
	}
	if err := a.batch.Set(localTombKey(r.Id), tomb, nil); err != nil {
		return nil, err
	}
	// The right range's replica must not restart: its data is the left's now.
	if err := a.batch.Delete(localBootKey(r.Id), nil); err != nil {
		return nil, err
	}
	a.setDesc(n)
	a.merged = append(a.merged, r.Id)
	a.sync = true
	return &kvpb.CommandResult{Range: n}, nil
}

// errSplitChildExists and errMergeRightMismatch stop a replica (fail-stop)
// whose store's records contradict a committed split or merge: refusing it
// on one replica while the others apply it would diverge the range.
var (
	errSplitChildExists   = errors.New("split child already exists on this store: refusing to diverge")
	errMergeRightMismatch = errors.New("the right range's replica on this store is not frozen for this merge: refusing to diverge")
)

func describeLocal(found bool, d *kvpb.RangeDescriptor) string {
	if !found {
		return "no descriptor"
	}
	return fmt.Sprintf("version %d.%d (%s)", d.Ver, d.ConfVer, stateName(d.State))
}

// storeID returns the ID of the store this replica runs on, from the
// descriptor's replica list.
func (a *applier) storeID() uint64 {
	for _, r := range a.desc.Replicas {
		if r.ReplicaId == a.replicaID {
			return r.StoreId
		}
	}
	return 0
}

// applyFence bumps the left range's version so that a merge planned at the
// old version can never commit.
func (a *applier) applyFence(ver uint64) *kvpb.CommandResult {
	if a.desc == nil {
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_RANGE_NOT_READY}
	}
	if ver != a.desc.Ver {
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_EPOCH_NOT_MATCH, Range: a.desc,
			Message: fmt.Sprintf("range %d is at version %d, fence has %d", a.desc.Id, a.desc.Ver, ver)}
	}
	n := proto.CloneOf(a.desc)
	n.Ver++
	a.setDesc(n)
	return &kvpb.CommandResult{Range: n}
}

// applyUnfreeze returns a frozen range to normal.
func (a *applier) applyUnfreeze(ver uint64) *kvpb.CommandResult {
	d := a.desc
	if d == nil {
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_RANGE_NOT_READY}
	}
	if ver != d.Ver {
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_EPOCH_NOT_MATCH, Range: d,
			Message: fmt.Sprintf("range %d is at version %d, unfreeze has %d", d.Id, d.Ver, ver)}
	}
	if d.State != kvpb.RangeState_RANGE_STATE_FROZEN {
		return refusedSplitMerge(d, "range %d is not frozen", d.Id)
	}
	n := proto.CloneOf(d)
	n.State = kvpb.RangeState_RANGE_STATE_NORMAL
	n.Merge = nil
	n.Ver++
	a.setDesc(n)
	return &kvpb.CommandResult{Range: n}
}

func (a *applier) applyAllocate(p *kvpb.AllocateIDs) (*kvpb.CommandResult, error) {
	if a.rangeID != IDAllocatorRange {
		return badRequest(fmt.Sprintf("range %d does not allocate IDs", a.rangeID)), nil
	}
	if p.Count == 0 || p.Count > 1000 {
		return badRequest("allocate 1 to 1000 IDs"), nil
	}
	next := uint64(FirstAllocatedRangeID)
	if v, ok, err := get(a.batch, metaKey(a.rangeID, metaNextID)); err != nil {
		return nil, err
	} else if ok {
		next = decodeU64(v)
	}
	if err := a.batch.Set(metaKey(a.rangeID, metaNextID), u64(next+uint64(p.Count)), nil); err != nil {
		return nil, err
	}
	return &kvpb.CommandResult{Range: a.desc, Allocated: next}, nil
}
