package kvstore

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

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
