package kvstore

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// Coprocessor is deterministic code bound to a keyspace that runs inside the
// state machine of every range of it. Keys it sees are keyspace-relative.
//
// Mutate and Query may run concurrently (a query does not wait for an apply
// batch), so a coprocessor guards its in-memory state itself.
type Coprocessor interface {
	// Mutate applies one input inside the apply batch, through Raft. The
	// same input on the same state must give the same writes and output on
	// every replica: no clocks, no randomness, no I/O. A user-level failure
	// belongs in the output; an error stops the process (fail-stop), for the
	// engine failed or the coprocessor broke its contract.
	Mutate(tx Tx, input []byte) ([]byte, error)
	// Query answers a read on the range's state.
	Query(r Reader, input []byte) ([]byte, error)
	// Reset rebuilds in-memory state from the range's data. It is called
	// when the replica opens, after a snapshot is installed, and after the
	// range's span changes by a split or merge.
	Reset(r Reader) error
}

// CoprocessorFactory makes the coprocessor of one replica of a range.
type CoprocessorFactory func(rangeID uint64) Coprocessor

// Reader reads a range's data.
type Reader interface {
	// Range is the range's descriptor as of this read.
	Range() *kvpb.RangeDescriptor
	Get(key []byte) (value []byte, found bool, err error)
	// Iterate calls fn for each key in [start, end) clipped to the range, in
	// order, until fn returns false. An empty end means the range's end.
	Iterate(start, end []byte, fn func(key, value []byte) bool) error
}

// Tx reads and writes a range's data inside an apply batch.
type Tx interface {
	Reader
	Set(key, value []byte) error
	Delete(key []byte) error
}

// ErrKeyNotInRange is returned by a Tx asked to write outside its range.
var ErrKeyNotInRange = errors.New("key is outside the range")

type rangeReader struct {
	r    pebble.Reader
	desc *kvpb.RangeDescriptor
}

func (rr *rangeReader) Range() *kvpb.RangeDescriptor { return rr.desc }

func (rr *rangeReader) Get(key []byte) ([]byte, bool, error) {
	if !ContainsKey(rr.desc, key) {
		return nil, false, fmt.Errorf("get %q: %w", key, ErrKeyNotInRange)
	}
	return get(rr.r, DataKey(rr.desc.Keyspace, key))
}

func (rr *rangeReader) Iterate(start, end []byte, fn func(key, value []byte) bool) error {
	lo, hi := dataSpan(rr.desc)
	if s := DataKey(rr.desc.Keyspace, start); string(s) > string(lo) {
		lo = s
	}
	if len(end) > 0 {
		if e := DataKey(rr.desc.Keyspace, end); string(e) < string(hi) {
			hi = e
		}
	}
	if string(lo) >= string(hi) {
		return nil
	}
	it, err := rr.r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		if !fn(it.Key()[2:], it.Value()) {
			break
		}
	}
	if err := it.Error(); err != nil {
		it.Close()
		return err
	}
	return it.Close()
}

type rangeTx struct {
	rangeReader
	batch *pebble.Batch
}

func (tx *rangeTx) Set(key, value []byte) error {
	if !ContainsKey(tx.desc, key) {
		return fmt.Errorf("set %q: %w", key, ErrKeyNotInRange)
	}
	return tx.batch.Set(DataKey(tx.desc.Keyspace, key), value, nil)
}

func (tx *rangeTx) Delete(key []byte) error {
	if !ContainsKey(tx.desc, key) {
		return fmt.Errorf("delete %q: %w", key, ErrKeyNotInRange)
	}
	return tx.batch.Delete(DataKey(tx.desc.Keyspace, key), nil)
}
