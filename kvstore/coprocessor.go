package kvstore

import (
	"errors"
	"fmt"
	"slices"

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
	//
	// The one exception is an error wrapping ErrKeyNotInRange from tx (the
	// input names a key the range does not hold): the command is refused
	// with STATUS_KEY_NOT_IN_RANGE and every write it made is discarded.
	// Mutate must therefore change its in-memory state only after its last
	// tx call that can fail; if a command's earlier op already changed it,
	// the state machine rebuilds the coprocessor with Reset.
	Mutate(tx Tx, input []byte) ([]byte, error)
	// Query answers a read on the range's state.
	Query(r Reader, input []byte) ([]byte, error)
	// Reset rebuilds in-memory state from the range's data. The state
	// machine calls it on a new instance, when the replica opens, after a
	// snapshot is installed, and when a split or merge changed the range's
	// span, and publishes that instance together with its descriptor, so a
	// query never sees an index of another span than its descriptor's. A
	// Reset of an instance in use must swap its new state in whole.
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

// Tx reads and writes a range's data inside an apply batch. A
// coprocessor's Tx reads its own writes (they are staged until the command
// is done).
type Tx interface {
	Reader
	Set(key, value []byte) error
	Delete(key []byte) error
}

// ErrKeyNotInRange is returned by a Tx asked to read or write outside its
// range.
var ErrKeyNotInRange = errors.New("key is outside the range")

type rangeReader struct {
	r    pebble.Reader
	desc *kvpb.RangeDescriptor
}

func (rr *rangeReader) Range() *kvpb.RangeDescriptor { return rr.desc }

func (rr *rangeReader) Get(key []byte) ([]byte, bool, error) {
	if !keyInRange(rr.desc, key) {
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
	// size counts the writes into the range's size (nil: not counted).
	size *sizeCounter
}

func (tx *rangeTx) Set(key, value []byte) error {
	if !keyInRange(tx.desc, key) {
		return fmt.Errorf("set %q: %w", key, ErrKeyNotInRange)
	}
	return setCounted(tx.batch, tx.size, DataKey(tx.desc.Keyspace, key), value)
}

func (tx *rangeTx) Delete(key []byte) error {
	if !keyInRange(tx.desc, key) {
		return fmt.Errorf("delete %q: %w", key, ErrKeyNotInRange)
	}
	return deleteCounted(tx.batch, tx.size, DataKey(tx.desc.Keyspace, key))
}

// setCounted and deleteCounted write an engine data key into the batch and
// count the write into the range's size.
func setCounted(b *pebble.Batch, size *sizeCounter, key, value []byte) error {
	if err := size.write(key, true, len(value)); err != nil {
		return err
	}
	return b.Set(key, value, nil)
}

func deleteCounted(b *pebble.Batch, size *sizeCounter, key []byte) error {
	if err := size.write(key, false, 0); err != nil {
		return err
	}
	return b.Delete(key, nil)
}

// stagedTx keeps the writes of one command apart from the apply batch until
// the command has run to its end, so that a command refused half-way (a key
// outside the range) leaves nothing behind: flush moves the writes into the
// batch, and a refused command's are dropped. Reads see the batch overlaid
// with the staged writes.
type stagedTx struct {
	rangeReader
	batch  *pebble.Batch
	writes map[string]stagedWrite
	// order is the keys in the order of their first write, so that flush
	// fills the batch the same way on every replica.
	order []string
	// size counts the flushed writes into the range's size (nil: not counted).
	size *sizeCounter
}

type stagedWrite struct {
	value   []byte
	deleted bool
}

func newStagedTx(batch *pebble.Batch, desc *kvpb.RangeDescriptor) *stagedTx {
	return &stagedTx{rangeReader: rangeReader{r: batch, desc: desc}, batch: batch, writes: map[string]stagedWrite{}}
}

func (tx *stagedTx) Get(key []byte) ([]byte, bool, error) {
	if w, ok := tx.writes[string(key)]; ok {
		if w.deleted {
			return nil, false, nil
		}
		return append([]byte(nil), w.value...), true, nil
	}
	return tx.rangeReader.Get(key)
}

func (tx *stagedTx) stage(key []byte, w stagedWrite) {
	k := string(key)
	if _, ok := tx.writes[k]; !ok {
		tx.order = append(tx.order, k)
	}
	tx.writes[k] = w
}

func (tx *stagedTx) Set(key, value []byte) error {
	if !keyInRange(tx.desc, key) {
		return fmt.Errorf("set %q: %w", key, ErrKeyNotInRange)
	}
	tx.stage(key, stagedWrite{value: append([]byte(nil), value...)})
	return nil
}

func (tx *stagedTx) Delete(key []byte) error {
	if !keyInRange(tx.desc, key) {
		return fmt.Errorf("delete %q: %w", key, ErrKeyNotInRange)
	}
	tx.stage(key, stagedWrite{deleted: true})
	return nil
}

// Iterate merges the staged writes in [start, end) into the batch's keys.
func (tx *stagedTx) Iterate(start, end []byte, fn func(key, value []byte) bool) error {
	if len(tx.writes) == 0 {
		return tx.rangeReader.Iterate(start, end, fn)
	}
	var staged []string
	for k := range tx.writes {
		if k >= string(start) && (len(end) == 0 || k < string(end)) {
			staged = append(staged, k)
		}
	}
	slices.Sort(staged)
	i := 0
	// emitBefore hands fn the staged keys before key (all of them for nil);
	// it reports false once fn asked to stop.
	emitBefore := func(key []byte) bool {
		for ; i < len(staged) && (key == nil || staged[i] < string(key)); i++ {
			if w := tx.writes[staged[i]]; !w.deleted && !fn([]byte(staged[i]), w.value) {
				i++
				return false
			}
		}
		return true
	}
	stopped := false
	err := tx.rangeReader.Iterate(start, end, func(key, value []byte) bool {
		if !emitBefore(key) {
			stopped = true
			return false
		}
		if i < len(staged) && staged[i] == string(key) {
			w := tx.writes[staged[i]]
			i++
			if w.deleted {
				return true
			}
			value = w.value
		}
		if !fn(key, value) {
			stopped = true
			return false
		}
		return true
	})
	if err != nil || stopped {
		return err
	}
	emitBefore(nil)
	return nil
}

// flush writes the staged writes into the batch.
func (tx *stagedTx) flush() error {
	ks := tx.desc.Keyspace
	for _, k := range tx.order {
		w := tx.writes[k]
		var err error
		if w.deleted {
			err = deleteCounted(tx.batch, tx.size, DataKey(ks, []byte(k)))
		} else {
			err = setCounted(tx.batch, tx.size, DataKey(ks, []byte(k)), w.value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// AlignSplitKey moves a split key of keyspace ks to the start of the unit
// that holds it, through the keyspace's SplitAligner: the rule SplitKey
// applies to the balancer's splits, for a key chosen elsewhere (an admin's).
// A keyspace without an aligner keeps the key.
func (s *Store) AlignSplitKey(ks kvpb.Keyspace, key []byte) []byte {
	f := s.cfg.Coprocessors[ks]
	if f == nil {
		return key
	}
	if a, ok := f(0).(SplitAligner); ok {
		return a.AlignSplitKey(key)
	}
	return key
}
