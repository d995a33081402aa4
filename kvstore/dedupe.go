package kvstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// MaxRequestIDSize bounds a command's request ID: it is part of the key of
// the dedupe record a write leaves, and of the range's metadata for other
// commands. The router's IDs are 16 bytes.
const MaxRequestIDSize = 64

// requestIDTooLong refuses a command for its request ID.
func requestIDTooLong(n int) *kvpb.CommandResult {
	return badRequest(fmt.Sprintf("request ID of %d bytes exceeds the limit of %d", n, MaxRequestIDSize))
}

// commandHash identifies what a command asks, so that a request ID reused by
// another command within the dedupe window is refused instead of answered
// with the first command's result. It covers the payload only: a retry is
// restamped (range_ms) and may be routed with a newer version (ver). The
// router's retries keep it equal: a command whose outcome is unknown is
// resent unchanged, and the ops of one refused are planned again with
// fewer ops under the same ID only when the refusal said nothing applied,
// so no record holds the ID (ranges.Router.WriteBatch). A write's ops are
// hashed field by field, which no encoder change can move; other commands
// are few and hashed in their deterministic encoding. Never 0 (0 marks a
// record written before hashes were kept).
func commandHash(cmd *kvpb.Command) uint64 {
	h := sha256.New()
	field := func(b []byte) {
		h.Write(binary.AppendUvarint(nil, uint64(len(b))))
		h.Write(b)
	}
	flag := func(v bool) {
		if v {
			h.Write([]byte{1})
		} else {
			h.Write([]byte{0})
		}
	}
	if w, ok := cmd.Payload.(*kvpb.Command_Write); ok {
		h.Write([]byte{'w'})
		for _, op := range w.Write.GetOps() {
			switch o := op.Op.(type) {
			case *kvpb.Op_Get:
				h.Write([]byte{'g'})
				field(o.Get.Key)
			case *kvpb.Op_Put:
				h.Write([]byte{'p'})
				field(o.Put.Key)
				field(o.Put.Value)
			case *kvpb.Op_Delete:
				h.Write([]byte{'d'})
				field(o.Delete.Key)
			case *kvpb.Op_Cas:
				h.Write([]byte{'c'})
				field(o.Cas.Key)
				field(o.Cas.Expected)
				flag(o.Cas.ExpectAbsent)
				field(o.Cas.NewValue)
				flag(o.Cas.Delete)
			case *kvpb.Op_Coproc:
				h.Write([]byte{'x'})
				field(o.Coproc.Key)
				field(o.Coproc.Input)
			default: // refused at apply (a scan, an empty op); still told apart
				b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(op)
				h.Write([]byte{'?'})
				field(b)
			}
		}
	} else {
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&kvpb.Command{Payload: cmd.Payload})
		h.Write([]byte{'o'})
		field(b)
	}
	sum := binary.BigEndian.Uint64(h.Sum(nil))
	if sum == 0 {
		sum = 1
	}
	return sum
}

// compactResult is what a write's record keeps of its result: only what a
// retry needs to get the same answer. A successful CAS's value is the value
// it expected, which the retry carries (expandResult puts it back); its
// found flag follows from the same. A failed CAS keeps the value it found,
// for that is its answer. Gets and coprocessor outputs are kept whole. A
// write's result carries no descriptor.
func compactResult(cmd *kvpb.Command, res *kvpb.CommandResult) *kvpb.CommandResult {
	w, ok := cmd.Payload.(*kvpb.Command_Write)
	if !ok {
		return res
	}
	out := &kvpb.CommandResult{Status: res.Status, Message: res.Message, Results: make([]*kvpb.OpResult, len(res.Results))}
	for i, r := range res.Results {
		out.Results[i] = r
		if i < len(w.Write.Ops) && w.Write.Ops[i].GetCas() != nil && r.CasOk {
			out.Results[i] = &kvpb.OpResult{CasOk: true}
		}
	}
	return out
}

// expandResult turns a write's record back into the answer the first
// attempt got (compactResult).
func expandResult(cmd *kvpb.Command, res *kvpb.CommandResult) *kvpb.CommandResult {
	w, ok := cmd.Payload.(*kvpb.Command_Write)
	if !ok {
		return res
	}
	for i, r := range res.Results {
		if i >= len(w.Write.Ops) {
			break
		}
		if c := w.Write.Ops[i].GetCas(); c != nil && r.CasOk {
			r.Found, r.Value = !c.ExpectAbsent, nil
			if !c.ExpectAbsent {
				r.Value = c.Expected
			}
		}
	}
	return res
}

// applySweep deletes the expired records a SweepDedupe names. It is
// refused where an empty write would be, for an older build applies it as
// one (Command.sweep_dedupe); a frozen range's time must not move
// (applyCommitMerge reads it). The range's time moves to the sweep's stamp
// first: an idle range's records expire by the time that has passed since
// its last write. Every replica deletes every expired record in the span
// the command names, so they are left alike.
func (a *applier) applySweep(cmd *kvpb.Command, p *kvpb.SweepDedupe) (*kvpb.CommandResult, error) {
	d := a.desc
	if d == nil {
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_RANGE_NOT_READY, Message: "range has no descriptor yet"}, nil
	}
	if res := checkEpoch(d, cmd.Ver, nil); res != nil {
		return res, nil
	}
	a.rangeMs = max(a.rangeMs, cmd.RangeMs)
	cutoff := a.rangeMs - DedupeWindow.Milliseconds()
	if err := a.gcDedupe(); err != nil {
		return nil, err
	}
	// Metadata records left (live, or more expired than one gc takes).
	mlo := metaKey(a.rangeID, metaDedupeTime)
	left, err := anyKey(a.batch, mlo, prefixEnd(mlo))
	if err != nil {
		return nil, err
	}
	lo, hi := dedupeSpan(d)
	if bytes.Compare(p.From, lo) > 0 {
		lo = p.From
	}
	if len(p.To) > 0 && bytes.Compare(p.To, hi) < 0 {
		hi = p.To
	}
	if bytes.Compare(lo, hi) >= 0 {
		a.sweeps++
		return &kvpb.CommandResult{DedupeLeft: left}, nil
	}
	it, err := a.batch.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	var dead [][]byte
	for it.First(); it.Valid(); it.Next() {
		if ms, ok := recordIssued(it.Value()); !ok || ms < cutoff {
			dead = append(dead, append([]byte(nil), it.Key()...))
		} else {
			left = true
		}
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	for _, k := range dead {
		if err := a.batch.Delete(k, nil); err != nil {
			return nil, err
		}
	}
	a.sweeps++
	a.swept += len(dead)
	return &kvpb.CommandResult{DedupeLeft: left}, nil
}

// anyKey reports whether r holds a key in [lo, hi).
func anyKey(r pebble.Reader, lo, hi []byte) (bool, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return false, err
	}
	found := it.First()
	return found, it.Close()
}

// prefixEnd is the first key after every key that starts with p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// sweepSpanRecords is how many write records one SweepDedupe visits, about.
const sweepSpanRecords = 1024

// DefaultDedupeSweepInterval is Config.DedupeSweepInterval's default.
const DefaultDedupeSweepInterval = time.Minute

// sweepLoop proposes, every interval, a pass of SweepDedupes over each range
// this store leads whose replica here may hold dedupe records, so that
// expired records go even from ranges that see no more writes (the sweep in
// Update runs only on writes).
func (s *Store) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.DedupeSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.RLock()
		due := make([]*rangeStateMachine, 0, len(s.replicas))
		for _, r := range s.replicas {
			if r.recordsWritten.Load() != r.sweptAt.Load() {
				due = append(due, r)
			}
		}
		s.mu.RUnlock()
		for _, r := range due {
			if ctx.Err() != nil {
				return
			}
			if !s.IsLeader(r.rangeID) {
				continue
			}
			if err := s.sweepRange(ctx, r); err != nil {
				s.log.Debug("dedupe sweep", "range", r.rangeID, "err", err)
			}
		}
	}
}

// sweepRange proposes one pass of SweepDedupes over the range's span, each
// naming a span of about sweepSpanRecords records of the local replica. A
// pass that leaves no record marks the replica swept, unless records were
// written meanwhile.
func (s *Store) sweepRange(ctx context.Context, r *rangeStateMachine) error {
	written := r.recordsWritten.Load()
	desc := r.Descriptor()
	if desc == nil || desc.State != kvpb.RangeState_RANGE_STATE_NORMAL {
		return nil
	}
	lo, hi := dedupeSpan(desc)
	left := false
	for from := lo; ; {
		to, err := s.engine.nthKey(from, hi, sweepSpanRecords)
		if err != nil {
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := s.Propose(pctx, desc.Id, &kvpb.Command{Ver: desc.Ver,
			Payload:     &kvpb.Command_Write{Write: &kvpb.WriteBatch{}},
			SweepDedupe: &kvpb.SweepDedupe{From: from, To: to}})
		cancel()
		if err != nil {
			return err
		}
		if res.Status != kvpb.Status_STATUS_OK {
			return nil // the range changed: the next round sweeps it as it is then
		}
		left = left || res.DedupeLeft
		if to == nil {
			break
		}
		from = to
	}
	if !left {
		r.sweptAt.Store(written)
	}
	return nil
}

// nthKey returns the key n keys after from in [from, hi), nil if there are
// not that many.
func (e *Engine) nthKey(from, hi []byte, n int) ([]byte, error) {
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: from, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	var key []byte
	i := 0
	for it.First(); it.Valid(); it.Next() {
		if i == n {
			key = append([]byte(nil), it.Key()...)
			break
		}
		i++
	}
	return key, it.Close()
}
