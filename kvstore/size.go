package kvstore

import (
	"errors"

	"github.com/cockroachdb/pebble/v2"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// SplitAligner is implemented by a coprocessor whose keys form units a split
// must not cut (one inbox's keys, say): it moves a candidate split key to
// the start of the unit that holds it.
type SplitAligner interface {
	AlignSplitKey(key []byte) []byte
}

// A range's size is the bytes of the keys and values of its data span (the
// engine's keys, so each key counts its two-byte prefix), kept as a counter
// instead of being measured when asked: sizes are read for every range on
// each gossip push-pull, LocalRanges call, descriptor or leader change,
// metrics scrape and balancer step, and a scan of every small range at each
// of those costs more than the range count can bear.
//
// The counter (sizeCounter) moves with every write of an apply batch, by the
// new key and value less the old ones (one point read of the old value per
// write), and is written to metaBytes in the same batch as the applied
// index, so a restart finds it as it was. A split divides it between parent
// and child, a merge adds the right range's to the left's, and a snapshot
// counts the pairs it installs. A replica without one (data written before
// the counter existed) measures its span once when it opens. The figure is
// deterministic except where a split of a large range divides it by
// Pebble's estimate of each half: replicas may differ a little, which is
// fine for an estimate no command depends on.

// exactSizeBelow: a split of a range whose halves Pebble estimates at less
// than this together counts the child's bytes key by key, since Pebble's
// estimate sees only flushed tables; a larger one divides the parent's bytes
// in the proportion of the two estimates.
const exactSizeBelow = 16 << 20

// sizeCounter keeps a range's size through the writes of one apply batch.
// A nil counter counts nothing.
type sizeCounter struct {
	// r reads the state the batch's writes apply to (the indexed batch);
	// db gives Pebble's estimates.
	r     pebble.Reader
	db    *pebble.DB
	bytes int64
	// scans counts the spans measured key by key (Metrics.sizeScans).
	scans int
}

// write counts a set (set true, with the value's length) or a delete of an
// engine data key, against what the key held.
func (c *sizeCounter) write(key []byte, set bool, valueLen int) error {
	if c == nil {
		return nil
	}
	v, closer, err := c.r.Get(key)
	switch {
	case err == nil:
		c.bytes -= int64(len(key) + len(v))
		if err := closer.Close(); err != nil {
			return err
		}
	case !errors.Is(err, pebble.ErrNotFound):
		return err
	}
	if set {
		c.bytes += int64(len(key) + valueLen)
	}
	return nil
}

// current is the counter's value, never below zero (an estimated split can
// leave the parent short).
func (c *sizeCounter) current() uint64 { return uint64(max(c.bytes, 0)) }

// split divides the counter between the parent, now [parent.Start, key),
// and the child [key, end), and returns the child's share.
func (c *sizeCounter) split(parent, child *kvpb.RangeDescriptor) (uint64, error) {
	total := c.current()
	clo, chi := dataSpan(child)
	plo, phi := dataSpan(parent)
	estChild, errC := c.db.EstimateDiskUsage(clo, chi)
	estParent, errP := c.db.EstimateDiskUsage(plo, phi)
	var childBytes uint64
	if errC == nil && errP == nil && estChild+estParent >= exactSizeBelow {
		childBytes = uint64(float64(total) * float64(estChild) / float64(estChild+estParent))
	} else {
		var err error
		if childBytes, err = c.scan(clo, chi); err != nil {
			return 0, err
		}
	}
	childBytes = min(childBytes, total)
	c.bytes = int64(total - childBytes)
	return childBytes, nil
}

// absorb adds the size of the merged right range: its counter, or, if it
// has none, its span measured.
func (c *sizeCounter) absorb(right *kvpb.RangeDescriptor) error {
	v, found, err := get(c.r, metaKey(right.Id, metaBytes))
	if err != nil {
		return err
	}
	n, err := readU64(v)
	if !found || err != nil {
		lo, hi := dataSpan(right)
		if n, err = c.scan(lo, hi); err != nil {
			return err
		}
	}
	c.bytes = int64(c.current() + n)
	return nil
}

func (c *sizeCounter) scan(lo, hi []byte) (uint64, error) {
	c.scans++
	return spanBytes(c.r, lo, hi)
}

// spanBytes measures the keys and values in [lo, hi) one by one.
func spanBytes(r pebble.Reader, lo, hi []byte) (uint64, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, err
	}
	var n uint64
	for it.First(); it.Valid(); it.Next() {
		n += uint64(len(it.Key()) + len(it.Value()))
	}
	if err := it.Error(); err != nil {
		it.Close()
		return 0, err
	}
	return n, it.Close()
}

// RangeBytes returns the size of the local replica's data (0 if the store
// holds none): the counter kept at apply time, so it costs no read.
func (s *Store) RangeBytes(rangeID uint64) uint64 {
	r, err := s.replica(rangeID)
	if err != nil {
		return 0
	}
	return r.Bytes()
}

// SizeScans counts the spans this store measured key by key to size a
// range (a split's child, a replica with no counter at open): sizes are
// otherwise read from counters.
func (s *Store) SizeScans() uint64 { return s.metrics.scans.Load() }

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
	lo, hi := dataSpan(d)
	key, seen, err := keyAtBytes(s.engine.db, lo, hi, r.Bytes()/2)
	if err == nil && key == nil && seen > 0 {
		// The counter is an estimate: it may exceed what the span holds.
		key, _, err = keyAtBytes(s.engine.db, lo, hi, seen/2)
	}
	if err != nil || key == nil {
		return nil, err
	}
	if a, ok := cop.(SplitAligner); ok {
		key = a.AlignSplitKey(key)
	}
	if len(key) == 0 || string(key) <= string(d.Start) || !ContainsKey(d, key) {
		return nil, nil
	}
	return key, nil
}

// keyAtBytes returns the first keyspace-relative key of [lo, hi) at which
// the keys and values from lo reach target bytes, or nil and the bytes seen
// if the span holds fewer.
func keyAtBytes(r pebble.Reader, lo, hi []byte, target uint64) (key []byte, seen uint64, err error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, 0, err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		seen += uint64(len(it.Key()) + len(it.Value()))
		if seen >= target {
			return append([]byte(nil), it.Key()[2:]...), seen, nil
		}
	}
	return nil, seen, it.Error()
}
