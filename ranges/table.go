package ranges

import (
	"bytes"
	"sync"

	"github.com/google/btree"
	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// Route is what the table knows of one range: its freshest descriptor and the
// freshest leader any store reported.
type Route struct {
	Desc       *kvpb.RangeDescriptor
	LeaderID   uint64 // replica ID, 0 when unknown
	LeaderTerm uint64
	// Bytes is the approximate size a replica reported; BytesKnown is false
	// until a store reported it (a route learnt from a reply has no size).
	Bytes      uint64
	BytesKnown bool
}

// LeaderStore returns the store of the leader replica, 0 when unknown.
func (r *Route) LeaderStore() uint64 {
	for _, rep := range r.Desc.Replicas {
		if rep.ReplicaId == r.LeaderID {
			return rep.StoreId
		}
	}
	return 0
}

// Table is the routing table: per keyspace, the ranges ordered by start key.
// It is safe for concurrent use.
type Table struct {
	mu    sync.RWMutex
	trees map[kvpb.Keyspace]*btree.BTreeG[*Route]
	byID  map[uint64]*Route
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{trees: map[kvpb.Keyspace]*btree.BTreeG[*Route]{}, byID: map[uint64]*Route{}}
}

func routeLess(a, b *Route) bool { return bytes.Compare(a.Desc.Start, b.Desc.Start) < 0 }

// newer reports whether descriptor a supersedes b.
func newer(a, b *kvpb.RangeDescriptor) bool {
	if a.Ver != b.Ver {
		return a.Ver > b.Ver
	}
	return a.ConfVer > b.ConfVer
}

// overlaps reports whether two descriptors of one keyspace share a key.
func overlaps(a, b *kvpb.RangeDescriptor) bool {
	aBeforeB := len(a.End) > 0 && bytes.Compare(a.End, b.Start) <= 0
	bBeforeA := len(b.End) > 0 && bytes.Compare(b.End, a.Start) <= 0
	return !aBeforeB && !bBeforeA
}

// Update merges what a store reported of a range. A stale descriptor is
// ignored; a newer one replaces the entries it overlaps that are older.
func (t *Table) Update(info *rangespb.RangeInfo) {
	d := info.GetRange()
	if d == nil || d.Id == 0 || d.State == kvpb.RangeState_RANGE_STATE_REMOVED || d.State == kvpb.RangeState_RANGE_STATE_MERGED {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur := t.byID[d.Id]; cur != nil {
		if newer(cur.Desc, d) {
			return
		}
		if proto.Equal(cur.Desc, d) {
			if info.LeaderTerm > cur.LeaderTerm || (info.LeaderTerm == cur.LeaderTerm && cur.LeaderID == 0) {
				cur.LeaderID, cur.LeaderTerm = info.LeaderReplicaId, info.LeaderTerm
			}
			if info.StoreId != 0 {
				cur.Bytes, cur.BytesKnown = info.ApproximateBytes, true
			}
			return
		}
	}
	tree := t.trees[d.Keyspace]
	if tree == nil {
		tree = btree.NewG(16, routeLess)
		t.trees[d.Keyspace] = tree
	}
	// Refuse the update if an overlapping range is newer: it already
	// superseded this one (a split or merge the reporter has not seen).
	victims, conflict := overlapping(tree, d)
	if conflict {
		return
	}
	for _, v := range victims {
		tree.Delete(v)
		delete(t.byID, v.Desc.Id)
	}
	if old := t.byID[d.Id]; old != nil {
		tree.Delete(old)
	}
	r := &Route{Desc: d, LeaderID: info.LeaderReplicaId, LeaderTerm: info.LeaderTerm, Bytes: info.ApproximateBytes, BytesKnown: info.StoreId != 0}
	tree.ReplaceOrInsert(r)
	t.byID[d.Id] = r
}

// overlapping returns the routes of tree that overlap d, and whether one of
// them, another range, is at d's version or newer. The routes of a tree
// never overlap one another, so at most one that starts before d.Start can
// reach into d: only d's neighbourhood is visited, not the whole keyspace.
func overlapping(tree *btree.BTreeG[*Route], d *kvpb.RangeDescriptor) (victims []*Route, conflict bool) {
	check := func(r *Route) bool {
		if r.Desc.Id != d.Id && r.Desc.Ver >= d.Ver {
			conflict = true
			return false
		}
		victims = append(victims, r)
		return true
	}
	pivot := &Route{Desc: &kvpb.RangeDescriptor{Start: d.Start}}
	tree.DescendLessOrEqual(pivot, func(r *Route) bool {
		if bytes.Equal(r.Desc.Start, d.Start) {
			return true // visited by the ascent below
		}
		if overlaps(r.Desc, d) {
			check(r)
		}
		return false
	})
	if conflict {
		return nil, true
	}
	tree.AscendGreaterOrEqual(pivot, func(r *Route) bool {
		if len(d.End) > 0 && bytes.Compare(r.Desc.Start, d.End) >= 0 {
			return false
		}
		return check(r)
	})
	if conflict {
		return nil, true
	}
	return victims, false
}

// SetLeader records a leader hint for a range.
func (t *Table) SetLeader(rangeID, replicaID, term uint64) {
	if replicaID == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := t.byID[rangeID]; r != nil && term >= r.LeaderTerm {
		r.LeaderID, r.LeaderTerm = replicaID, term
	}
}

// Lookup returns the range holding key in keyspace ks, or nil.
func (t *Table) Lookup(ks kvpb.Keyspace, key []byte) *Route {
	t.mu.RLock()
	defer t.mu.RUnlock()
	tree := t.trees[ks]
	if tree == nil {
		return nil
	}
	var found *Route
	tree.DescendLessOrEqual(&Route{Desc: &kvpb.RangeDescriptor{Start: key}}, func(r *Route) bool {
		found = r
		return false
	})
	if found == nil || (len(found.Desc.End) > 0 && bytes.Compare(key, found.Desc.End) >= 0) {
		return nil
	}
	c := *found
	return &c
}

// Get returns the route of a range by ID, or nil.
func (t *Table) Get(rangeID uint64) *Route {
	t.mu.RLock()
	defer t.mu.RUnlock()
	r := t.byID[rangeID]
	if r == nil {
		return nil
	}
	c := *r
	return &c
}

// All returns every route, by keyspace and start key.
func (t *Table) All() []*Route {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []*Route
	for ks := kvpb.Keyspace(0); ks <= kvpb.Keyspace_KEYSPACE_RETAIN; ks++ {
		if tree := t.trees[ks]; tree != nil {
			tree.Ascend(func(r *Route) bool {
				c := *r
				out = append(out, &c)
				return true
			})
		}
	}
	return out
}
