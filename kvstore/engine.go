package kvstore

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/dustin/go-humanize"
	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// Engine is the store's one Pebble database.
type Engine struct {
	db  *pebble.DB
	log *slog.Logger
	// opts are the options db was opened with: a snapshot's tables are
	// written with the same blocks, filters and compression as its own.
	opts *pebble.Options
	// ingestDir holds the tables of the snapshots being installed
	// (snapshot_install.go). It lies in the engine's directory, so Ingest
	// links the tables instead of copying them, and what a crash left there
	// is removed at open.
	ingestDir string
	install   installLimits
}

// EngineOptions size the engine's memory. Zero fields take the defaults
// below.
type EngineOptions struct {
	// CacheBytes is the block cache: the tables' index, filter and data
	// blocks kept decoded in memory. Default: DefaultCacheBytes().
	CacheBytes int64
	// MemTableBytes is the size a memtable grows to before it is flushed to
	// a table. Default 64 MiB.
	MemTableBytes uint64
}

// DefaultMemTableBytes is EngineOptions.MemTableBytes's default.
const DefaultMemTableBytes = 64 << 20

// DefaultCacheBytes is an eighth of the memory this process may use (the
// cgroup's limit, else the machine's memory), at least 64 MiB and at most
// 8 GiB: the rest is left to memtables, Dragonboat's log, the frontend's
// connections and the page cache, which also holds the tables.
func DefaultCacheBytes() int64 {
	const lo, hi = 64 << 20, 8 << 30
	return min(max(memoryLimit()/8, lo), hi)
}

func (o EngineOptions) withDefaults() EngineOptions {
	if o.CacheBytes == 0 {
		o.CacheBytes = DefaultCacheBytes()
	}
	if o.MemTableBytes == 0 {
		o.MemTableBytes = DefaultMemTableBytes
	}
	return o
}

// Validate refuses sizes Pebble cannot work with.
func (o EngineOptions) Validate() error {
	if o.CacheBytes != 0 && o.CacheBytes < 1<<20 {
		return fmt.Errorf("kvstore: block cache of %d bytes: want at least 1 MiB", o.CacheBytes)
	}
	// Pebble's memtable arena is addressed with 32-bit offsets.
	if o.MemTableBytes != 0 && (o.MemTableBytes < 1<<20 || o.MemTableBytes > 4<<30-1) {
		return fmt.Errorf("kvstore: memtable of %d bytes: want 1 MiB to 4 GiB", o.MemTableBytes)
	}
	return nil
}

// OpenEngine opens (or creates) the Pebble database in dir.
func OpenEngine(dir string, o EngineOptions, log *slog.Logger) (*Engine, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	cache := pebble.NewCache(o.CacheBytes)
	defer cache.Unref() // the database holds its own reference
	opts := &pebble.Options{
		// Pebble's own WAL is kept but not synced on every apply: Raft's log,
		// which is synced, replays anything the engine lost in a crash.
		Logger: pebbleLogger{log},
		// Pebble's default is 8 MiB. Under a put load the store's tables
		// (values and write records) outgrew 8 MiB within a minute, and the
		// write-record lookups below went to the file system and snappy for
		// their index and filter blocks.
		Cache: cache,
		// Pebble's default memtable is 4 MiB: every range's writes share
		// the one engine, and small memtables flush (and then compact) the
		// same hot keys (inbox queues written then deleted, write records)
		// over and over. A larger one lets most short-lived keys die in
		// memory. Writes stall at 4 memtables queued for flush.
		MemTableSize:                o.MemTableBytes,
		MemTableStopWritesThreshold: 4,
		// Compactions run one at a time by default: a burst of writes then
		// piles up files in L0, and every read probes each of them. Allow up
		// to one per core (at least 2) when L0 or the compaction debt grows.
		CompactionConcurrencyRange: func() (int, int) { return 1, max(2, min(runtime.NumCPU(), 8)) },
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
	opts.EnsureDefaults() // as Open does on its copy; MakeWriterOptions reads them
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("open pebble at %s: %w", dir, err)
	}
	ingestDir := filepath.Join(dir, "snapshot-ingest")
	if err := os.RemoveAll(ingestDir); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("remove the tables of unfinished snapshot installs: %w", err)
	}
	log.Info("engine opened", "block_cache", humanize.IBytes(uint64(o.CacheBytes)), "memtable", humanize.IBytes(o.MemTableBytes))
	return &Engine{db: db, log: log, opts: opts, ingestDir: ingestDir, install: defaultInstallLimits}, nil
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

// deleteRangeState removes a destroyed replica's metadata, and the data and
// dedupe records of the spans it owns.
func (e *Engine) deleteRangeState(rangeID uint64, owned []*kvpb.RangeDescriptor) error {
	b := e.db.NewBatch()
	defer b.Close()
	lo, hi := metaSpan(rangeID)
	if err := b.DeleteRange(lo, hi, nil); err != nil {
		return err
	}
	for _, desc := range owned {
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
