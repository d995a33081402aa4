package kvstore

import (
	"context"
	"errors"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/lni/dragonboat/v4"
	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// splitApplied runs on the apply goroutine after a split committed: the
// child's boot record is on disk, so start the child on another goroutine
// (NodeHost must never be called from inside Update).
func (s *Store) splitApplied(child *kvpb.RangeDescriptor) {
	if s.failpoint(FailSplitChildBeforeStart) {
		return
	}
	s.goBackground(func(ctx context.Context) {
		boot, ok, err := s.engine.bootRecord(child.Id)
		if err != nil || !ok {
			s.log.Error("split child has no boot record", "range", child.Id, "err", err)
			return
		}
		if err := s.start(boot); err != nil && ctx.Err() == nil {
			s.log.Error("start split child", "range", child.Id, "err", err)
			return
		}
		s.log.Info("split child started", "range", child.Id, "start", string(child.Start))
	})
}

// compactNewRange compacts a split child's Raft log as soon as it starts.
// Dragonboat bootstraps a shard with config entries at indexes 1..N; a
// replica added later would replay them onto an empty state machine and miss
// the data the child inherited from its parent. Compacting first makes every
// later replica start from a snapshot. The boot record keeps asking for it
// until it succeeded, so a crash in between compacts on restart.
func (s *Store) compactNewRange(ctx context.Context, boot *kvpb.BootRecord) {
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.CompactLog(cctx, boot.RangeId)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		// The replica is gone (removed, or merged away and retired) before
		// its log was compacted: there is nothing left to compact.
		if _, booted, berr := get(s.engine.db, localBootKey(boot.RangeId)); errors.Is(err, ErrRangeNotFound) || berr == nil && !booted {
			s.log.Info("a new range's replica is gone before its log was compacted", "range", boot.RangeId, "err", err)
			return
		}
		if attempt%20 == 19 {
			s.log.Warn("compacting a new range's log keeps failing", "range", boot.RangeId, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	done := proto.CloneOf(boot)
	done.CompactOnStart = false
	if _, ok, _ := get(s.engine.db, localBootKey(boot.RangeId)); ok {
		if err := s.engine.putBoot(done); err != nil {
			s.log.Error("rewrite boot record", "range", boot.RangeId, "err", err)
		}
	}
}

// mergeApplied runs after a local left replica absorbed range rightID: the
// right replica here is retired (its data stays: it is the left's now).
func (s *Store) mergeApplied(rightID uint64) {
	s.goBackground(func(ctx context.Context) { s.retire(ctx, rightID) })
}

// snapshotInstalled retires local replicas whose span the installed
// snapshot's range now covers (it merged them while this store was behind).
func (s *Store) snapshotInstalled(d *kvpb.RangeDescriptor) {
	s.mu.RLock()
	var covered []uint64
	for id, r := range s.replicas {
		if id == d.Id {
			continue
		}
		if rd := r.Descriptor(); rd != nil && rd.Keyspace == d.Keyspace && SpanCovers(d, rd) {
			covered = append(covered, id)
		}
	}
	s.mu.RUnlock()
	for _, id := range covered {
		s.goBackground(func(ctx context.Context) { s.retire(ctx, id) })
	}
}

// SpanCovers reports whether outer's span holds all of inner's.
func SpanCovers(outer, inner *kvpb.RangeDescriptor) bool {
	if string(inner.Start) < string(outer.Start) {
		return false
	}
	if len(outer.End) == 0 {
		return true
	}
	return len(inner.End) > 0 && string(inner.End) <= string(outer.End)
}

// retire stops a local replica of a range merged into its left neighbour and
// deletes its Raft state and metadata, keeping the data span.
func (s *Store) retire(ctx context.Context, rangeID uint64) {
	s.mu.RLock()
	r := s.replicas[rangeID]
	s.mu.RUnlock()
	if r == nil {
		return
	}
	if err := s.nh.StopReplica(rangeID, r.replicaID); err != nil && !errors.Is(err, dragonboat.ErrShardNotFound) {
		s.log.Error("stop merged replica", "range", rangeID, "err", err)
		return
	}
	s.mu.Lock()
	delete(s.replicas, rangeID)
	s.loads.drop(rangeID)
	delete(s.leaders, rangeID)
	s.mu.Unlock()
	// Its span is the left range's now (the left replica here has it, or
	// the snapshot that retires it was admitted over it).
	s.spans.drop(rangeID)
	if err := s.removeRaftData(ctx, rangeID, r.replicaID); err != nil {
		s.log.Warn("remove merged replica's raft data", "range", rangeID, "err", err)
	}
	tomb, _ := proto.Marshal(&kvpb.Tombstone{RangeId: rangeID, ReplicaId: r.replicaID})
	b := s.engine.db.NewBatch()
	defer b.Close()
	lo, hi := metaSpan(rangeID)
	_ = b.DeleteRange(lo, hi, nil)
	_ = b.Delete(localBootKey(rangeID), nil)
	_ = b.Set(localTombKey(rangeID), tomb, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		s.log.Error("retire merged range", "range", rangeID, "err", err)
		return
	}
	s.log.Info("merged range retired", "range", rangeID)
	s.descriptorChanged(rangeID, nil)
}

func (s *Store) removeRaftData(ctx context.Context, rangeID, replicaID uint64) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		err := s.nh.SyncRemoveData(ctx, rangeID, replicaID)
		if err == nil || !errors.Is(err, dragonboat.ErrShardNotStopped) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Tombstoned reports whether a range was merged away on this store.
func (s *Store) Tombstoned(rangeID uint64) bool {
	_, ok, _ := get(s.engine.db, localTombKey(rangeID))
	return ok
}

// LogCompacted reports whether the local replica of a range has no bootstrap
// log left that a joining replica could replay onto empty state: false only
// for a split child whose first compaction has not finished.
func (s *Store) LogCompacted(rangeID uint64) bool {
	boot, ok, err := s.engine.bootRecord(rangeID)
	return err == nil && ok && !boot.CompactOnStart
}

// HasBootRecord reports whether the store has a boot record for a range: it
// runs the range's replica, or is about to (a split applied here writes the
// child's record, and a store goroutine starts the child right after).
func (s *Store) HasBootRecord(rangeID uint64) bool {
	_, ok, err := get(s.engine.db, localBootKey(rangeID))
	return err == nil && ok
}
