package kvstore

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// Engine is the store's one Pebble database.
type Engine struct {
	db  *pebble.DB
	log *slog.Logger
}

// OpenEngine opens (or creates) the Pebble database in dir.
func OpenEngine(dir string, log *slog.Logger) (*Engine, error) {
	opts := &pebble.Options{
		// Pebble's own WAL is kept but not synced on every apply: Raft's log,
		// which is synced, replays anything the engine lost in a crash.
		Logger: pebbleLogger{log},
		// Pebble's default is 8 MiB. Under a put load the store's tables
		// (values and write records) outgrew it within a minute, and the
		// write-record lookups below went to the file system and snappy for
		// their index and filter blocks.
		CacheSize: 64 << 20,
	}
	// Every write with a request ID first looks up its write record, a key
	// that almost never exists (the ID is new). Without filters that lookup
	// reads an index and a data block of every table that may hold the key;
	// a 10-bit bloom filter per table (1% false positives) answers most of
	// them from the filter block. Measured with cmd/kvbench (64 clients of
	// puts, docs/kv-benchmark.md): applying an entry went from 97 to 52 us,
	// the three stores' CPU from 147% to 116% of a core.
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("open pebble at %s: %w", dir, err)
	}
	return &Engine{db: db, log: log}, nil
}

// Close closes the database.
func (e *Engine) Close() error { return e.db.Close() }

// StoreID returns the store's persistent identity, creating it on first use.
func (e *Engine) StoreID() (uint64, error) {
	key := []byte{prefixLocal, localIdent}
	v, closer, err := e.db.Get(key)
	if err == nil {
		defer closer.Close()
		if len(v) != 8 {
			return 0, fmt.Errorf("corrupt store identity record (%d bytes)", len(v))
		}
		return binary.BigEndian.Uint64(v), nil
	}
	if !errors.Is(err, pebble.ErrNotFound) {
		return 0, fmt.Errorf("read store identity: %w", err)
	}
	var b [8]byte
	var id uint64
	for id == 0 {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, err
		}
		id = binary.BigEndian.Uint64(b[:]) >> 1 // keep it positive for tools that read int64
	}
	if err := e.db.Set(key, u64(id), pebble.Sync); err != nil {
		return 0, fmt.Errorf("write store identity: %w", err)
	}
	return id, nil
}

func (e *Engine) putBoot(r *kvpb.BootRecord) error {
	b, err := proto.Marshal(r)
	if err != nil {
		return err
	}
	return e.db.Set(localBootKey(r.RangeId), b, pebble.Sync)
}

// bootRecord reads a range's boot record; found is false when there is none.
func (e *Engine) bootRecord(rangeID uint64) (r *kvpb.BootRecord, found bool, err error) {
	v, ok, err := get(e.db, localBootKey(rangeID))
	if err != nil || !ok {
		return nil, false, err
	}
	r = &kvpb.BootRecord{}
	if err := proto.Unmarshal(v, r); err != nil {
		return nil, false, fmt.Errorf("corrupt boot record of range %d: %w", rangeID, err)
	}
	return r, true, nil
}

func (e *Engine) deleteBoot(rangeID uint64) error {
	return e.db.Delete(localBootKey(rangeID), pebble.Sync)
}

func (e *Engine) bootRecords() ([]*kvpb.BootRecord, error) {
	lo := []byte{prefixLocal, localBoot}
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: []byte{prefixLocal, localBoot + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []*kvpb.BootRecord
	for it.First(); it.Valid(); it.Next() {
		r := &kvpb.BootRecord{}
		if err := proto.Unmarshal(it.Value(), r); err != nil {
			return nil, fmt.Errorf("corrupt boot record %x: %w", it.Key(), err)
		}
		out = append(out, r)
	}
	return out, it.Error()
}

// get reads one key from a reader; found is false when it is absent.
func get(r pebble.Reader, key []byte) (val []byte, found bool, err error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	val = append([]byte(nil), v...)
	return val, true, closer.Close()
}

type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}
func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
}
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
	panic(fmt.Sprintf(format, args...))
}

// deleteRangeState removes a destroyed replica's metadata, data and dedupe
// spans.
func (e *Engine) deleteRangeState(rangeID uint64, desc *kvpb.RangeDescriptor) error {
	b := e.db.NewBatch()
	defer b.Close()
	lo, hi := metaSpan(rangeID)
	if err := b.DeleteRange(lo, hi, nil); err != nil {
		return err
	}
	if desc != nil {
		lo, hi = dataSpan(desc)
		if err := b.DeleteRange(lo, hi, nil); err != nil {
			return err
		}
		lo, hi = dedupeSpan(desc)
		if err := b.DeleteRange(lo, hi, nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.Sync)
}
