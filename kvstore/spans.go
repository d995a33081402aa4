package kvstore

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// The store's span index. Every range's data keys share one Pebble
// ('d' + keyspace + user key), so two local replicas whose spans overlap
// write the same keys: a parent replica that lags behind a split would
// replay its older writes over the keys of a child replica installed from a
// newer snapshot, and destroying a replica with a stale, wider span would
// delete a neighbour's keys. The index holds, for each local replica, the
// span it holds or is about to hold, and every step that takes or gives up
// a span checks it under spanIndex.mu:
//
//   - StartReplica with the descriptor the caller starts the replica for
//     refuses while another local replica overlaps that span, and claims it;
//   - a snapshot waits (it cannot refuse: Dragonboat would stop the
//     process) until no other local replica overlaps its span, except
//     replicas it covers at a lower version, which its range merged away
//     and which the store retires once it is installed;
//   - DestroyReplica deletes only the parts of its span that no other local
//     replica holds.
//
// A replica's entry follows its descriptor (Open, every apply that changes
// it, a snapshot) and goes when the replica is destroyed or retired.

// ErrSpanOverlap: another local replica holds part of the span.
var ErrSpanOverlap = errors.New("another replica on this store holds part of the span")

type spanIndex struct {
	mu sync.Mutex
	// held maps a range ID to the descriptor whose span its local replica
	// holds or has claimed.
	held map[uint64]*kvpb.RangeDescriptor
}

// spansOverlap reports whether two ranges of one keyspace share a key.
func spansOverlap(a, b *kvpb.RangeDescriptor) bool {
	if a.Keyspace != b.Keyspace {
		return false
	}
	aBeforeB := len(a.End) > 0 && bytes.Compare(a.End, b.Start) <= 0
	bBeforeA := len(b.End) > 0 && bytes.Compare(b.End, a.Start) <= 0
	return !aBeforeB && !bBeforeA
}

// overlapping returns the entries of other ranges that overlap d. The
// caller holds mu.
func (x *spanIndex) overlapping(d *kvpb.RangeDescriptor) []*kvpb.RangeDescriptor {
	var out []*kvpb.RangeDescriptor
	for id, h := range x.held {
		if id != d.Id && spansOverlap(h, d) {
			out = append(out, h)
		}
	}
	return out
}

// set records the span a local replica holds now.
func (x *spanIndex) set(d *kvpb.RangeDescriptor) {
	x.mu.Lock()
	if x.held == nil {
		x.held = map[uint64]*kvpb.RangeDescriptor{}
	}
	x.held[d.Id] = d
	x.mu.Unlock()
}

func (x *spanIndex) drop(rangeID uint64) {
	x.mu.Lock()
	delete(x.held, rangeID)
	x.mu.Unlock()
}

// claim checks that no other local replica overlaps d's span and, if the
// range has no entry yet, records d for it. It reports whether it added the
// entry (to be dropped if the start fails).
func (x *spanIndex) claim(d *kvpb.RangeDescriptor) (added bool, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if ol := x.overlapping(d); len(ol) > 0 {
		return false, fmt.Errorf("range %d [%q, %q) at version %d: %w: range %d [%q, %q) at version %d",
			d.Id, d.Start, d.End, d.Ver, ErrSpanOverlap, ol[0].Id, ol[0].Start, ol[0].End, ol[0].Ver)
	}
	if x.held == nil {
		x.held = map[uint64]*kvpb.RangeDescriptor{}
	}
	if _, ok := x.held[d.Id]; ok {
		return false, nil
	}
	x.held[d.Id] = d
	return true, nil
}

// admitSnapshot waits until the snapshot of d may be installed: no other
// local replica overlaps its span but those it covers at a lower version
// (merged into d's range; the store retires them after the install). It
// then records d, so nothing else takes the span meanwhile. done is
// Dragonboat's stop signal for the recovery.
func (s *Store) admitSnapshot(d *kvpb.RangeDescriptor, done <-chan struct{}) error {
	x := &s.spans
	logged := false
	for {
		x.mu.Lock()
		var blocker *kvpb.RangeDescriptor
		for _, o := range x.overlapping(d) {
			if !(SpanCovers(d, o) && o.Ver < d.Ver) {
				blocker = o
				break
			}
		}
		if blocker == nil {
			if x.held == nil {
				x.held = map[uint64]*kvpb.RangeDescriptor{}
			}
			x.held[d.Id] = d
			x.mu.Unlock()
			return nil
		}
		x.mu.Unlock()
		if !logged {
			logged = true
			s.log.Warn("snapshot waits: another replica on this store holds part of its span",
				"range", d.Id, "ver", d.Ver, "start", string(d.Start), "end", string(d.End),
				"other", blocker.Id, "other_ver", blocker.Ver, "other_start", string(blocker.Start), "other_end", string(blocker.End))
			s.metrics.spanConflicts.WithLabelValues("snapshot_waited").Inc()
		}
		select {
		case <-done:
			return sm.ErrSnapshotStopped
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// unheld returns the parts of d's span that no other local replica holds.
// The caller holds mu.
func (x *spanIndex) unheld(d *kvpb.RangeDescriptor) []*kvpb.RangeDescriptor {
	parts := []*kvpb.RangeDescriptor{{Id: d.Id, Keyspace: d.Keyspace, Start: d.Start, End: d.End}}
	for _, o := range x.overlapping(d) {
		var next []*kvpb.RangeDescriptor
		for _, p := range parts {
			if !spansOverlap(p, o) {
				next = append(next, p)
				continue
			}
			if bytes.Compare(p.Start, o.Start) < 0 {
				next = append(next, &kvpb.RangeDescriptor{Id: d.Id, Keyspace: d.Keyspace, Start: p.Start, End: o.Start})
			}
			if len(o.End) > 0 && (len(p.End) == 0 || bytes.Compare(o.End, p.End) < 0) {
				next = append(next, &kvpb.RangeDescriptor{Id: d.Id, Keyspace: d.Keyspace, Start: o.End, End: p.End})
			}
		}
		parts = next
	}
	return parts
}
