package kvstore

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/kvstore/bugzoo"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// applier applies the entries of one Update batch. It reads through the
// indexed batch, so an entry sees the writes of the entries before it.
// Everything it does must be deterministic: the same entries on the same
// state give the same writes and results on every replica.
type applier struct {
	rangeID     uint64
	replicaID   uint64
	joined      bool
	batch       *pebble.Batch
	desc        *kvpb.RangeDescriptor
	descChanged bool
	// sync asks for the batch to be fsynced (splits and merges: they write
	// local boot records and tombstones that no log replays).
	sync bool
	// splits are the children created in this batch; merged the right
	// ranges absorbed. The store acts on both after the batch commits.
	splits []*kvpb.RangeDescriptor
	merged []uint64
	// rangeMs is the range's time: the newest stamp (Command.RangeMs) of
	// the commands the range has applied (metaRangeTime), loaded at the
	// start of the batch; the dedupe window is counted on it (rangeClock).
	// loadedRangeMs is the value loaded, to write it back only if it moved.
	rangeMs, loadedRangeMs int64
	// keyedRecords counts the write records (dedupeKey) the batch wrote;
	// metaRecords the metadata records.
	keyedRecords, metaRecords int
	// sweeps counts the SweepDedupe commands the batch applied, swept the
	// records they deleted.
	sweeps, swept int
	// cop is the range's coprocessor and copFor makes a new one (nil: the
	// keyspace has none). copStale says cop's in-memory state no longer
	// matches the batch (the span changed, or a refused command had changed
	// it): cop is rebuilt from the batch before its next use and before the
	// batch commits. copChanged says cop is a new instance, to be published
	// with the descriptor at commit; until then queries keep the old pair.
	cop        Coprocessor
	copFor     func(*kvpb.RangeDescriptor) Coprocessor
	copStale   bool
	copChanged bool
	// beforeSplit is a test hook (FailBeforeSplitApply).
	beforeSplit func()
	// size is the range's size counter, moved by every write (size.go).
	size sizeCounter
}

// errNoDescriptor stops a replica that joined a range and is asked to apply
// data commands with no descriptor: it was given a log that does not start at
// the range's beginning, and applying on would silently diverge.
var errNoDescriptor = errors.New("replica has no descriptor but the log holds data commands: refusing to diverge")

// errJoinedReplay stops a replica added to a range that is sent the range's
// log from its first entry instead of a snapshot: replaying the range's
// history on this store could rewrite keys other ranges own here now (a
// split child's), so it stops rather than corrupt them. AddReplica compacts
// every live replica's log first, so only a replica that was down at the
// add and then led the range can cause this.
var errJoinedReplay = errors.New("replica added to a range was sent the range's log from its beginning, not a snapshot: refusing to replay its history onto this store")

// setDesc changes the descriptor. A new span (the first descriptor, a split,
// a merge) makes the coprocessor stale here, in the middle of the batch: the
// commands after it must see the coprocessor of the new span (a tenant's
// count, say), or replicas whose batches end elsewhere would answer them
// differently.
func (a *applier) setDesc(d *kvpb.RangeDescriptor) {
	if spanChanged(a.desc, d) {
		a.copStale = true
	}
	a.desc = d
	a.descChanged = true
}

// apply runs one entry. The error is for engine failures only.
func (a *applier) apply(data []byte) (*kvpb.CommandResult, error) {
	if len(data) == 0 {
		return &kvpb.CommandResult{}, nil
	}
	cmd := &kvpb.Command{}
	if err := proto.Unmarshal(data, cmd); err != nil {
		return badRequest("undecodable command: " + err.Error()), nil
	}
	if len(cmd.RequestId) > MaxRequestIDSize {
		return requestIDTooLong(len(cmd.RequestId)), nil
	}
	var recKey []byte
	var keyed bool
	if len(cmd.RequestId) > 0 {
		recKey, keyed = a.recordKey(cmd)
	}
	if recKey != nil {
		rec, found, err := get(a.batch, recKey)
		if err != nil {
			return nil, err
		}
		if found {
			dr := &kvpb.DedupeRecord{}
			res := &kvpb.CommandResult{}
			// A record past the window counts as gone whether or not this
			// replica's sweep has deleted it yet: sweeps run at different
			// times on different replicas, the rule does not.
			if proto.Unmarshal(rec, dr) == nil && proto.Unmarshal(dr.Result, res) == nil &&
				dr.RangeMs >= max(a.rangeMs, cmd.RangeMs)-DedupeWindow.Milliseconds() {
				if dr.CommandHash != 0 && dr.CommandHash != commandHash(cmd) {
					return badRequest(fmt.Sprintf("request ID %x was used by another command within the last %v: "+
						"a request ID names one command", cmd.RequestId, DedupeWindow)), nil
				}
				return expandResult(cmd, res), nil
			}
		}
	}
	if a.desc == nil && a.joined {
		if _, isInit := cmd.Payload.(*kvpb.Command_Init); isInit {
			return nil, errJoinedReplay
		}
		return nil, errNoDescriptor
	}
	res, err := a.applyPayload(cmd)
	if err != nil {
		return nil, err
	}
	// Only commands that changed state move the range's time: a frozen
	// range refuses everything, so its mark is the same on every replica
	// when the merge reads it.
	if res.Status == kvpb.Status_STATUS_OK && cmd.RangeMs > a.rangeMs {
		a.rangeMs = cmd.RangeMs
	}
	// Only successful results are remembered: a retry of a refused command
	// (stale version, say) must be able to run once it is routed right.
	if recKey != nil && res.Status == kvpb.Status_STATUS_OK {
		if err := a.remember(recKey, keyed, cmd, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// recordKey returns where the result of a command with a request ID is
// kept. A write's goes under its key (dedupeKey), so that it follows the key
// into a split child or a merged left range, where the router sends the
// retries; it is looked up only if this range holds the key, for otherwise
// the record is another range's and the command is refused anyway. Any
// other command is addressed to this range and is kept in its metadata.
func (a *applier) recordKey(cmd *kvpb.Command) (key []byte, keyed bool) {
	w, isWrite := cmd.Payload.(*kvpb.Command_Write)
	if !isWrite {
		return metaKey(a.rangeID, metaDedupe, cmd.RequestId), false
	}
	if a.desc == nil || len(w.Write.GetOps()) == 0 {
		return nil, false
	}
	k, isScan := OpKey(w.Write.Ops[0])
	if isScan || !ContainsKey(a.desc, k) {
		return nil, false
	}
	return dedupeKey(a.desc.Keyspace, k, cmd.RequestId), true
}

func (a *applier) applyPayload(cmd *kvpb.Command) (*kvpb.CommandResult, error) {
	switch p := cmd.Payload.(type) {
	case *kvpb.Command_Init:
		return a.applyInit(p.Init), nil
	case *kvpb.Command_Write:
		if cmd.SweepDedupe != nil && len(p.Write.GetOps()) == 0 {
			return a.applySweep(cmd, cmd.SweepDedupe)
		}
		return a.applyWrite(cmd.Ver, p.Write)
	case *kvpb.Command_AddReplica:
		return a.applyAddReplicaIntent(cmd.Ver, p.AddReplica), nil
	case *kvpb.Command_SetReplicas:
		return a.applySetReplicas(p.SetReplicas), nil
	case *kvpb.Command_Split:
		return a.applySplit(cmd.Ver, p.Split)
	case *kvpb.Command_PrepareMerge:
		return a.applyPrepareMerge(cmd.Ver, p.PrepareMerge), nil
	case *kvpb.Command_CommitMerge:
		return a.applyCommitMerge(cmd.Ver, p.CommitMerge)
	case *kvpb.Command_FenceMerge:
		return a.applyFence(cmd.Ver), nil
	case *kvpb.Command_Unfreeze:
		return a.applyUnfreeze(cmd.Ver), nil
	case *kvpb.Command_AllocateIds:
		return a.applyAllocate(p.AllocateIds)

	default:
		return badRequest("command without payload"), nil
	}
}

func (a *applier) applyInit(p *kvpb.InitRange) *kvpb.CommandResult {
	if p.GetRange() == nil || p.Range.Id != a.rangeID {
		return badRequest("init carries no descriptor for this range")
	}
	if a.desc != nil {
		if proto.Equal(a.desc, p.Range) {
			return &kvpb.CommandResult{Range: a.desc}
		}
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_BAD_REQUEST, Range: a.desc,
			Message: "range is already initialised"}
	}
	a.setDesc(proto.CloneOf(p.Range))
	return &kvpb.CommandResult{Range: a.desc}
}

func (a *applier) applyWrite(ver uint64, w *kvpb.WriteBatch) (*kvpb.CommandResult, error) {
	if a.desc == nil {
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_RANGE_NOT_READY, Message: "range has no descriptor yet"}, nil
	}
	if res := checkEpoch(a.desc, ver, w.Ops); res != nil {
		return res, nil
	}
	hasCoproc := false
	for _, op := range w.Ops {
		if p, ok := op.Op.(*kvpb.Op_Put); ok && len(p.Put.Value) > MaxValueSize {
			return badRequest(fmt.Sprintf("value of %d bytes exceeds the limit of %d", len(p.Put.Value), MaxValueSize)), nil
		}
		if _, ok := op.Op.(*kvpb.Op_Scan); ok {
			return badRequest("a write may not hold a scan"), nil
		}
		if _, ok := op.Op.(*kvpb.Op_Coproc); ok {
			hasCoproc = true
		}
	}
	// checkEpoch vouched for the ops' keys, not for the keys a coprocessor
	// derives from its input: a command with a coprocessor op stages its
	// writes, so that one refused half-way leaves nothing in the batch.
	var tx Tx = &rangeTx{rangeReader: rangeReader{r: a.batch, desc: a.desc}, batch: a.batch, size: &a.size}
	var staged *stagedTx
	if hasCoproc {
		staged = newStagedTx(a.batch, a.desc)
		staged.size = &a.size
		tx = staged
	}
	// An accepted write's result carries no descriptor (a refusal does):
	// nobody reads it, and it was marshalled twice per put (the reply and
	// the write record) and unmarshalled by every sweep of the records.
	out := &kvpb.CommandResult{Results: make([]*kvpb.OpResult, 0, len(w.Ops))}
	copRan := false
	for _, op := range w.Ops {
		var res *kvpb.OpResult
		var err error
		switch o := op.Op.(type) {
		case *kvpb.Op_Get:
			res = &kvpb.OpResult{}
			res.Value, res.Found, err = tx.Get(o.Get.Key)
		case *kvpb.Op_Put:
			res, err = &kvpb.OpResult{}, tx.Set(o.Put.Key, o.Put.Value)
		case *kvpb.Op_Delete:
			res, err = &kvpb.OpResult{}, tx.Delete(o.Delete.Key)
		case *kvpb.Op_Cas:
			res, err = cas(tx, o.Cas)
		case *kvpb.Op_Coproc:
			cop, cerr := a.coprocessor()
			if cerr != nil {
				return nil, cerr
			}
			if cop == nil {
				return badRequest(fmt.Sprintf("keyspace %s has no coprocessor", a.desc.Keyspace)), nil
			}
			var v []byte
			v, err = cop.Mutate(tx, o.Coproc.Input)
			if errors.Is(err, ErrKeyNotInRange) {
				// The same on every replica: the staged writes are dropped,
				// and memory an earlier op of the command changed is rebuilt.
				a.copStale = a.copStale || copRan
				return &kvpb.CommandResult{Status: kvpb.Status_STATUS_KEY_NOT_IN_RANGE, Range: a.desc,
					Message: fmt.Sprintf("range %d: coprocessor: %v", a.desc.Id, err)}, nil
			}
			if err != nil {
				return nil, fmt.Errorf("coprocessor: %w", err)
			}
			copRan = true
			res = &kvpb.OpResult{Value: v}
		default:
			return badRequest("empty operation"), nil
		}
		if err != nil {
			return nil, err
		}
		out.Results = append(out.Results, res)
	}
	if staged != nil {
		if err := staged.flush(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// coprocessor returns the range's coprocessor, made or rebuilt from the
// batch if need be.
func (a *applier) coprocessor() (Coprocessor, error) {
	if (a.cop == nil || a.copStale) && a.copFor != nil {
		if err := a.rebuildCoprocessor(); err != nil {
			return nil, err
		}
	}
	return a.cop, nil
}

// rebuildCoprocessor makes a new coprocessor for the descriptor and fills
// it from the batch, which holds every entry applied so far.
func (a *applier) rebuildCoprocessor() error {
	cop, err := newCoprocessor(a.copFor, a.batch, a.desc)
	if err != nil {
		return err
	}
	a.cop, a.copStale, a.copChanged = cop, false, true
	return nil
}

func cas(tx Tx, c *kvpb.CasOp) (*kvpb.OpResult, error) {
	cur, found, err := tx.Get(c.Key)
	if err != nil {
		return nil, err
	}
	match := (c.ExpectAbsent && !found) || (!c.ExpectAbsent && found && bytes.Equal(cur, c.Expected))
	res := &kvpb.OpResult{Found: found, Value: cur, CasOk: match}
	if !match {
		return res, nil
	}
	if c.Delete {
		return res, tx.Delete(c.Key)
	}
	if len(c.NewValue) > MaxValueSize {
		res.CasOk = false
		return res, nil
	}
	return res, tx.Set(c.Key, c.NewValue)
}

func (a *applier) applyAddReplicaIntent(ver uint64, p *kvpb.AddReplicaIntent) *kvpb.CommandResult {
	d := a.desc
	if d == nil {
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_RANGE_NOT_READY}
	}
	// The add was prepared (every log compacted) at version ver: a split or
	// merge since then is in logs the new replica could be sent.
	if ver != 0 && ver != d.Ver {
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_EPOCH_NOT_MATCH, Range: d,
			Message: fmt.Sprintf("range %d is at version %d, the add was prepared at %d", d.Id, d.Ver, ver)}
	}
	if d.State != kvpb.RangeState_RANGE_STATE_NORMAL {
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_CONF_CHANGE_REFUSED, Range: d,
			Message: fmt.Sprintf("range %d is %s", d.Id, stateName(d.State))}
	}
	if d.Pending != nil {
		if d.Pending.StoreId == p.StoreId {
			return &kvpb.CommandResult{Range: d, ReplicaId: d.Pending.ReplicaId}
		}
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_CONF_CHANGE_REFUSED, Range: d,
			Message: fmt.Sprintf("range %d is already adding a replica on store %d", d.Id, d.Pending.StoreId)}
	}
	for _, r := range d.Replicas {
		if r.StoreId == p.StoreId {
			return &kvpb.CommandResult{Status: kvpb.Status_STATUS_CONF_CHANGE_REFUSED, Range: d,
				Message: fmt.Sprintf("store %d already holds replica %d of range %d", p.StoreId, r.ReplicaId, d.Id)}
		}
	}
	n := proto.CloneOf(d)
	id := n.NextReplicaId
	n.NextReplicaId++
	n.ConfVer++
	n.Pending = &kvpb.Replica{ReplicaId: id, StoreId: p.StoreId, RaftAddr: p.RaftAddr}
	a.setDesc(n)
	return &kvpb.CommandResult{Range: n, ReplicaId: id}
}

func (a *applier) applySetReplicas(p *kvpb.SetReplicas) *kvpb.CommandResult {
	d := a.desc
	if d == nil {
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_RANGE_NOT_READY}
	}
	if p.ConfVer != d.ConfVer {
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_EPOCH_NOT_MATCH, Range: d,
			Message: fmt.Sprintf("range %d is at conf version %d, command has %d", d.Id, d.ConfVer, p.ConfVer)}
	}
	if len(p.Replicas) == 0 {
		return badRequest("a range needs at least one replica")
	}
	// A range in a split or merge keeps its replicas: a merge commits on
	// the left range only where the frozen right range's replica holds the
	// frozen descriptor, so a change here would commit it on some stores
	// and not on others. Refused alike on every replica.
	if d.State != kvpb.RangeState_RANGE_STATE_NORMAL {
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_CONF_CHANGE_REFUSED, Range: d,
			Message: fmt.Sprintf("range %d is %s: its replicas cannot change", d.Id, stateName(d.State))}
	}
	n := proto.CloneOf(d)
	n.Replicas = p.Replicas
	n.Pending = nil
	n.ConfVer++
	for _, r := range p.Replicas {
		if r.ReplicaId >= n.NextReplicaId {
			n.NextReplicaId = r.ReplicaId + 1
		}
	}
	a.setDesc(n)
	return &kvpb.CommandResult{Range: n}
}

func (a *applier) remember(key []byte, keyed bool, cmd *kvpb.Command, res *kvpb.CommandResult) error {
	data, err := proto.Marshal(compactResult(cmd, res))
	if err != nil {
		return err
	}
	// The record is stamped with the range's time, not the command's stamp:
	// a store that lags behind stamps low, and its records must not look old.
	stamp := a.rangeMs
	if bugzoo.WallClockDedupe {
		stamp = cmd.RangeMs
	}
	rec, err := proto.Marshal(&kvpb.DedupeRecord{RangeMs: stamp, Result: data, CommandHash: commandHash(cmd)})
	if err != nil {
		return err
	}
	if err := a.batch.Set(key, rec, nil); err != nil {
		return err
	}
	if keyed {
		a.keyedRecords++
		return nil
	}
	a.metaRecords++
	return a.batch.Set(metaKey(a.rangeID, metaDedupeTime, u64(uint64(stamp)), cmd.RequestId), nil, nil)
}

// gcDedupe drops the range's own (metadata) dedupe records older than the
// window, judged by the range's time (rangeMs), a bounded
// number per batch.
func (a *applier) gcDedupe() error {
	cutoff := a.rangeMs - DedupeWindow.Milliseconds()
	if cutoff <= 0 {
		return nil
	}
	lo := metaKey(a.rangeID, metaDedupeTime)
	hi := metaKey(a.rangeID, metaDedupeTime, u64(uint64(cutoff)))
	it, err := a.batch.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	var dead [][]byte
	for it.First(); it.Valid() && len(dead) < 256; it.Next() {
		dead = append(dead, append([]byte(nil), it.Key()...))
	}
	if err := it.Close(); err != nil {
		return err
	}
	for _, k := range dead {
		reqID := k[len(lo)+8:]
		if err := a.batch.Delete(metaKey(a.rangeID, metaDedupe, reqID), nil); err != nil {
			return err
		}
		if err := a.batch.Delete(k, nil); err != nil {
			return err
		}
	}
	return nil
}

// recordIssued reads a write record's issue time (DedupeRecord field 1)
// without unmarshalling the result it holds: the sweep reads many records
// per batch.
func recordIssued(b []byte) (int64, bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, false
		}
		b = b[n:]
		if num == 1 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, false
			}
			return int64(v), true
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return 0, false
		}
		b = b[n:]
	}
	return 0, true // field 1 absent: issued at 0
}

// Bounds of one sweep of a range's write records: a base, and more per record
// the batch wrote. Visiting four times as many records as are written goes
// round the span in about a quarter of the window, so a record outlives its
// window by about a third of it.
const (
	sweepBase      = 16
	sweepPerRecord = 4
	// sweepEvery is how many records are written between two sweeps.
	sweepEvery = 64
)

// sweepDedupe drops write records older than the window (judged as gcDedupe
// does) from the range's span. The records are in key order, not time order,
// so it visits a bounded number per batch from where the last sweep stopped,
// going round the span; next is where the next sweep starts (nil: at the
// beginning). Only batches that wrote records sweep.
func (a *applier) sweepDedupe(from []byte, records int) (next []byte, err error) {
	cutoff := a.rangeMs - DedupeWindow.Milliseconds()
	if cutoff <= 0 || a.desc == nil || records == 0 {
		return from, nil
	}
	lo, hi := dedupeSpan(a.desc)
	if bytes.Compare(from, lo) < 0 || bytes.Compare(from, hi) >= 0 {
		from = lo
	}
	it, err := a.batch.NewIter(&pebble.IterOptions{LowerBound: from, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	var dead [][]byte
	budget := sweepBase + sweepPerRecord*records
	for it.First(); it.Valid() && budget > 0; it.Next() {
		budget--
		if issued, ok := recordIssued(it.Value()); !ok || issued < cutoff {
			dead = append(dead, append([]byte(nil), it.Key()...))
		}
	}
	if it.Valid() {
		next = append([]byte(nil), it.Key()...)
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	for _, k := range dead {
		if err := a.batch.Delete(k, nil); err != nil {
			return nil, err
		}
	}
	return next, nil
}
