package kvstore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble/v2"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// A snapshot is a stream of records: the header (descriptor and applied
// index), then every metadata, data and dedupe key of the range, then an end
// mark.
// Each record is a tag byte, then length-prefixed fields.
const (
	snapMagic      = "BFSNAP1\n"
	tagHeader byte = 'h'
	tagPair   byte = 'p'
	tagEnd    byte = 'e'
)

type snapshotContext struct {
	snap    *pebble.Snapshot
	desc    *kvpb.RangeDescriptor
	applied uint64
}

// PrepareSnapshot runs while Update does not, so the Pebble snapshot, the
// descriptor and the applied index agree with each other.
func (s *rangeStateMachine) PrepareSnapshot() (any, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &snapshotContext{snap: s.engine.db.NewSnapshot(), desc: s.desc, applied: s.applied}, nil
}

// SaveSnapshot writes the snapshot. An on-disk state machine's own
// snapshots are Dragonboat's metadata only: this runs when a snapshot is
// streamed to another replica.
func (s *rangeStateMachine) SaveSnapshot(ctx any, w io.Writer, done <-chan struct{}) error {
	sc := ctx.(*snapshotContext)
	defer sc.snap.Close()
	if s.beforeSend != nil {
		s.beforeSend()
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	if _, err := bw.WriteString(snapMagic); err != nil {
		return err
	}
	var descBytes []byte
	if sc.desc != nil {
		var err error
		if descBytes, err = proto.Marshal(sc.desc); err != nil {
			return err
		}
	}
	if err := writeRecord(bw, tagHeader, descBytes, u64(sc.applied)); err != nil {
		return err
	}
	spans := replicaSpans(s.rangeID, sc.desc)
	n := 0
	for _, sp := range spans {
		it, err := sc.snap.NewIter(&pebble.IterOptions{LowerBound: sp.lo, UpperBound: sp.hi})
		if err != nil {
			return err
		}
		for it.First(); it.Valid(); it.Next() {
			if n++; n%1024 == 0 {
				select {
				case <-done:
					it.Close()
					return sm.ErrSnapshotStopped
				default:
				}
			}
			if err := writeRecord(bw, tagPair, it.Key(), it.Value()); err != nil {
				it.Close()
				return err
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
	}
	if err := writeRecord(bw, tagEnd); err != nil {
		return err
	}
	if s.metrics != nil {
		s.metrics.snapshotsSaved.Inc()
	}
	return bw.Flush()
}

// RecoverFromSnapshot replaces the range's metadata, data and dedupe spans
// with the snapshot's, all at once (snapshot_install.go), so a crash leaves
// either the old state or the new one. A large snapshot streams into tables
// that are ingested, so its memory does not grow with the range. Keys
// outside the snapshot's spans are refused, so a bad snapshot cannot touch a
// neighbouring range.
func (s *rangeStateMachine) RecoverFromSnapshot(r io.Reader, done <-chan struct{}) error {
	rr := recordReader{r: bufio.NewReaderSize(r, 256<<10)}
	magic := make([]byte, len(snapMagic))
	if _, err := io.ReadFull(rr.r, magic); err != nil || string(magic) != snapMagic {
		return fmt.Errorf("range %d: not a bifrost snapshot", s.rangeID)
	}
	tag, fields, err := rr.next()
	if err != nil || tag != tagHeader || len(fields) != 2 {
		return fmt.Errorf("range %d: bad snapshot header: %v", s.rangeID, err)
	}
	var desc *kvpb.RangeDescriptor
	if len(fields[0]) > 0 {
		desc = &kvpb.RangeDescriptor{}
		if err := proto.Unmarshal(fields[0], desc); err != nil {
			return fmt.Errorf("range %d: bad snapshot descriptor: %w", s.rangeID, err)
		}
		if desc.Id != s.rangeID {
			return fmt.Errorf("range %d: snapshot is of range %d", s.rangeID, desc.Id)
		}
	}
	applied, err := readU64(fields[1])
	if err != nil {
		return fmt.Errorf("range %d: bad snapshot applied index: %w", s.rangeID, err)
	}
	// The data keys of every range share the engine: the snapshot waits
	// until no other replica here holds part of its span (spans.go).
	if desc != nil && s.admitSnapshot != nil {
		if err := s.admitSnapshot(desc, done); err != nil {
			return err
		}
	}

	// Only the snapshot's own span is replaced. Keys of an older, wider span
	// (the range split since) may belong to a child replica that runs here;
	// if none does they are unreachable, and the child's own snapshot
	// replaces them when it comes.
	spans := replicaSpans(s.rangeID, desc)
	install := newSnapshotInstall(s.engine, s.rangeID, spans)
	defer func() {
		if err := install.close(); err != nil {
			s.engine.log.Warn("remove snapshot tables", "range", s.rangeID, "err", err)
		}
	}()
	var size uint64 // the data pairs installed (size.go)
	for n := 0; ; n++ {
		if n%1024 == 0 {
			select {
			case <-done:
				return sm.ErrSnapshotStopped
			default:
			}
		}
		tag, fields, err := rr.next()
		if err != nil {
			return fmt.Errorf("range %d: read snapshot: %w", s.rangeID, err)
		}
		if tag == tagEnd {
			break
		}
		if tag != tagPair || len(fields) != 2 {
			return fmt.Errorf("range %d: bad snapshot record %q", s.rangeID, tag)
		}
		span := spanOf(spans, fields[0])
		if span < 0 {
			return fmt.Errorf("range %d: snapshot key %x is outside the range", s.rangeID, fields[0])
		}
		if err := install.add(span, fields[0], fields[1]); err != nil {
			return fmt.Errorf("range %d: install snapshot: %w", s.rangeID, err)
		}
		if span == 1 { // the data span (replicaSpans)
			size += uint64(len(fields[0]) + len(fields[1]))
		}
	}
	ingested, err := install.commit()
	if err != nil {
		return fmt.Errorf("range %d: install snapshot: %w", s.rangeID, err)
	}
	// Counted here, whatever the sender's counter said (the install took
	// the sender's: its meta pairs come before the data is counted). A crash
	// before this write leaves the sender's, an estimate of the same data.
	if err := s.engine.db.Set(metaKey(s.rangeID, metaBytes), u64(size), pebble.Sync); err != nil {
		return fmt.Errorf("range %d: size of the snapshot: %w", s.rangeID, err)
	}
	cop, err := newCoprocessor(s.coprocessorFor, s.engine.db, desc)
	if err != nil {
		return err
	}
	if err := s.loadDedupeState(s.engine.db, desc); err != nil {
		return err
	}
	s.mu.Lock()
	s.desc, s.applied, s.cop, s.descIndex, s.bytes = desc, applied, cop, applied, size
	s.mu.Unlock()
	if s.metrics != nil {
		s.metrics.snapshotsRecovered.Inc()
		s.metrics.recovered.Add(1)
		if ingested > 0 {
			s.metrics.snapshotsIngested.Inc()
			s.metrics.snapshotIngestedBytes.Add(float64(ingested))
			s.metrics.ingested.Add(1)
		}
	}
	if desc != nil && s.onSnapshot != nil {
		s.onSnapshot(desc)
	}
	if desc != nil && s.onDescriptor != nil {
		s.onDescriptor(s.rangeID, desc)
	}
	return nil
}

func writeRecord(w *bufio.Writer, tag byte, fields ...[]byte) error {
	if err := w.WriteByte(tag); err != nil {
		return err
	}
	var lb [binary.MaxVarintLen64]byte
	if err := w.WriteByte(byte(len(fields))); err != nil {
		return err
	}
	for _, f := range fields {
		n := binary.PutUvarint(lb[:], uint64(len(f)))
		if _, err := w.Write(lb[:n]); err != nil {
			return err
		}
		if _, err := w.Write(f); err != nil {
			return err
		}
	}
	return nil
}

const maxSnapshotField = 64 << 20

// recordReader reads a snapshot's records into buffers it reuses, so that
// reading a large snapshot makes no garbage per record.
type recordReader struct {
	r      *bufio.Reader
	bufs   [][]byte
	fields [][]byte
}

// next reads a record. Its fields are valid until the next call.
func (rr *recordReader) next() (byte, [][]byte, error) {
	tag, err := rr.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, err := rr.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	rr.fields = rr.fields[:0]
	for i := range int(n) {
		l, err := binary.ReadUvarint(rr.r)
		if err != nil {
			return 0, nil, err
		}
		if l > maxSnapshotField {
			return 0, nil, errors.New("snapshot field too large")
		}
		if i == len(rr.bufs) {
			rr.bufs = append(rr.bufs, nil)
		}
		if uint64(cap(rr.bufs[i])) < l {
			rr.bufs[i] = make([]byte, l)
		}
		f := rr.bufs[i][:l]
		if _, err := io.ReadFull(rr.r, f); err != nil {
			return 0, nil, err
		}
		rr.fields = append(rr.fields, f)
	}
	return tag, rr.fields, nil
}

// keySpan is the engine span [lo, hi).
type keySpan struct{ lo, hi []byte }

// replicaSpans are the engine spans a replica of the range holds, in the
// order a snapshot carries them: its metadata, then, once it has a
// descriptor, its data and its dedupe records.
func replicaSpans(rangeID uint64, desc *kvpb.RangeDescriptor) []keySpan {
	mlo, mhi := metaSpan(rangeID)
	spans := []keySpan{{mlo, mhi}}
	if desc != nil {
		dlo, dhi := dataSpan(desc)
		rlo, rhi := dedupeSpan(desc)
		spans = append(spans, keySpan{dlo, dhi}, keySpan{rlo, rhi})
	}
	return spans
}

// spanOf is the index of the span that holds k, -1 if none does.
func spanOf(spans []keySpan, k []byte) int {
	for i, sp := range spans {
		if bytes.Compare(k, sp.lo) >= 0 && bytes.Compare(k, sp.hi) < 0 {
			return i
		}
	}
	return -1
}
