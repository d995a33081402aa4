package kvstore

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openTestEngine(t *testing.T, dir string) *Engine {
	t.Helper()
	e, err := OpenEngine(dir, EngineOptions{}, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// testSM is a state machine driven directly, without Raft, so each apply
// rule can be checked on its own.
type testSM struct {
	t     *testing.T
	sm    *rangeStateMachine
	index uint64
}

func newTestSM(t *testing.T, e *Engine, rangeID uint64) *testSM {
	s := &rangeStateMachine{engine: e, rangeID: rangeID, replicaID: 1}
	applied, err := s.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &testSM{t: t, sm: s, index: applied}
}

func (ts *testSM) apply(cmds ...*kvpb.Command) []*kvpb.CommandResult {
	ts.t.Helper()
	entries := make([]sm.Entry, len(cmds))
	for i, c := range cmds {
		ts.index++
		data, err := proto.Marshal(c)
		if err != nil {
			ts.t.Fatal(err)
		}
		entries[i] = sm.Entry{Index: ts.index, Cmd: data}
	}
	out, err := ts.sm.Update(entries)
	if err != nil {
		ts.t.Fatal(err)
	}
	res := make([]*kvpb.CommandResult, len(out))
	for i, e := range out {
		res[i] = &kvpb.CommandResult{}
		if err := proto.Unmarshal(e.Result.Data, res[i]); err != nil {
			ts.t.Fatal(err)
		}
		if uint64(res[i].Status) != e.Result.Value {
			ts.t.Fatalf("result value %d does not carry status %v", e.Result.Value, res[i].Status)
		}
	}
	return res
}

func (ts *testSM) get(ver uint64, key string) *kvpb.CommandResult {
	ts.t.Helper()
	out, err := ts.sm.Lookup(&kvpb.Query{Ver: ver, Ops: []*kvpb.Op{getOp(key)}})
	if err != nil {
		ts.t.Fatal(err)
	}
	return out.(*kvpb.CommandResult)
}

func initCmd(id uint64, ks kvpb.Keyspace, start, end string) *kvpb.Command {
	return &kvpb.Command{Payload: &kvpb.Command_Init{Init: &kvpb.InitRange{Range: &kvpb.RangeDescriptor{
		Id: id, Keyspace: ks, Start: []byte(start), End: []byte(end), Ver: 1, ConfVer: 1,
		Replicas: []*kvpb.Replica{{ReplicaId: 1, StoreId: 1}}, NextReplicaId: 2,
	}}}}
}

func putOp(k, v string) *kvpb.Op {
	return &kvpb.Op{Op: &kvpb.Op_Put{Put: &kvpb.PutOp{Key: []byte(k), Value: []byte(v)}}}
}
func getOp(k string) *kvpb.Op { return &kvpb.Op{Op: &kvpb.Op_Get{Get: &kvpb.GetOp{Key: []byte(k)}}} }
func casOp(k, expected, v string) *kvpb.Op {
	return &kvpb.Op{Op: &kvpb.Op_Cas{Cas: &kvpb.CasOp{Key: []byte(k), Expected: []byte(expected), ExpectAbsent: expected == "", NewValue: []byte(v)}}}
}
func write(ver uint64, ops ...*kvpb.Op) *kvpb.Command {
	return &kvpb.Command{Ver: ver, Payload: &kvpb.Command_Write{Write: &kvpb.WriteBatch{Ops: ops}}}
}

func TestApplyRefusesWritesBeforeInit(t *testing.T) {
	ts := newTestSM(t, openTestEngine(t, t.TempDir()), 7)
	res := ts.apply(write(1, putOp("a", "1")))
	if res[0].Status != kvpb.Status_STATUS_RANGE_NOT_READY {
		t.Fatalf("write before init: got %v, want RANGE_NOT_READY", res[0].Status)
	}
	if got := ts.get(1, "a"); got.Status != kvpb.Status_STATUS_RANGE_NOT_READY {
		t.Fatalf("read before init: got %v", got.Status)
	}
}

func TestApplyChecksSpanAndVersion(t *testing.T) {
	ts := newTestSM(t, openTestEngine(t, t.TempDir()), 7)
	ts.apply(initCmd(7, kvpb.Keyspace_KEYSPACE_KV, "b", "m"))
	tests := []struct {
		name string
		cmd  *kvpb.Command
		want kvpb.Status
	}{
		{"in span", write(1, putOp("c", "1")), kvpb.Status_STATUS_OK},
		{"start key is inside", write(1, putOp("b", "1")), kvpb.Status_STATUS_OK},
		{"end key is outside", write(1, putOp("m", "1")), kvpb.Status_STATUS_KEY_NOT_IN_RANGE},
		{"before start", write(1, putOp("a", "1")), kvpb.Status_STATUS_KEY_NOT_IN_RANGE},
		{"one op outside fails the batch", write(1, putOp("c", "2"), putOp("z", "1")), kvpb.Status_STATUS_KEY_NOT_IN_RANGE},
		{"stale version", write(0, putOp("c", "1")), kvpb.Status_STATUS_EPOCH_NOT_MATCH},
		{"future version", write(2, putOp("c", "1")), kvpb.Status_STATUS_EPOCH_NOT_MATCH},
		{"empty key", write(1, putOp("", "1")), kvpb.Status_STATUS_BAD_REQUEST},
		{"no payload", &kvpb.Command{Ver: 1}, kvpb.Status_STATUS_BAD_REQUEST},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := ts.apply(tc.cmd)[0]
			if res.Status != tc.want {
				t.Fatalf("got %v (%s), want %v", res.Status, res.Message, tc.want)
			}
			if tc.want == kvpb.Status_STATUS_EPOCH_NOT_MATCH || tc.want == kvpb.Status_STATUS_KEY_NOT_IN_RANGE {
				if res.Range.GetId() != 7 || res.Range.Ver != 1 {
					t.Fatalf("refusal must carry the current descriptor, got %v", res.Range)
				}
			}
		})
	}
	// The batch with one op outside wrote nothing.
	if got := ts.get(1, "c"); string(got.Results[0].Value) != "1" {
		t.Fatalf("c = %q after a refused batch, want 1", got.Results[0].Value)
	}
	if got := ts.get(2, "c"); got.Status != kvpb.Status_STATUS_EPOCH_NOT_MATCH {
		t.Fatalf("read with a wrong version: %v", got.Status)
	}
	// Undecodable bytes are a result, not an error that would stop the process.
	out, err := ts.sm.Update([]sm.Entry{{Index: ts.index + 1, Cmd: []byte{0xff, 0xff, 0xff}}})
	ts.index++
	if err != nil || kvpb.Status(out[0].Result.Value) != kvpb.Status_STATUS_BAD_REQUEST {
		t.Fatalf("garbage entry: err=%v value=%d", err, out[0].Result.Value)
	}
}

func TestApplyCASAndOrderWithinBatch(t *testing.T) {
	ts := newTestSM(t, openTestEngine(t, t.TempDir()), 1)
	ts.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", ""))
	// Entries of one batch see each other's writes.
	res := ts.apply(
		write(1, casOp("k", "", "a")),
		write(1, casOp("k", "", "b")),
		write(1, casOp("k", "a", "c")),
	)
	wantOK := []bool{true, false, true}
	for i, r := range res {
		if r.Results[0].CasOk != wantOK[i] {
			t.Fatalf("cas %d: ok=%v want %v", i, r.Results[0].CasOk, wantOK[i])
		}
	}
	if string(res[1].Results[0].Value) != "a" {
		t.Fatalf("failed cas must report the current value, got %q", res[1].Results[0].Value)
	}
	if got := ts.get(1, "k"); string(got.Results[0].Value) != "c" {
		t.Fatalf("k = %q, want c", got.Results[0].Value)
	}
}

func TestApplyDedupesRequestIDs(t *testing.T) {
	ts := newTestSM(t, openTestEngine(t, t.TempDir()), 1)
	ts.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", ""))
	cas := write(1, casOp("k", "", "a"))
	cas.RequestId = []byte("req-1")
	cas.RangeMs = 1000
	first := ts.apply(cas)[0]
	ts.apply(write(1, putOp("k", "other")))
	again := ts.apply(cas)[0]
	if !first.Results[0].CasOk || !again.Results[0].CasOk {
		t.Fatalf("a retried CAS must return the first result: %v then %v", first.Results[0], again.Results[0])
	}
	if got := ts.get(1, "k"); string(got.Results[0].Value) != "other" {
		t.Fatalf("the retry applied twice: k = %q", got.Results[0].Value)
	}
	// After the window the record is collected.
	late := write(1, putOp("x", "1"))
	late.RequestId = []byte("req-2")
	late.RangeMs = 1000 + DedupeWindow.Milliseconds() + 1
	ts.apply(late)
	// The sweep runs once sweepEvery records were written since the last.
	for i := 1; i < sweepEvery; i++ {
		w := write(1, putOp(fmt.Sprintf("y%d", i), "1"))
		w.RequestId, w.RangeMs = []byte(fmt.Sprintf("req-y%d", i)), late.RangeMs
		ts.apply(w)
	}
	if _, found, _ := get(ts.sm.engine.db, dedupeKey(kvpb.Keyspace_KEYSPACE_KV, []byte("k"), []byte("req-1"))); found {
		t.Fatal("dedupe record outlived its window")
	}
	if _, found, _ := get(ts.sm.engine.db, dedupeKey(kvpb.Keyspace_KEYSPACE_KV, []byte("x"), []byte("req-2"))); !found {
		t.Fatal("the sweep dropped a live record")
	}
}

func TestAppliedIndexAndDescriptorSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	e := openTestEngine(t, dir)
	ts := newTestSM(t, e, 3)
	ts.apply(initCmd(3, kvpb.Keyspace_KEYSPACE_KV, "a", "z"))
	ts.apply(write(1, putOp("b", "1")), write(1, putOp("c", "2")))
	if err := ts.sm.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2 := openTestEngine(t, dir)
	defer e2.Close()
	s := &rangeStateMachine{engine: e2, rangeID: 3, replicaID: 1}
	applied, err := s.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	if applied != 3 {
		t.Fatalf("applied index after restart = %d, want 3", applied)
	}
	if d := s.Descriptor(); d == nil || string(d.Start) != "a" || string(d.End) != "z" {
		t.Fatalf("descriptor after restart = %v", d)
	}
}

func TestSnapshotRecoverReplacesOnlyItsSpan(t *testing.T) {
	src := openTestEngine(t, t.TempDir())
	defer src.Close()
	a := newTestSM(t, src, 1)
	a.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "b", "d"))
	a.apply(write(1, putOp("b1", "new"), putOp("c1", "new")))

	dst := openTestEngine(t, t.TempDir())
	defer dst.Close()
	// The destination holds an older state of range 1 and all of its neighbour, range 2.
	old := newTestSM(t, dst, 1)
	old.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "b", "d"))
	old.apply(write(1, putOp("b0", "stale"), putOp("c1", "old")))
	nb := newTestSM(t, dst, 2)
	nb.apply(initCmd(2, kvpb.Keyspace_KEYSPACE_KV, "d", ""))
	nb.apply(write(1, putOp("d", "n1"), putOp("e", "n2")))
	// A key of another keyspace just after the span must survive too.
	if err := dst.db.Set(DataKey(kvpb.Keyspace_KEYSPACE_DIST, []byte("b1")), []byte("dist"), nil); err != nil {
		t.Fatal(err)
	}

	ctx, err := a.sm.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := a.sm.SaveSnapshot(ctx, &buf, nil); err != nil {
		t.Fatal(err)
	}
	if err := old.sm.RecoverFromSnapshot(&buf, nil); err != nil {
		t.Fatal(err)
	}
	if old.sm.Applied() != a.sm.Applied() {
		t.Fatalf("applied after recover = %d, want %d", old.sm.Applied(), a.sm.Applied())
	}
	want := map[string]string{"b0": "", "b1": "new", "c1": "new"}
	for k, v := range want {
		got := old.get(1, k).Results[0]
		if string(got.Value) != v || got.Found != (v != "") {
			t.Errorf("range 1 key %s = %q (found %v), want %q", k, got.Value, got.Found, v)
		}
	}
	for k, v := range map[string]string{"d": "n1", "e": "n2"} {
		if got := nb.get(1, k).Results[0]; string(got.Value) != v {
			t.Errorf("neighbour key %s = %q, want %q", k, got.Value, v)
		}
	}
	if v, ok, _ := get(dst.db, DataKey(kvpb.Keyspace_KEYSPACE_DIST, []byte("b1"))); !ok || string(v) != "dist" {
		t.Error("recover touched another keyspace")
	}
}

func TestSnapshotRefusesForeignKeys(t *testing.T) {
	e := openTestEngine(t, t.TempDir())
	defer e.Close()
	ts := newTestSM(t, e, 1)
	var buf bytes.Buffer
	desc, _ := proto.Marshal(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "b", "d").GetInit().Range)
	w := bufioWriter(&buf)
	buf.WriteString(snapMagic)
	_ = writeRecord(w, tagHeader, desc, u64(10))
	_ = writeRecord(w, tagPair, DataKey(kvpb.Keyspace_KEYSPACE_KV, []byte("x")), []byte("evil"))
	_ = writeRecord(w, tagEnd)
	_ = w.Flush()
	if err := ts.sm.RecoverFromSnapshot(&buf, nil); err == nil {
		t.Fatal("a snapshot with a key outside its span was accepted")
	}
	if _, ok, _ := get(e.db, DataKey(kvpb.Keyspace_KEYSPACE_KV, []byte("x"))); ok {
		t.Fatal("a refused snapshot wrote data")
	}
}

func TestScanIsClippedAndPaginated(t *testing.T) {
	ts := newTestSM(t, openTestEngine(t, t.TempDir()), 1)
	ts.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "k05", "k15"))
	var ops []*kvpb.Op
	for i := 5; i < 15; i++ {
		ops = append(ops, putOp(fmt.Sprintf("k%02d", i), "v"))
	}
	ts.apply(write(1, ops...))
	scan := func(start, end string, limit uint32) *kvpb.OpResult {
		out, _ := ts.sm.Lookup(&kvpb.Query{Ver: 1, Ops: []*kvpb.Op{{Op: &kvpb.Op_Scan{Scan: &kvpb.ScanOp{Start: []byte(start), End: []byte(end), Limit: limit}}}}})
		return out.(*kvpb.CommandResult).Results[0]
	}
	r := scan("", "", 4)
	if len(r.Pairs) != 4 || string(r.Pairs[0].Key) != "k05" || !r.More || string(r.NextKey) != "k09" {
		t.Fatalf("first page: %d pairs, more=%v next=%q", len(r.Pairs), r.More, r.NextKey)
	}
	r = scan("k12", "", 100)
	if len(r.Pairs) != 3 || !r.More || string(r.NextKey) != "k15" {
		t.Fatalf("last page must point at the next range: %d pairs more=%v next=%q", len(r.Pairs), r.More, r.NextKey)
	}
	r = scan("k06", "k08", 100)
	if len(r.Pairs) != 2 || r.More {
		t.Fatalf("bounded scan: %d pairs more=%v", len(r.Pairs), r.More)
	}
}

func bufioWriter(w io.Writer) *bufio.Writer { return bufio.NewWriter(w) }

// TestJoinedReplicaRefusesToReplayFromInit: a replica added to a range that
// is sent the range's log from its first entry stops instead of replaying
// the range's history onto its store.
func TestJoinedReplicaRefusesToReplayFromInit(t *testing.T) {
	e := openTestEngine(t, t.TempDir())
	s := &rangeStateMachine{engine: e, rangeID: 1, replicaID: 4, joined: true}
	if _, err := s.Open(nil); err != nil {
		t.Fatal(err)
	}
	data, err := proto.Marshal(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update([]sm.Entry{{Index: 1, Cmd: data}}); err == nil {
		t.Fatal("a joined replica applied the range's Init from the log")
	}
	if d := s.Descriptor(); d != nil {
		t.Fatalf("descriptor %v after the refused replay", d)
	}
}

// TestCorruptAppliedIndexFailsOpen (issue 15): a replica whose stored
// applied index is not 8 bytes refuses to open. It was read as 0, so that
// Dragonboat replayed the whole log over the state it had applied.
func TestCorruptAppliedIndexFailsOpen(t *testing.T) {
	dir := t.TempDir()
	e := openTestEngine(t, dir)
	ts := newTestSM(t, e, 3)
	ts.apply(initCmd(3, kvpb.Keyspace_KEYSPACE_KV, "a", "z"))
	ts.apply(write(1, putOp("b", "1")))
	if err := ts.sm.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := e.db.Set(metaKey(3, metaApplied), []byte{0, 0, 2}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e2 := openTestEngine(t, dir)
	defer e2.Close()
	s := &rangeStateMachine{engine: e2, rangeID: 3, replicaID: 1}
	if applied, err := s.Open(nil); err == nil {
		t.Fatalf("a corrupt applied index opened as %d", applied)
	}
}
