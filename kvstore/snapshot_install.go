package kvstore

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// installLimits bound the memory of one snapshot install, whatever the size
// of the range: at most inlineBytes of pairs, or one table being written
// (its current block, and the index and bloom filter of at most tableBytes
// of data), besides the record being read.
type installLimits struct {
	// inlineBytes: a snapshot whose pairs fit is installed as one batch
	// (a range deletion of each span and the pairs), which costs no files;
	// a larger one is written to tables as it streams in.
	inlineBytes int
	// tableBytes is the size a table grows to before the next one begins.
	tableBytes uint64
}

var defaultInstallLimits = installLimits{inlineBytes: 4 << 20, tableBytes: 32 << 20}

// snapshotInstall replaces a replica's spans with a snapshot's pairs, all at
// once: a reader sees the old state or the new one, and so does a restart
// after a crash. A small snapshot is one synced batch. A large one is written
// to tables under the engine's ingestDir, each holding a range deletion of its
// own part of a span (from its first key to the next table's first key, or to
// the span's end) besides the pairs, and the tables are ingested in one
// Ingest: Pebble gives every table of one ingestion its sequence numbers and
// adds them all in one version edit, each deletion covering the older keys of
// its part and not the pairs beside it (a range deletion hides only keys older
// than itself). No table holds keys of another part, so the tables do not
// overlap, as Ingest requires.
//
// Pebble's IngestAndExcise would drop the old keys without leaving range
// deletions to compact away, but at this Pebble (v2.1.7) it needs the format
// major version raised to FormatVirtualSSTables (the engine runs at Pebble's
// minimum, FormatFlushableIngest) and it excises one span per call: a
// replica's three spans would be three ingestions, and a crash between them
// would leave a replica whose metadata does not match its data.
type snapshotInstall struct {
	e       *Engine
	rangeID uint64
	spans   []keySpan
	// While the pairs fit in inlineBytes they are kept here (keys and
	// values copied into buf; ends[i] is where pair i's key ends and
	// ends[i+1] where its value ends).
	buf  []byte
	ends []int
	// tables is set once the snapshot outgrew inlineBytes.
	tables *tableBuilder
}

func newSnapshotInstall(e *Engine, rangeID uint64, spans []keySpan) *snapshotInstall {
	return &snapshotInstall{e: e, rangeID: rangeID, spans: spans}
}

// add takes the next pair of the snapshot, whose key lies in spans[span].
// A snapshot written to tables must bring each span's keys together and in
// increasing order, as SaveSnapshot writes them.
func (in *snapshotInstall) add(span int, k, v []byte) error {
	if in.tables != nil {
		return in.tables.add(span, k, v)
	}
	in.buf = append(in.buf, k...)
	in.ends = append(in.ends, len(in.buf))
	in.buf = append(in.buf, v...)
	in.ends = append(in.ends, len(in.buf))
	if len(in.buf) <= in.e.install.inlineBytes {
		return nil
	}
	// Too large for one batch: from here on, tables. The pairs so far go
	// first; each is found in its span again.
	dir, err := in.tempDir()
	if err != nil {
		return err
	}
	in.tables = &tableBuilder{
		dir:    dir,
		opts:   in.e.opts.MakeWriterOptions(0, in.e.db.TableFormat()),
		target: in.e.install.tableBytes,
		spans:  in.spans,
		done:   make([]bool, len(in.spans)),
		cur:    -1,
	}
	var addErr error
	in.eachPending(func(k, v []byte) bool {
		addErr = in.tables.add(spanOf(in.spans, k), k, v)
		return addErr == nil
	})
	in.buf, in.ends = nil, nil
	return addErr
}

func (in *snapshotInstall) eachPending(f func(k, v []byte) bool) {
	start := 0
	for i := 0; i < len(in.ends); i += 2 {
		if !f(in.buf[start:in.ends[i]], in.buf[in.ends[i]:in.ends[i+1]]) {
			return
		}
		start = in.ends[i+1]
	}
}

func (in *snapshotInstall) tempDir() (string, error) {
	if err := os.MkdirAll(in.e.ingestDir, 0o755); err != nil {
		return "", err
	}
	return os.MkdirTemp(in.e.ingestDir, fmt.Sprintf("range-%d-", in.rangeID))
}

// commit installs what add took. ingested is the bytes of the tables
// ingested, 0 for a snapshot installed as a batch.
func (in *snapshotInstall) commit() (ingested uint64, err error) {
	if in.tables != nil {
		paths, err := in.tables.finish()
		if err != nil {
			return 0, err
		}
		stats, err := in.e.db.IngestWithStats(context.Background(), paths)
		if err != nil {
			return 0, fmt.Errorf("ingest %d tables: %w", len(paths), err)
		}
		in.e.log.Info("snapshot ingested", "range", in.rangeID, "tables", len(paths),
			"bytes", stats.Bytes, "level0_bytes", stats.ApproxIngestedIntoL0Bytes)
		return stats.Bytes, nil
	}
	b := in.e.db.NewBatch()
	defer b.Close()
	for _, sp := range in.spans {
		if err := b.DeleteRange(sp.lo, sp.hi, nil); err != nil {
			return 0, err
		}
	}
	in.eachPending(func(k, v []byte) bool {
		err = b.Set(k, v, nil)
		return err == nil
	})
	if err != nil {
		return 0, err
	}
	return 0, b.Commit(pebble.Sync)
}

// close removes the install's tables, ingested (Pebble holds its own links
// to them) or not.
func (in *snapshotInstall) close() error {
	if in.tables == nil {
		return nil
	}
	if in.tables.w != nil {
		_ = in.tables.w.Close() // abandoned: the snapshot failed
		in.tables.w = nil
	}
	return os.RemoveAll(in.tables.dir)
}

// tableBuilder writes a snapshot's pairs to tables of about target bytes.
// Each table deletes the part of its span it covers: [from, the next table's
// first key), or to the span's end for the span's last table.
type tableBuilder struct {
	dir    string
	opts   sstable.WriterOptions
	target uint64
	spans  []keySpan
	done   []bool // the spans whose tables are all written
	cur    int    // the span being written, -1 before the first pair

	w     *sstable.Writer
	from  []byte // where the current table's range deletion starts
	last  []byte // the last key written in the current span
	paths []string
}

func (b *tableBuilder) add(span int, k, v []byte) error {
	switch {
	case span == b.cur:
		if bytes.Compare(k, b.last) <= 0 {
			return fmt.Errorf("snapshot key %x after %x: out of order", k, b.last)
		}
	case b.done[span]:
		return fmt.Errorf("snapshot key %x: its span's keys came earlier", k)
	default:
		if b.cur >= 0 {
			if err := b.finishSpan(); err != nil {
				return err
			}
		}
		b.cur, b.from = span, b.spans[span].lo
	}
	if b.w != nil && b.w.Raw().EstimatedSize() >= b.target {
		if err := b.closeTable(k); err != nil {
			return err
		}
		b.from = bytes.Clone(k)
	}
	if b.w == nil {
		if err := b.openTable(); err != nil {
			return err
		}
	}
	b.last = append(b.last[:0], k...)
	return b.w.Set(k, v)
}

func (b *tableBuilder) openTable() error {
	path := filepath.Join(b.dir, fmt.Sprintf("%06d.sst", len(b.paths)))
	f, err := vfs.Default.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	b.w = sstable.NewWriter(objstorageprovider.NewFileWritable(f), b.opts)
	b.paths = append(b.paths, path)
	return nil
}

// closeTable ends the current table with the deletion of [from, end) and
// syncs it.
func (b *tableBuilder) closeTable(end []byte) error {
	w := b.w
	b.w = nil
	if err := w.DeleteRange(b.from, end); err != nil {
		_ = w.Close()
		return err
	}
	return w.Close()
}

// finishSpan writes the current span's last table (a deletion alone for a
// span without keys).
func (b *tableBuilder) finishSpan() error {
	if b.w == nil {
		if err := b.openTable(); err != nil {
			return err
		}
	}
	if err := b.closeTable(b.spans[b.cur].hi); err != nil {
		return err
	}
	b.done[b.cur] = true
	b.last = b.last[:0]
	return nil
}

// finish writes the last tables, those of the spans the snapshot had no keys
// of too (their old keys must go), and returns every table's path.
func (b *tableBuilder) finish() ([]string, error) {
	if b.cur >= 0 {
		if err := b.finishSpan(); err != nil {
			return nil, err
		}
	}
	for i, sp := range b.spans {
		if !b.done[i] {
			b.cur, b.from = i, sp.lo
			if err := b.finishSpan(); err != nil {
				return nil, err
			}
		}
	}
	return b.paths, nil
}
