package kvstore

import (
	"github.com/cockroachdb/pebble/v2"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// SplitAligner is implemented by a coprocessor whose keys form units a split
// must not cut (one inbox's keys, say): it moves a candidate split key to
// the start of the unit that holds it.
type SplitAligner interface {
	AlignSplitKey(key []byte) []byte
}

// exactSizeBelow: under this estimate the range's size is counted key by
// key, since Pebble's estimate sees only flushed tables.
const exactSizeBelow = 16 << 20

// RangeBytes returns the size of a range's data: Pebble's estimate of its
// tables, or, for small ranges, the exact bytes of keys and values (which
// also counts what is still in memtables).
func (s *Store) RangeBytes(d *kvpb.RangeDescriptor) uint64 {
	if d == nil {
		return 0
	}
	lo, hi := dataSpan(d)
	if est, err := s.engine.db.EstimateDiskUsage(lo, hi); err == nil && est >= exactSizeBelow {
		return est
	}
	var n uint64
	it, err := s.engine.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		n += uint64(len(it.Key()) + len(it.Value()))
	}
	return n
}

// SplitKey returns a key that halves the range's data, moved to a unit
// boundary by the range's coprocessor, or nil if the range cannot be split
// (too few keys, or one unit).
func (s *Store) SplitKey(rangeID uint64) ([]byte, error) {
	r, err := s.replica(rangeID)
	if err != nil {
		return nil, err
	}
	r.mu.RLock()
	d, cop := r.desc, r.cop
	r.mu.RUnlock()
	if d == nil {
		return nil, ErrNotReady
	}
	total := s.RangeBytes(d)
	lo, hi := dataSpan(d)
	it, err := s.engine.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var acc uint64
	var key []byte
	for it.First(); it.Valid(); it.Next() {
		acc += uint64(len(it.Key()) + len(it.Value()))
		if acc >= total/2 {
			key = append([]byte(nil), it.Key()[2:]...)
			break
		}
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	if key == nil {
		return nil, nil
	}
	if a, ok := cop.(SplitAligner); ok {
		key = a.AlignSplitKey(key)
	}
	if len(key) == 0 || string(key) <= string(d.Start) || !ContainsKey(d, key) {
		return nil, nil
	}
	return key, nil
}
