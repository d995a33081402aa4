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
	spans := [][2][]byte{}
	mlo, mhi := metaSpan(s.rangeID)
	spans = append(spans, [2][]byte{mlo, mhi})
	if sc.desc != nil {
		dlo, dhi := dataSpan(sc.desc)
		rlo, rhi := dedupeSpan(sc.desc)
		spans = append(spans, [2][]byte{dlo, dhi}, [2][]byte{rlo, rhi})
	}
	n := 0
	for _, sp := range spans {
		it, err := sc.snap.NewIter(&pebble.IterOptions{LowerBound: sp[0], UpperBound: sp[1]})
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
// with the snapshot's in one synced batch, so a crash leaves either the old state or
// the new one. Keys outside the snapshot's spans are refused, so a bad
// snapshot cannot touch a neighbouring range.
func (s *rangeStateMachine) RecoverFromSnapshot(r io.Reader, done <-chan struct{}) error {
	br := bufio.NewReaderSize(r, 256<<10)
	magic := make([]byte, len(snapMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapMagic {
		return fmt.Errorf("range %d: not a bifrost snapshot", s.rangeID)
	}
	tag, fields, err := readRecord(br)
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

	batch := s.engine.db.NewBatch()
	defer batch.Close()
	mlo, mhi := metaSpan(s.rangeID)
	if err := batch.DeleteRange(mlo, mhi, nil); err != nil {
		return err
	}
	// Only the snapshot's own span is replaced. Keys of an older, wider span
	// (the range split since) may belong to a child replica that runs here;
	// if none does they are unreachable, and the child's own snapshot
	// replaces them when it comes.
	var dlo, dhi, rlo, rhi []byte
	if desc != nil {
		dlo, dhi = dataSpan(desc)
		rlo, rhi = dedupeSpan(desc)
		if err := batch.DeleteRange(dlo, dhi, nil); err != nil {
			return err
		}
		if err := batch.DeleteRange(rlo, rhi, nil); err != nil {
			return err
		}
	}
	for n := 0; ; n++ {
		if n%1024 == 0 {
			select {
			case <-done:
				return sm.ErrSnapshotStopped
			default:
			}
		}
		tag, fields, err := readRecord(br)
		if err != nil {
			return fmt.Errorf("range %d: read snapshot: %w", s.rangeID, err)
		}
		if tag == tagEnd {
			break
		}
		if tag != tagPair || len(fields) != 2 {
			return fmt.Errorf("range %d: bad snapshot record %q", s.rangeID, tag)
		}
		k := fields[0]
		inMeta := bytes.Compare(k, mlo) >= 0 && bytes.Compare(k, mhi) < 0
		inData := desc != nil && bytes.Compare(k, dlo) >= 0 && bytes.Compare(k, dhi) < 0
		inDedupe := desc != nil && bytes.Compare(k, rlo) >= 0 && bytes.Compare(k, rhi) < 0
		if !inMeta && !inData && !inDedupe {
			return fmt.Errorf("range %d: snapshot key %x is outside the range", s.rangeID, k)
		}
		if err := batch.Set(k, fields[1], nil); err != nil {
			return err
		}
	}
	if err := batch.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("range %d: commit snapshot: %w", s.rangeID, err)
	}
	cop, err := newCoprocessor(s.coprocessorFor, s.engine.db, desc)
	if err != nil {
		return err
	}
	if err := s.loadDedupeState(s.engine.db, desc); err != nil {
		return err
	}
	s.mu.Lock()
	s.desc, s.applied, s.cop, s.descIndex = desc, applied, cop, applied
	s.mu.Unlock()
	if s.metrics != nil {
		s.metrics.snapshotsRecovered.Inc()
		s.metrics.recovered.Add(1)
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

func readRecord(r *bufio.Reader) (byte, [][]byte, error) {
	tag, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	fields := make([][]byte, n)
	for i := range fields {
		l, err := binary.ReadUvarint(r)
		if err != nil {
			return 0, nil, err
		}
		if l > maxSnapshotField {
			return 0, nil, errors.New("snapshot field too large")
		}
		fields[i] = make([]byte, l)
		if _, err := io.ReadFull(r, fields[i]); err != nil {
			return 0, nil, err
		}
	}
	return tag, fields, nil
}
