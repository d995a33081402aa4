package kvstore

import (
	"bytes"
	"fmt"
	"math/rand"
	"testing"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// scanned measures the replica's span key by key, as sizes were measured
// before they were counters.
func (ts *testSM) scanned() uint64 {
	ts.t.Helper()
	d := ts.sm.Descriptor()
	lo, hi := dataSpan(d)
	n, err := spanBytes(ts.sm.engine.db, lo, hi)
	if err != nil {
		ts.t.Fatal(err)
	}
	return n
}

func (ts *testSM) checkSize(what string) {
	ts.t.Helper()
	if got, want := ts.sm.Bytes(), ts.scanned(); got != want {
		ts.t.Fatalf("%s: range %d counts %d bytes, its span holds %d", what, ts.sm.rangeID, got, want)
	}
}

func deleteOp(k string) *kvpb.Op {
	return &kvpb.Op{Op: &kvpb.Op_Delete{Delete: &kvpb.DeleteOp{Key: []byte(k)}}}
}

// A range's size is a counter kept at apply time; it must agree with its
// span through puts, overwrites, deletes, CAS, refused commands, coprocessor
// writes, a split, a merge, a restart, a snapshot, and an open of a replica
// written before the counter existed.
func TestRangeSizeCounterAgreesWithScan(t *testing.T) {
	e := openTestEngine(t, t.TempDir())
	defer e.Close()
	left := newCopSM(t, e, 1)
	left.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", ""))
	left.checkSize("empty")
	rng := rand.New(rand.NewSource(1))
	val := func() string { return string(bytes.Repeat([]byte{'v'}, rng.Intn(300))) }
	for i := 0; i < 300; i++ {
		k := fmt.Sprintf("k%03d", rng.Intn(120))
		switch rng.Intn(6) {
		case 0:
			left.apply(write(1, deleteOp(k)))
		case 1:
			left.apply(write(1, casOp(k, "", val())))
		case 2:
			// Refused half-way (the second key is outside): counts nothing.
			left.apply(write(1, putOp(k, val()), putOp("", "x")))
		case 3:
			left.apply(write(1, coprocOp(k, "add "+k)))
		default:
			// Two entries of one batch touch the same key.
			left.apply(write(1, putOp(k, val()), putOp(k+"x", val())), write(1, putOp(k, val()), deleteOp(k+"x")))
		}
	}
	left.checkSize("after writes")
	if left.sm.Bytes() == 0 {
		t.Fatal("the writes left nothing to count")
	}

	total := left.sm.Bytes()
	if res := left.apply(splitCmd(1, "k060", 2))[0]; res.Status != kvpb.Status_STATUS_OK {
		t.Fatalf("split: %v %s", res.Status, res.Message)
	}
	right := newCopSM(t, e, 2)
	left.checkSize("split parent")
	right.checkSize("split child")
	if left.sm.Bytes()+right.sm.Bytes() != total || right.sm.Bytes() == 0 || left.sm.Bytes() == 0 {
		t.Fatalf("split %d bytes into %d and %d", total, left.sm.Bytes(), right.sm.Bytes())
	}
	right.apply(write(2, putOp("k100", "after the split")), write(2, deleteOp("k119")))
	right.checkSize("child after writes")

	// Restart both: the counters come back as they were, with no scan.
	m := newMetrics(nil, nil, nil, nil)
	for _, ts := range []*testSM{left, right} {
		before := ts.sm.Bytes()
		ts.sm = &rangeStateMachine{engine: e, rangeID: ts.sm.rangeID, replicaID: 1, coprocessorFor: newKeyCop, metrics: m}
		if _, err := ts.sm.Open(nil); err != nil {
			t.Fatal(err)
		}
		if ts.sm.Bytes() != before {
			t.Fatalf("range %d: %d bytes after a restart, %d before", ts.sm.rangeID, ts.sm.Bytes(), before)
		}
	}
	if m.scans.Load() != 0 {
		t.Fatalf("a restart measured %d spans; the counters were there", m.scans.Load())
	}

	rd := right.sm.Descriptor()
	right.apply(prepareMergeCmd(rd.Ver, 1, left.sm.Descriptor().Ver))
	left.apply(commitMergeCmd(left.sm.Descriptor().Ver, right.sm.Descriptor()))
	left.checkSize("merged")

	// A snapshot installs its own count, whatever the receiver held.
	dst := openTestEngine(t, t.TempDir())
	defer dst.Close()
	stale := newTestSM(t, dst, 1)
	stale.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", ""))
	stale.apply(write(1, putOp("old", "state")))
	ctx, err := left.sm.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := left.sm.SaveSnapshot(ctx, &buf, nil); err != nil {
		t.Fatal(err)
	}
	if err := stale.sm.RecoverFromSnapshot(&buf, nil); err != nil {
		t.Fatal(err)
	}
	stale.checkSize("snapshot installed")
	if stale.sm.Bytes() != left.sm.Bytes() {
		t.Fatalf("snapshot: %d bytes, the sender has %d", stale.sm.Bytes(), left.sm.Bytes())
	}

	// Data from before the counter: measured once, at open.
	if err := e.db.Delete(metaKey(1, metaBytes), nil); err != nil {
		t.Fatal(err)
	}
	left.sm = &rangeStateMachine{engine: e, rangeID: 1, replicaID: 1, coprocessorFor: newKeyCop, metrics: m}
	if _, err := left.sm.Open(nil); err != nil {
		t.Fatal(err)
	}
	left.checkSize("opened without a counter")
	if m.scans.Load() != 1 {
		t.Fatalf("open without a counter measured %d spans, want 1", m.scans.Load())
	}
}

// A split of a range too large to count key by key divides its size in the
// proportion of Pebble's estimates of the halves: each within a tenth of
// what a scan finds.
func TestLargeRangeSplitSizesAgreeWithScan(t *testing.T) {
	e := openTestEngine(t, t.TempDir())
	defer e.Close()
	ts := newTestSM(t, e, 1)
	ts.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", ""))
	rng := rand.New(rand.NewSource(1))
	v := make([]byte, 32<<10)
	for i := 0; i < 800; i++ { // 25 MiB, incompressible
		rng.Read(v)
		ts.apply(write(1, putOp(fmt.Sprintf("k%04d", i), string(v))))
	}
	if err := e.db.Flush(); err != nil {
		t.Fatal(err)
	}
	ts.checkSize("large range")
	m := newMetrics(nil, nil, nil, nil)
	ts.sm.metrics = m
	ts.apply(splitCmd(1, "k0300", 2))
	if m.scans.Load() != 0 {
		t.Fatalf("the split of a large range measured %d spans", m.scans.Load())
	}
	child := newTestSM(t, e, 2)
	for _, r := range []*testSM{ts, child} {
		got, want := float64(r.sm.Bytes()), float64(r.scanned())
		if got < want*0.9 || got > want*1.1 {
			t.Fatalf("range %d: %.0f bytes counted, %.0f scanned", r.sm.rangeID, got, want)
		}
	}
}
