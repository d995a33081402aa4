package kvstore

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/kvstore/bugzoo"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// DedupeWindow is how long the result of a write with a request ID is kept,
// counted on the range's own time (rangeClock), which nodes' wall clocks do
// not move. A retry after the window may apply twice.
const DedupeWindow = 10 * time.Minute

// Limits on one command's keys and values.
const (
	MaxKeySize   = 4 << 10
	MaxValueSize = 8 << 20
	MaxScanLimit = 1000
	// MaxScanBytes bounds the keys and values of one scan result (one pair
	// at least, whatever its size): 1,000 pairs of 8 MiB would be 8 GB, and
	// a result over the gRPC message limit between stores (MaxValueSize
	// plus 1 MiB) fails every retry.
	MaxScanBytes = 4 << 20
)

// rangeStateMachine is the Dragonboat on-disk state machine of one replica.
// Update runs on one goroutine; Lookup and SaveSnapshot run concurrently with
// it, so the descriptor and applied index are read under mu.
type rangeStateMachine struct {
	engine    *Engine
	rangeID   uint64
	replicaID uint64
	metrics   *Metrics
	// joined is set for a replica added to an existing range.
	joined bool
	// onDescriptor is called after a batch that changed the descriptor commits.
	onDescriptor func(rangeID uint64, d *kvpb.RangeDescriptor)
	// onSplit and onMerged are called after a batch that split the range or
	// absorbed a right neighbour commits; onSnapshot after a snapshot is
	// installed. They must not block: the store acts on another goroutine.
	onSplit    func(child *kvpb.RangeDescriptor)
	onMerged   func(rightID uint64)
	onSnapshot func(d *kvpb.RangeDescriptor)
	// beforeSend, if set, is called as a snapshot starts to stream to
	// another replica (a test hook: FailBeforeSnapshotSend); beforeSplit
	// before a split applies (FailBeforeSplitApply).
	beforeSend  func()
	beforeSplit func()
	// admitSnapshot, if set, returns once the snapshot of a descriptor may
	// be installed on the store (Store.admitSnapshot), or an error to stop.
	admitSnapshot func(d *kvpb.RangeDescriptor, done <-chan struct{}) error
	// coprocessorFor makes the coprocessor of the range's keyspace (nil: none).
	coprocessorFor func(d *kvpb.RangeDescriptor) Coprocessor

	// sweepFrom is where the next sweep of expired write records starts
	// (sweepDedupe); only Update uses it.
	sweepFrom []byte
	// unswept counts the write records applied since the last sweep.
	unswept int
	// clock is this store's estimate of the range's time, which Propose
	// stamps commands with; now reads the monotonic clock it runs on (nil:
	// time.Now; tests advance the store's).
	clock rangeClock
	now   func() time.Time
	// recordsWritten counts the batches that wrote dedupe records or merged
	// a range (and an open or snapshot that found some); sweptAt is its value when a sweep
	// pass last left none. The store's sweep loop visits the replicas where
	// they differ.
	recordsWritten, sweptAt atomic.Uint64

	closed    chan struct{}
	closeOnce sync.Once

	mu      sync.RWMutex
	desc    *kvpb.RangeDescriptor
	applied uint64
	cop     Coprocessor
	// descIndex is an index at or after the entry that made desc (the last
	// of its batch, or the applied index at open and at a snapshot): a
	// snapshot at or past it holds the range as desc describes it.
	descIndex uint64
	// bytes is the range's size as of applied (metaBytes, size.go).
	bytes uint64
}

// newCoprocessor makes a coprocessor for the descriptor and fills it from r
// (nil: the keyspace has none). It is built aside and published with the
// descriptor it was built for, under mu, so that a query never sees an index
// half built, or one of another span than its descriptor's.
func newCoprocessor(factory func(*kvpb.RangeDescriptor) Coprocessor, r pebble.Reader, desc *kvpb.RangeDescriptor) (Coprocessor, error) {
	if desc == nil || factory == nil {
		return nil, nil
	}
	cop := factory(desc)
	if cop == nil {
		return nil, nil
	}
	if err := cop.Reset(&rangeReader{r: r, desc: desc}); err != nil {
		return nil, fmt.Errorf("range %d: reset coprocessor: %w", desc.Id, err)
	}
	return cop, nil
}

// spanChanged reports whether a descriptor change moved the range's bounds
// (or is the first descriptor), which needs a new coprocessor.
func spanChanged(old, cur *kvpb.RangeDescriptor) bool {
	return old == nil || string(old.Start) != string(cur.Start) || string(old.End) != string(cur.End)
}

var _ sm.IOnDiskStateMachine = (*rangeStateMachine)(nil)

func (s *rangeStateMachine) Open(stopc <-chan struct{}) (uint64, error) {
	db := s.engine.db
	var applied uint64
	if v, ok, err := get(db, metaKey(s.rangeID, metaApplied)); err != nil {
		return 0, err
	} else if ok {
		// A corrupt index must stop the replica: read as 0 (as it was),
		// Dragonboat would replay the whole log over applied state.
		if applied, err = readU64(v); err != nil {
			return 0, fmt.Errorf("range %d: corrupt applied index: %w", s.rangeID, err)
		}
	}
	v, ok, err := get(db, metaKey(s.rangeID, metaDescriptor))
	if err != nil {
		return 0, err
	}
	var desc *kvpb.RangeDescriptor
	if ok {
		desc = &kvpb.RangeDescriptor{}
		if err := proto.Unmarshal(v, desc); err != nil {
			return 0, fmt.Errorf("range %d: corrupt descriptor: %w", s.rangeID, err)
		}
	}
	cop, err := newCoprocessor(s.coprocessorFor, db, desc)
	if err != nil {
		return 0, err
	}
	if err := s.loadDedupeState(db, desc); err != nil {
		return 0, err
	}
	size, err := s.openSize(desc)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	s.desc, s.applied, s.cop, s.descIndex, s.bytes = desc, applied, cop, applied, size
	s.mu.Unlock()
	if desc != nil && s.onDescriptor != nil {
		s.onDescriptor(s.rangeID, desc)
	}
	return applied, nil
}

// openSize reads the range's size counter, or, for a replica that has none
// (its data was written before the counter existed), measures its span once
// and writes the counter.
func (s *rangeStateMachine) openSize(desc *kvpb.RangeDescriptor) (uint64, error) {
	db := s.engine.db
	v, ok, err := get(db, metaKey(s.rangeID, metaBytes))
	if err != nil || desc == nil {
		return 0, err
	}
	if ok {
		if n, err := readU64(v); err == nil {
			return n, nil
		}
	}
	lo, hi := dataSpan(desc)
	n, err := spanBytes(db, lo, hi)
	if err != nil {
		return 0, err
	}
	if s.metrics != nil {
		s.metrics.scans.Add(1)
	}
	// Not synced: if lost, the next open measures again.
	if err := db.Set(metaKey(s.rangeID, metaBytes), u64(n), pebble.NoSync); err != nil {
		return 0, err
	}
	return n, nil
}

// Bytes returns the range's size as of the last applied index.
func (s *rangeStateMachine) Bytes() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.bytes
}

// loadDedupeState anchors the range's clock at the time the engine holds
// for the range, and marks the replica for the sweep loop if it holds
// dedupe records (at open and after a snapshot).
func (s *rangeStateMachine) loadDedupeState(r pebble.Reader, desc *kvpb.RangeDescriptor) error {
	v, found, err := get(r, metaKey(s.rangeID, metaRangeTime))
	if err != nil {
		return err
	}
	var ms int64
	if found && len(v) == 8 {
		ms = int64(decodeU64(v))
	}
	s.clock.observe(ms, s.clockNow())
	mlo := metaKey(s.rangeID, metaDedupeTime)
	records, err := anyKey(r, mlo, prefixEnd(mlo))
	if err != nil {
		return err
	}
	if !records && desc != nil {
		lo, hi := dedupeSpan(desc)
		if records, err = anyKey(r, lo, hi); err != nil {
			return err
		}
	}
	if records {
		s.recordsWritten.Add(1)
	}
	return nil
}

func (s *rangeStateMachine) clockNow() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// readU64 decodes a big-endian uint64 that must be there whole.
func readU64(v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("%d bytes, want 8", len(v))
	}
	return decodeU64(v), nil
}

func decodeU64(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return uint64(v[0])<<56 | uint64(v[1])<<48 | uint64(v[2])<<40 | uint64(v[3])<<32 |
		uint64(v[4])<<24 | uint64(v[5])<<16 | uint64(v[6])<<8 | uint64(v[7])
}

// Descriptor returns the replica's current descriptor (nil before init).
func (s *rangeStateMachine) Descriptor() *kvpb.RangeDescriptor {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.desc
}

// Applied returns the last applied index.
func (s *rangeStateMachine) Applied() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// Update applies a batch of committed entries in one Pebble batch. Only an
// engine failure returns an error, which stops the process: a partial write
// must never be acknowledged.
func (s *rangeStateMachine) Update(entries []sm.Entry) ([]sm.Entry, error) {
	if len(entries) == 0 {
		return entries, nil
	}
	start := time.Now()
	batch := s.engine.db.NewIndexedBatch()
	defer batch.Close()
	s.mu.RLock()
	a := applier{rangeID: s.rangeID, replicaID: s.replicaID, joined: s.joined, batch: batch, desc: s.desc,
		cop: s.cop, copFor: s.coprocessorFor, beforeSplit: s.beforeSplit}
	loadedBytes := s.bytes
	a.size = sizeCounter{r: batch, db: s.engine.db, bytes: int64(loadedBytes)}
	s.mu.RUnlock()
	if v, found, err := get(batch, metaKey(s.rangeID, metaRangeTime)); err != nil {
		return nil, err
	} else if found && len(v) == 8 {
		a.rangeMs = int64(decodeU64(v))
		a.loadedRangeMs = a.rangeMs
	}
	for i := range entries {
		res, err := a.apply(entries[i].Cmd)
		if err != nil {
			return nil, fmt.Errorf("range %d: apply entry %d: %w", s.rangeID, entries[i].Index, err)
		}
		data, err := proto.Marshal(res)
		if err != nil {
			return nil, err
		}
		entries[i].Result = sm.Result{Value: uint64(res.Status), Data: data}
	}
	if a.copStale && a.copFor != nil {
		if err := a.rebuildCoprocessor(); err != nil {
			return nil, err
		}
	}
	if err := a.gcDedupe(); err != nil {
		return nil, fmt.Errorf("range %d: dedupe gc: %w", s.rangeID, err)
	}
	// The records written since the last sweep are swept for at once,
	// every sweepEvery of them: a sweep's iterator costs about as much as
	// the puts of a small batch.
	unswept := s.unswept + a.keyedRecords
	sweepNext := s.sweepFrom
	if unswept >= sweepEvery {
		var err error
		if sweepNext, err = a.sweepDedupe(s.sweepFrom, unswept); err != nil {
			return nil, fmt.Errorf("range %d: dedupe sweep: %w", s.rangeID, err)
		}
		unswept = 0
	}
	last := entries[len(entries)-1].Index
	if err := batch.Set(metaKey(s.rangeID, metaApplied), u64(last), nil); err != nil {
		return nil, err
	}
	if a.rangeMs != a.loadedRangeMs {
		if err := batch.Set(metaKey(s.rangeID, metaRangeTime), u64(uint64(a.rangeMs)), nil); err != nil {
			return nil, err
		}
	}
	size := a.size.current()
	// Written with the first descriptor too, so that a replica that has
	// never been written to does not measure its span when it opens.
	if size != loadedBytes || a.descChanged {
		if err := batch.Set(metaKey(s.rangeID, metaBytes), u64(size), nil); err != nil {
			return nil, err
		}
	}
	if a.descChanged {
		b, err := proto.Marshal(a.desc)
		if err != nil {
			return nil, err
		}
		if err := batch.Set(metaKey(s.rangeID, metaDescriptor), b, nil); err != nil {
			return nil, err
		}
	}
	// No fsync: the Raft log is synced and replays what a crash loses; Sync()
	// makes the engine durable before Dragonboat compacts that log. Splits
	// and merges sync: their local boot records and tombstones are not in
	// any log.
	opts := pebble.NoSync
	if a.sync {
		opts = pebble.Sync
	}
	if err := batch.Commit(opts); err != nil {
		return nil, fmt.Errorf("range %d: commit apply batch: %w", s.rangeID, err)
	}
	s.sweepFrom, s.unswept = sweepNext, unswept
	s.clock.observe(a.rangeMs, s.clockNow())
	if a.keyedRecords+a.metaRecords > 0 || len(a.merged) > 0 { // a merge brings the right's records
		s.recordsWritten.Add(1)
	}
	s.mu.Lock()
	s.desc, s.applied, s.bytes = a.desc, last, size
	if a.descChanged {
		s.descIndex = last
	}
	if a.copChanged {
		s.cop = a.cop
	}
	s.mu.Unlock()
	if s.metrics != nil {
		s.metrics.applyLatency.Observe(time.Since(start).Seconds())
		s.metrics.appliedEntries.Add(float64(len(entries)))
		s.metrics.scans.Add(uint64(a.size.scans))
		s.metrics.dedupeSweeps.Add(float64(a.sweeps))
		s.metrics.sweepsApplied.Add(uint64(a.sweeps))
		s.metrics.dedupeSwept.Add(float64(a.swept))
	}
	for _, child := range a.splits {
		if s.onSplit != nil {
			s.onSplit(child)
		}
	}
	for _, id := range a.merged {
		if s.onMerged != nil {
			s.onMerged(id)
		}
	}
	if a.descChanged && s.onDescriptor != nil {
		s.onDescriptor(s.rangeID, a.desc)
	}
	return entries, nil
}

// Lookup serves a read query on the replica's current state. Through
// SyncRead it runs after a ReadIndex, so the checks below see a state at
// least as new as the read's start.
func (s *rangeStateMachine) Lookup(q any) (any, error) {
	query, ok := q.(*kvpb.Query)
	if !ok {
		return nil, fmt.Errorf("unexpected query type %T", q)
	}
	s.mu.RLock()
	desc, cop := s.desc, s.cop
	s.mu.RUnlock()
	if !oneRead(query) {
		// Several reads (ops, or a coprocessor's Gets and Iterates) see one
		// state: an entry applied meanwhile is seen by all or none.
		snap := s.engine.db.NewSnapshot()
		defer snap.Close()
		return readQuery(snap, desc, cop, query), nil
	}
	return readQuery(s.engine.db, desc, cop, query), nil
}

// oneRead reports whether the query reads the engine once: a single get, or
// a single scan (an iterator reads one state of its own).
func oneRead(q *kvpb.Query) bool {
	if len(q.Ops) != 1 {
		return len(q.Ops) == 0
	}
	switch q.Ops[0].Op.(type) {
	case *kvpb.Op_Get, *kvpb.Op_Scan:
		return true
	}
	return false
}

func readQuery(r pebble.Reader, desc *kvpb.RangeDescriptor, cop Coprocessor, q *kvpb.Query) *kvpb.CommandResult {
	if desc == nil {
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_RANGE_NOT_READY, Message: "range has no descriptor yet"}
	}
	if q.DescriptorOnly {
		return &kvpb.CommandResult{Range: desc}
	}
	if res := checkEpoch(desc, q.Ver, q.Ops); res != nil {
		return res
	}
	out := &kvpb.CommandResult{Range: desc, Results: make([]*kvpb.OpResult, 0, len(q.Ops))}
	for _, op := range q.Ops {
		var res *kvpb.OpResult
		var err error
		switch o := op.Op.(type) {
		case *kvpb.Op_Get:
			res, err = readGet(r, desc.Keyspace, o.Get.Key)
		case *kvpb.Op_Scan:
			res, err = readScan(r, desc, o.Scan)
		case *kvpb.Op_Coproc:
			if cop == nil {
				return badRequest(fmt.Sprintf("keyspace %s has no coprocessor", desc.Keyspace))
			}
			var out []byte
			out, err = cop.Query(&rangeReader{r: r, desc: desc}, o.Coproc.Input)
			res = &kvpb.OpResult{Value: out}
		default:
			return badRequest("a query may hold only get and scan operations")
		}
		if err != nil {
			// A read error is the engine's; the caller sees it, nothing was written.
			return &kvpb.CommandResult{Status: kvpb.Status_STATUS_BAD_REQUEST, Message: "read failed: " + err.Error()}
		}
		out.Results = append(out.Results, res)
	}
	return out
}

func readGet(r pebble.Reader, ks kvpb.Keyspace, key []byte) (*kvpb.OpResult, error) {
	v, found, err := get(r, DataKey(ks, key))
	if err != nil {
		return nil, err
	}
	return &kvpb.OpResult{Found: found, Value: v}, nil
}

func readScan(r pebble.Reader, desc *kvpb.RangeDescriptor, op *kvpb.ScanOp) (*kvpb.OpResult, error) {
	limit := int(op.Limit)
	if limit <= 0 || limit > MaxScanLimit {
		limit = MaxScanLimit
	}
	start := op.Start
	if bytes.Compare(start, desc.Start) < 0 {
		start = desc.Start
	}
	end := op.End
	clippedByRange := false
	if len(desc.End) > 0 && (len(end) == 0 || bytes.Compare(end, desc.End) > 0) {
		end = desc.End
		clippedByRange = true
	}
	lo := DataKey(desc.Keyspace, start)
	var hi []byte
	if len(end) == 0 {
		hi = []byte{prefixData, byte(desc.Keyspace) + 1}
	} else {
		hi = DataKey(desc.Keyspace, end)
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	res := &kvpb.OpResult{}
	size, maxBytes, strict := 0, MaxScanBytes, op.MaxBytes > 0
	if strict {
		maxBytes = int(min(op.MaxBytes, MaxScanBytes))
	}
	for it.First(); it.Valid(); it.Next() {
		if len(res.Pairs) == limit || (strict || len(res.Pairs) > 0) && size+len(it.Key())+len(it.Value()) > maxBytes {
			res.More = true
			res.NextKey = append([]byte(nil), it.Key()[2:]...)
			return res, it.Error()
		}
		size += len(it.Key()) + len(it.Value())
		res.Pairs = append(res.Pairs, &kvpb.KVPair{
			Key:   append([]byte(nil), it.Key()[2:]...),
			Value: append([]byte(nil), it.Value()...),
		})
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	if clippedByRange {
		// The caller asked for more than this range holds: it continues in the
		// next range, which starts at this range's end.
		res.More = true
		res.NextKey = append([]byte(nil), desc.End...)
	}
	return res, nil
}

func badRequest(msg string) *kvpb.CommandResult {
	return &kvpb.CommandResult{Status: kvpb.Status_STATUS_BAD_REQUEST, Message: msg}
}

// checkEpoch checks a command's version and the keys of its ops against the
// descriptor; it returns nil when the command may run.
func checkEpoch(desc *kvpb.RangeDescriptor, ver uint64, ops []*kvpb.Op) *kvpb.CommandResult {
	if desc.State != kvpb.RangeState_RANGE_STATE_NORMAL {
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_EPOCH_NOT_MATCH, Range: desc,
			Message: fmt.Sprintf("range %d is %s", desc.Id, desc.State)}
	}
	if ver != desc.Ver && !bugzoo.SkipEpochCheck {
		return &kvpb.CommandResult{Status: kvpb.Status_STATUS_EPOCH_NOT_MATCH, Range: desc,
			Message: fmt.Sprintf("range %d is at version %d, command has %d", desc.Id, desc.Ver, ver)}
	}
	for _, op := range ops {
		key, isScan := OpKey(op)
		if isScan {
			continue // scans are clipped to the range
		}
		if _, isCoproc := op.Op.(*kvpb.Op_Coproc); isCoproc && len(key) == 0 {
			// A coprocessor op keyed by the empty key addresses the range
			// that starts the keyspace.
			if len(desc.Start) != 0 {
				return &kvpb.CommandResult{Status: kvpb.Status_STATUS_KEY_NOT_IN_RANGE, Range: desc,
					Message: fmt.Sprintf("the empty key is outside range %d", desc.Id)}
			}
			continue
		}
		if len(key) == 0 {
			return badRequest("empty key")
		}
		if len(key) > MaxKeySize {
			return badRequest(fmt.Sprintf("key of %d bytes exceeds the limit of %d", len(key), MaxKeySize))
		}
		if !keyInRange(desc, key) {
			return &kvpb.CommandResult{Status: kvpb.Status_STATUS_KEY_NOT_IN_RANGE, Range: desc,
				Message: fmt.Sprintf("key %q is outside range %d", key, desc.Id)}
		}
	}
	return nil
}

// keyInRange is the apply-time span check of a key that a command names or
// a transaction touches. The bug zoo's bugzoo_skip_version fault turns it
// off along with the version check: with only the version skipped, this
// check alone refuses every key a stale route sends to the wrong range.
func keyInRange(desc *kvpb.RangeDescriptor, key []byte) bool {
	return bugzoo.SkipEpochCheck || ContainsKey(desc, key)
}

// OpKey returns the key an operation routes by; isScan marks a scan,
// which routes by its start and is clipped to the range.
func OpKey(op *kvpb.Op) (key []byte, isScan bool) {
	switch o := op.Op.(type) {
	case *kvpb.Op_Get:
		return o.Get.Key, false
	case *kvpb.Op_Put:
		return o.Put.Key, false
	case *kvpb.Op_Delete:
		return o.Delete.Key, false
	case *kvpb.Op_Cas:
		return o.Cas.Key, false
	case *kvpb.Op_Scan:
		return nil, true
	case *kvpb.Op_Coproc:
		return o.Coproc.Key, false
	}
	return nil, false
}

// Sync makes everything applied so far durable in the engine.
func (s *rangeStateMachine) Sync() error {
	b := s.engine.db.NewBatch()
	defer b.Close()
	if err := b.LogData(nil, nil); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}

// Close is Dragonboat's last call on the state machine: it closes s.closed,
// for a restart that must not open a second one on the same keys before.
func (s *rangeStateMachine) Close() error {
	s.closeOnce.Do(func() {
		if s.closed != nil {
			close(s.closed)
		}
	})
	return nil
}
