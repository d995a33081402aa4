package kvstore

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

func splitCmd(ver uint64, key string, newID uint64) *kvpb.Command {
	return &kvpb.Command{Ver: ver, Payload: &kvpb.Command_Split{Split: &kvpb.Split{Key: []byte(key), NewRangeId: newID}}}
}

func prepareMergeCmd(ver, leftID, leftVer uint64) *kvpb.Command {
	return &kvpb.Command{Ver: ver, Payload: &kvpb.Command_PrepareMerge{PrepareMerge: &kvpb.PrepareMerge{
		Intent: &kvpb.MergeIntent{LeftId: leftID, LeftVer: leftVer}}}}
}

func commitMergeCmd(ver uint64, right *kvpb.RangeDescriptor) *kvpb.Command {
	return &kvpb.Command{Ver: ver, Payload: &kvpb.Command_CommitMerge{CommitMerge: &kvpb.CommitMerge{Right: right}}}
}

// casWithID is a CAS that succeeds only the first time it applies.
func casWithID(ver uint64, key, reqID string) *kvpb.Command {
	c := write(ver, casOp(key, "", "first"))
	c.RequestId = []byte(reqID)
	c.RangeMs = 1000
	return c
}

// The router retries a write with the same request ID on whichever range
// holds its key now. Dedupe records were kept per range, so a write that
// applied on a range that then split (or was merged away) applied a second
// time on the child (or the merged left range).
func TestDedupeFollowsKeysAcrossSplitAndMerge(t *testing.T) {
	e := openTestEngine(t, t.TempDir())
	defer e.Close()
	parent := newTestSM(t, e, 1)
	parent.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", ""))
	first := parent.apply(casWithID(1, "p", "req-split"))[0]
	if !first.Results[0].CasOk {
		t.Fatalf("first CAS failed: %v", first)
	}
	parent.apply(write(1, putOp("p", "later")))

	if res := parent.apply(splitCmd(1, "m", 2))[0]; res.Status != kvpb.Status_STATUS_OK {
		t.Fatalf("split: %v %s", res.Status, res.Message)
	}
	child := newTestSM(t, e, 2)
	// The parent no longer holds p, whatever it remembers of the request.
	if res := parent.apply(casWithID(2, "p", "req-split"))[0]; res.Status != kvpb.Status_STATUS_KEY_NOT_IN_RANGE {
		t.Fatalf("retry on the parent: %v, want KEY_NOT_IN_RANGE", res.Status)
	}
	again := child.apply(casWithID(2, "p", "req-split"))[0]
	if again.Status != kvpb.Status_STATUS_OK || !again.Results[0].CasOk {
		t.Fatalf("retry on the split child must return the first result, got %v %v", again.Status, again.Results)
	}
	if got := child.get(2, "p").Results[0]; string(got.Value) != "later" {
		t.Fatalf("the retry applied twice on the child: p = %q", got.Value)
	}

	// Merge the child back: a write that applied on it is recognised on
	// the left range.
	if res := child.apply(casWithID(2, "q", "req-merge"))[0]; !res.Results[0].CasOk {
		t.Fatalf("first CAS on the child failed: %v", res)
	}
	child.apply(write(2, putOp("q", "later")))
	frozen := child.apply(prepareMergeCmd(2, 1, 2))[0]
	if frozen.Status != kvpb.Status_STATUS_OK {
		t.Fatalf("prepare merge: %v %s", frozen.Status, frozen.Message)
	}
	merged := parent.apply(commitMergeCmd(2, frozen.Range))[0]
	if merged.Status != kvpb.Status_STATUS_OK {
		t.Fatalf("commit merge: %v %s", merged.Status, merged.Message)
	}
	ver := merged.Range.Ver
	again = parent.apply(casWithID(ver, "q", "req-merge"))[0]
	if again.Status != kvpb.Status_STATUS_OK || !again.Results[0].CasOk {
		t.Fatalf("retry on the merged left range must return the first result, got %v %v", again.Status, again.Results)
	}
	if got := parent.get(ver, "q").Results[0]; string(got.Value) != "later" {
		t.Fatalf("the retry applied twice on the merged range: q = %q", got.Value)
	}
	// And the first request, applied on the parent before the split, is
	// still recognised there once the parent holds its key again.
	if again := parent.apply(casWithID(ver, "p", "req-split"))[0]; !again.Results[0].CasOk {
		t.Fatalf("retry of the first request after the merge: %v", again.Results)
	}
}

// A write's record lies in a range's dedupe span exactly when its key lies
// in the range, whatever bytes the key and the request ID hold.
func TestDedupeKeyStaysInItsKeysSpan(t *testing.T) {
	ids := [][]byte{nil, {0}, {0xff, 0xff}, []byte("req")}
	keys := []string{"", "\x00", "\x00\x00", "a", "a\x00", "a\x00\x01", "a\x01", "a\xff", "b", "\xff"}
	spans := [][2]string{{"", ""}, {"a", "b"}, {"a", "a\x00"}, {"a\x00", ""}, {"\x00", "a\x01"}, {"a\x00\x01", "a\xff"}}
	for _, sp := range spans {
		d := &kvpb.RangeDescriptor{Keyspace: kvpb.Keyspace_KEYSPACE_INBOX, Start: []byte(sp[0]), End: []byte(sp[1])}
		lo, hi := dedupeSpan(d)
		for _, k := range keys {
			for _, id := range ids {
				rk := string(dedupeKey(d.Keyspace, []byte(k), id))
				in := rk >= string(lo) && rk < string(hi)
				if in != ContainsKey(d, []byte(k)) {
					t.Errorf("span [%q, %q) key %q id %x: record in span = %v", sp[0], sp[1], k, id, in)
				}
			}
		}
	}
}

// A replica that catches up by snapshot knows the writes its range applied.
func TestDedupeRecordsTravelInSnapshots(t *testing.T) {
	src := newTestSM(t, openTestEngine(t, t.TempDir()), 1)
	src.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "b", "d"))
	src.apply(casWithID(1, "c", "req-snap"))
	src.apply(write(1, putOp("c", "later")))
	ctx, err := src.sm.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := src.sm.SaveSnapshot(ctx, &buf, nil); err != nil {
		t.Fatal(err)
	}
	dst := newTestSM(t, openTestEngine(t, t.TempDir()), 1)
	if err := dst.sm.RecoverFromSnapshot(&buf, nil); err != nil {
		t.Fatal(err)
	}
	dst.index = dst.sm.Applied()
	if again := dst.apply(casWithID(1, "c", "req-snap"))[0]; !again.Results[0].CasOk {
		t.Fatalf("retry after a snapshot must return the first result: %v", again.Results)
	}
	if got := dst.get(1, "c").Results[0]; string(got.Value) != "later" {
		t.Fatalf("the retry applied twice after a snapshot: c = %q", got.Value)
	}
}

// TestDedupeExpiryIsTheSameForAnyBatching: the same log applied in different
// batches must leave the same state. The sweep that deletes expired records
// runs at the end of a batch, so a retry past the window that arrives in the
// batch after the sweep found no record on one replica, and the record
// (with the old result) on a replica whose batch held the sweep's trigger
// and the retry together: the retry applied on one and not on the other.
func TestDedupeExpiryIsTheSameForAnyBatching(t *testing.T) {
	w := DedupeWindow.Milliseconds()
	first := write(1, putOp("k", "a"))
	first.RequestId, first.RangeMs = []byte("req-1"), 1000
	later := write(1, putOp("k", "b"))
	later.RequestId, later.RangeMs = []byte("req-2"), 1000+w+1
	retry := write(1, putOp("k", "a"))
	retry.RequestId, retry.RangeMs = []byte("req-1"), 1000
	logs := [][][]*kvpb.Command{
		{{initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", "")}, {first}, {later}, {retry}},
		{{initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", "")}, {first}, {later, retry}},
		{{initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", ""), first, later, retry}},
	}
	var values []string
	for _, batches := range logs {
		ts := newTestSM(t, openTestEngine(t, t.TempDir()), 1)
		for _, b := range batches {
			ts.apply(b...)
		}
		values = append(values, string(ts.get(1, "k").Results[0].Value))
	}
	for i, v := range values {
		if v != values[0] {
			t.Fatalf("batching %d left k = %q, batching 0 left %q: replicas diverge", i, v, values[0])
		}
	}
	// Past the window the retry is a new write.
	if values[0] != "a" {
		t.Fatalf("k = %q, want the retry past the window applied", values[0])
	}
}

// TestDedupeMarkSurvivesRestartAndSplit: the high-water mark the window is
// judged from is persisted and given to a split child, so a retry past the
// window is treated the same after a restart and on the child.
func TestDedupeMarkSurvivesRestartAndSplit(t *testing.T) {
	w := DedupeWindow.Milliseconds()
	dir := t.TempDir()
	e := openTestEngine(t, dir)
	ts := newTestSM(t, e, 1)
	first := write(1, putOp("m", "a"))
	first.RequestId, first.RangeMs = []byte("req-1"), 1000
	later := write(1, putOp("x", "b"))
	later.RequestId, later.RangeMs = []byte("req-2"), 1000+w+1
	ts.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", ""))
	ts.apply(first)
	ts.apply(later)
	if got := ts.sm.rangeTime(t); got != 1000+w+1 {
		t.Fatalf("mark %d after the batch, want %d", got, 1000+w+1)
	}
	split := &kvpb.Command{Ver: 1, Payload: &kvpb.Command_Split{Split: &kvpb.Split{Key: []byte("l"), NewRangeId: 2}}}
	if res := ts.apply(split)[0]; res.Status != kvpb.Status_STATUS_OK {
		t.Fatalf("split: %v", res)
	}
	child := &rangeStateMachine{engine: e, rangeID: 2, replicaID: 1}
	if _, err := child.Open(nil); err != nil {
		t.Fatal(err)
	}
	if got := child.rangeTime(t); got != 1000+w+1 {
		t.Fatalf("the child's mark is %d, want the parent's %d", got, 1000+w+1)
	}
}

func (s *rangeStateMachine) rangeTime(t *testing.T) int64 {
	t.Helper()
	v, found, err := get(s.engine.db, metaKey(s.rangeID, metaRangeTime))
	if err != nil || !found {
		t.Fatalf("no mark for range %d: %v", s.rangeID, err)
	}
	return int64(decodeU64(v))
}

// TestRecordIssued: the sweep's reading of a write record's issue time
// agrees with unmarshalling the record.
func TestRecordIssued(t *testing.T) {
	for _, issued := range []int64{0, 1, 1733580000000, -5} {
		res, _ := proto.Marshal(&kvpb.CommandResult{Results: []*kvpb.OpResult{{Value: []byte("v")}}})
		b, err := proto.Marshal(&kvpb.DedupeRecord{RangeMs: issued, Result: res})
		if err != nil {
			t.Fatal(err)
		}
		got, ok := recordIssued(b)
		if !ok || got != issued {
			t.Fatalf("issued %d: read %d, %v", issued, got, ok)
		}
	}
	// The result first (another encoder's order) is read past.
	b := protowire.AppendTag(nil, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("result"))
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 42)
	if got, ok := recordIssued(b); !ok || got != 42 {
		t.Fatalf("field 1 after field 2: read %d, %v", got, ok)
	}
	if _, ok := recordIssued([]byte{0xff}); ok {
		t.Fatal("a broken record was read")
	}
}

// TestDedupeRecordIsCompact (issue 15): a write's record held its whole
// result, so a successful CAS of a megabyte value kept that megabyte for the
// window. It keeps what a retry needs for the same answer: the retry gets
// the value back from its own expected value, and a failed CAS keeps the
// value it found.
func TestDedupeRecordIsCompact(t *testing.T) {
	e := openTestEngine(t, t.TempDir())
	defer e.Close()
	ts := newTestSM(t, e, 1)
	ts.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", ""))
	big := string(bytes.Repeat([]byte("v"), 1<<20))
	ts.apply(write(1, putOp("k", big)))
	swap := func() *kvpb.Command { return withID(write(1, casOp("k", big, "new")), "req-big") }
	if res := ts.apply(swap())[0]; !res.Results[0].CasOk {
		t.Fatalf("CAS: %v", res.Status)
	}
	rec, found, err := get(e.db, dedupeKey(kvpb.Keyspace_KEYSPACE_KV, []byte("k"), []byte("req-big")))
	if err != nil || !found {
		t.Fatalf("no record: %v", err)
	}
	if len(rec) > 128 {
		t.Fatalf("the record of a CAS of a 1 MiB value is %d bytes", len(rec))
	}
	again := ts.apply(swap())[0].Results[0]
	if !again.CasOk || !again.Found || string(again.Value) != big {
		t.Fatalf("the retry's answer differs from the first: ok %v found %v %d bytes", again.CasOk, again.Found, len(again.Value))
	}
	// A failed CAS answers with the value it found, and so does its retry.
	miss := func() *kvpb.Command { return withID(write(1, casOp("k", "other", "x")), "req-miss") }
	first := ts.apply(miss())[0].Results[0]
	ts.apply(write(1, putOp("k", "changed")))
	if again := ts.apply(miss())[0].Results[0]; again.CasOk || string(again.Value) != "new" || string(first.Value) != "new" {
		t.Fatalf("a failed CAS's retry answered %q (first %q), want the value the first found", again.Value, first.Value)
	}
}

// TestDedupeRefusesAReusedRequestID (issue 15): a second command with a
// request ID a first one used within the window got the first's result and
// was silently not applied; it is refused, and says why.
func TestDedupeRefusesAReusedRequestID(t *testing.T) {
	ts := newTestSM(t, openTestEngine(t, t.TempDir()), 1)
	ts.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", ""))
	ts.apply(withID(write(1, putOp("k", "a")), "req-x"))
	res := ts.apply(withID(write(1, putOp("k", "b")), "req-x"))[0]
	if res.Status != kvpb.Status_STATUS_BAD_REQUEST || !strings.Contains(res.Message, "another command") {
		t.Fatalf("a reused request ID: %v %q, want a refusal", res.Status, res.Message)
	}
	if got := string(ts.get(1, "k").Results[0].Value); got != "a" {
		t.Fatalf("k = %q", got)
	}
	// The same for a command addressed to the range (a metadata record).
	alloc := func(n uint32) *kvpb.Command {
		return withID(&kvpb.Command{Payload: &kvpb.Command_AllocateIds{AllocateIds: &kvpb.AllocateIDs{Count: n}}}, "req-alloc")
	}
	first := ts.apply(alloc(1))[0]
	if again := ts.apply(alloc(1))[0]; again.Status != kvpb.Status_STATUS_OK || again.Allocated != first.Allocated {
		t.Fatalf("the retry of an allocation: %v %d, want %d", again.Status, again.Allocated, first.Allocated)
	}
	if other := ts.apply(alloc(5))[0]; other.Status != kvpb.Status_STATUS_BAD_REQUEST {
		t.Fatalf("another allocation under the same ID: %v", other.Status)
	}
}

// TestDedupeRebatchedRetryPasses: the router reuses a request ID with fewer
// ops when a range that split refused the first attempt (none of it applied,
// so no record holds the ID), and resends an attempt whose outcome is
// unknown unchanged, which after a split finds the record whole. Neither is
// a reused ID.
func TestDedupeRebatchedRetryPasses(t *testing.T) {
	ts := newTestSM(t, openTestEngine(t, t.TempDir()), 1)
	ts.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", ""))
	unknown := func(ver uint64) *kvpb.Command {
		return withID(write(ver, putOp("a", "1"), putOp("z", "1")), "req-unknown")
	}
	if res := ts.apply(unknown(1))[0]; res.Status != kvpb.Status_STATUS_OK {
		t.Fatalf("first attempt: %v", res.Status)
	}
	if res := ts.apply(splitCmd(1, "m", 2))[0]; res.Status != kvpb.Status_STATUS_OK {
		t.Fatalf("split: %v %s", res.Status, res.Message)
	}
	// Resent unchanged to the range holding its first key: the record.
	if res := ts.apply(unknown(2))[0]; res.Status != kvpb.Status_STATUS_OK || len(res.Results) != 2 {
		t.Fatalf("the unchanged resend: %v %s %v", res.Status, res.Message, res.Results)
	}
	// Refused for the key the child holds now, then planned again with the
	// parent's ops only, under the same ID.
	batch := withID(write(1, putOp("b", "1"), putOp("y", "1")), "req-replan")
	if res := ts.apply(batch)[0]; res.Status == kvpb.Status_STATUS_OK {
		t.Fatal("a batch over the split point applied on the parent")
	}
	replanned := func() *kvpb.Command { return withID(write(2, putOp("b", "1")), "req-replan") }
	if res := ts.apply(replanned())[0]; res.Status != kvpb.Status_STATUS_OK {
		t.Fatalf("the re-planned batch: %v %s", res.Status, res.Message)
	}
	if res := ts.apply(replanned())[0]; res.Status != kvpb.Status_STATUS_OK {
		t.Fatalf("the re-planned batch's retry: %v %s", res.Status, res.Message)
	}
}

// TestRequestIDBoundedInTheStore (issue 15): a request ID is part of a
// record's key; one over MaxRequestIDSize is refused at apply, whoever
// proposed it.
func TestRequestIDBoundedInTheStore(t *testing.T) {
	ts := newTestSM(t, openTestEngine(t, t.TempDir()), 1)
	ts.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", ""))
	long := write(1, putOp("k", "v"))
	long.RequestId = bytes.Repeat([]byte("i"), MaxRequestIDSize+1)
	if res := ts.apply(long)[0]; res.Status != kvpb.Status_STATUS_BAD_REQUEST || !strings.Contains(res.Message, "exceeds the limit") {
		t.Fatalf("a %d-byte request ID: %v %q", len(long.RequestId), res.Status, res.Message)
	}
	long.RequestId = long.RequestId[:MaxRequestIDSize]
	if res := ts.apply(long)[0]; res.Status != kvpb.Status_STATUS_OK {
		t.Fatalf("a %d-byte request ID: %v %q", len(long.RequestId), res.Status, res.Message)
	}
}

// TestSweepDedupe: a SweepDedupe moves the range's time to its stamp and
// deletes every expired record in the span it names, on every replica alike;
// live records stay and are reported; a frozen range refuses it and keeps
// its time (a merge reads it).
func TestSweepDedupe(t *testing.T) {
	w := DedupeWindow.Milliseconds()
	rec := func(key, id string, ms int64) *kvpb.Command {
		c := withID(write(1, putOp(key, "v")), id)
		c.RangeMs = ms
		return c
	}
	ts := newTestSM(t, openTestEngine(t, t.TempDir()), 1)
	ts.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", ""))
	ts.apply(rec("a", "req-a", 1000), rec("b", "req-b", 1000), rec("y", "req-y", 1000))
	ts.apply(rec("c", "req-c", 1000+w)) // live after the sweep
	ks := kvpb.Keyspace_KEYSPACE_KV
	to := dedupeKey(ks, []byte("x"), nil)
	sweep := sweepCmd(1, 1000+w+1, nil, to)
	res := ts.apply(sweep)[0]
	if res.Status != kvpb.Status_STATUS_OK || !res.DedupeLeft {
		t.Fatalf("sweep: %v %q left %v", res.Status, res.Message, res.DedupeLeft)
	}
	for _, c := range []struct {
		key, id string
		want    bool
	}{{"a", "req-a", false}, {"b", "req-b", false}, {"c", "req-c", true}, {"y", "req-y", true /* outside the span swept */}} {
		if _, found, err := get(ts.sm.engine.db, dedupeKey(ks, []byte(c.key), []byte(c.id))); err != nil || found != c.want {
			t.Errorf("record of %s: found %v, want %v (%v)", c.key, found, c.want, err)
		}
	}
	if got := ts.sm.rangeTime(t); got != 1000+w+1 {
		t.Fatalf("the range's time is %d after the sweep, want its stamp %d", got, 1000+w+1)
	}
	// y's record is expired though not deleted: a retry applies anew.
	if res := ts.apply(rec("y", "req-y", 1000))[0]; res.Status != kvpb.Status_STATUS_OK {
		t.Fatalf("retry past the window: %v", res.Status)
	}
	if res := ts.apply(prepareMergeCmd(1, 9, 1))[0]; res.Status != kvpb.Status_STATUS_OK {
		t.Fatalf("freeze: %v %s", res.Status, res.Message)
	}
	late := sweepCmd(2, 1000+5*w, nil, nil)
	if res := ts.apply(late)[0]; res.Status == kvpb.Status_STATUS_OK {
		t.Fatal("a frozen range applied a sweep")
	}
	if got := ts.sm.rangeTime(t); got != 1000+w+1 {
		t.Fatalf("a refused sweep moved a frozen range's time to %d", got)
	}
}

// sweepCmd is a SweepDedupe as the store proposes it: on a write with no ops.
func sweepCmd(ver uint64, ms int64, from, to []byte) *kvpb.Command {
	return &kvpb.Command{Ver: ver, RangeMs: ms, Payload: &kvpb.Command_Write{Write: &kvpb.WriteBatch{}},
		SweepDedupe: &kvpb.SweepDedupe{From: from, To: to}}
}

// TestSweepMovesTimeAsAnEmptyWrite: a store of an older build, which does
// not know SweepDedupe, applies it as the empty write that carries it; the
// range's time must move alike on both, or their expiry would differ.
func TestSweepMovesTimeAsAnEmptyWrite(t *testing.T) {
	w := DedupeWindow.Milliseconds()
	var times []int64
	for _, older := range []bool{false, true} {
		ts := newTestSM(t, openTestEngine(t, t.TempDir()), 1)
		ts.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", ""))
		sweep := sweepCmd(1, 1000+w, nil, nil)
		if older {
			sweep.SweepDedupe = nil
		}
		if res := ts.apply(sweep)[0]; res.Status != kvpb.Status_STATUS_OK {
			t.Fatalf("older %v: %v %s", older, res.Status, res.Message)
		}
		times = append(times, ts.sm.rangeTime(t))
	}
	if times[0] != times[1] || times[0] != 1000+w {
		t.Fatalf("the range's time after a sweep: %d, and %d on an older build", times[0], times[1])
	}
}
