package kvstore

import (
	"context"
	"errors"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// startInitialised starts a single-replica range on the store and gives it
// the span [start, end) of the kv keyspace.
func startInitialised(t *testing.T, s *Store, id uint64, start, end string) {
	t.Helper()
	boot := &kvpb.BootRecord{RangeId: id, ReplicaId: 1, InitialMembers: map[uint64]string{1: s.RaftAddr()}}
	if err := s.StartReplica(boot, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		res, err := s.Propose(ctx, id, initCmd(id, kvpb.Keyspace_KEYSPACE_KV, start, end))
		if err == nil && res.Status == kvpb.Status_STATUS_OK {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("init range %d: %v %v", id, res, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustPropose(t *testing.T, s *Store, id uint64, cmd *kvpb.Command) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := s.Propose(ctx, id, cmd)
	if err != nil || res.Status != kvpb.Status_STATUS_OK {
		t.Fatalf("range %d: %v %v", id, res, err)
	}
}

// TestDestroyDeletesOnlyWhatTheReplicaOwns: a replica whose descriptor is
// wider than what it owns (here two ranges initialised over one span; in a
// cluster, a replica that missed the split of its range while another
// replica here took the child's span) is destroyed. Before, the whole of
// its descriptor's span was deleted, the other replica's keys with it.
func TestDestroyDeletesOnlyWhatTheReplicaOwns(t *testing.T) {
	s := openTestStore(t)
	defer s.Close()
	startInitialised(t, s, 1, "", "")
	startInitialised(t, s, 2, "m", "")
	mustPropose(t, s, 1, write(1, putOp("a", "wide")))
	mustPropose(t, s, 2, write(1, putOp("n", "child")))

	if err := s.DestroyReplica(context.Background(), 1, 1); err != nil {
		t.Fatal(err)
	}
	res, err := s.Read(context.Background(), 2, &kvpb.Query{Ver: 1, Ops: []*kvpb.Op{getOp("n")}}, true)
	if err != nil || res.Status != kvpb.Status_STATUS_OK {
		t.Fatalf("read range 2: %v %v", res, err)
	}
	if got := res.Results[0]; !got.Found || string(got.Value) != "child" {
		t.Fatalf("range 2's key n after range 1 was destroyed: found %v value %q", got.Found, got.Value)
	}
	if _, found, err := get(s.engine.db, DataKey(kvpb.Keyspace_KEYSPACE_KV, []byte("a"))); err != nil || found {
		t.Fatalf("range 1's own key a survived its destruction (found %v, %v)", found, err)
	}
}

// TestStartRefusesAnOverlappingSpan: a replica started for a descriptor
// whose span another replica here holds is refused, and nothing is
// recorded for it; one beside it starts.
func TestStartRefusesAnOverlappingSpan(t *testing.T) {
	s := openTestStore(t)
	defer s.Close()
	startInitialised(t, s, 1, "", "m")
	desc := func(id uint64, start, end string) *kvpb.RangeDescriptor {
		return &kvpb.RangeDescriptor{Id: id, Keyspace: kvpb.Keyspace_KEYSPACE_KV, Start: []byte(start), End: []byte(end), Ver: 3}
	}
	joiner := func(id uint64) *kvpb.BootRecord { return &kvpb.BootRecord{RangeId: id, ReplicaId: 4, Join: true} }
	err := s.StartReplica(joiner(7), desc(7, "k", "z"))
	if !errors.Is(err, ErrSpanOverlap) {
		t.Fatalf("start of a replica over range 1's span: %v, want ErrSpanOverlap", err)
	}
	if s.HasBootRecord(7) {
		t.Fatal("the refused replica has a boot record")
	}
	if err := s.StartReplica(joiner(8), desc(8, "m", "z")); err != nil {
		t.Fatalf("start of a replica beside range 1: %v", err)
	}
	// Its claim holds the span until its snapshot comes.
	if err := s.StartReplica(joiner(9), desc(9, "x", "")); !errors.Is(err, ErrSpanOverlap) {
		t.Fatalf("start over the span range 8 claimed: %v, want ErrSpanOverlap", err)
	}
	if err := s.DestroyReplica(context.Background(), 8, 4); err != nil {
		t.Fatal(err)
	}
	if err := s.StartReplica(joiner(9), desc(9, "x", "")); err != nil {
		t.Fatalf("start once range 8 was destroyed: %v", err)
	}
}

// TestSnapshotWaitsForAnOverlappingReplica: a snapshot whose span another
// replica here holds waits (it cannot be refused: Dragonboat would stop the
// process) until that replica is gone, or stops with the recovery; one that
// covers a replica its range merged away (a lower version) goes in at once.
func TestSnapshotWaitsForAnOverlappingReplica(t *testing.T) {
	s := openTestStore(t)
	defer s.Close()
	startInitialised(t, s, 1, "", "")
	child := &kvpb.RangeDescriptor{Id: 2, Keyspace: kvpb.Keyspace_KEYSPACE_KV, Start: []byte("m"), Ver: 2}

	stop := make(chan struct{})
	admitted := make(chan error, 1)
	go func() { admitted <- s.admitSnapshot(child, stop) }()
	select {
	case err := <-admitted:
		t.Fatalf("a snapshot over range 1's span went in: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(stop)
	if err := <-admitted; !errors.Is(err, sm.ErrSnapshotStopped) {
		t.Fatalf("stopped recovery: %v, want ErrSnapshotStopped", err)
	}

	go func() { admitted <- s.admitSnapshot(child, make(chan struct{})) }()
	if err := s.DestroyReplica(context.Background(), 1, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-admitted:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the snapshot still waits once range 1 is gone")
	}

	// A merged range's snapshot covers the right range it absorbed.
	merged := &kvpb.RangeDescriptor{Id: 3, Keyspace: kvpb.Keyspace_KEYSPACE_KV, Start: []byte("a"), Ver: 5}
	if err := s.admitSnapshot(merged, make(chan struct{})); err != nil {
		t.Fatalf("snapshot of the range that merged range 2: %v", err)
	}
}

// TestLocalContradictionStopsTheReplica: the two checks of a split and a
// merge commit that read this store's own records, not the range's, stop
// the replica (Update fails, which stops the process) where they refused
// before: a refusal on one replica while the others apply diverges them.
// A split child that already runs here (started by an add, waiting for its
// snapshot) keeps its records, and the parent splits as everywhere.
func TestLocalContradictionStopsTheReplica(t *testing.T) {
	update := func(ts *testSM, cmd *kvpb.Command) error {
		ts.index++
		data, err := proto.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ts.sm.Update([]sm.Entry{{Index: ts.index, Cmd: data}})
		return err
	}
	e := openTestEngine(t, t.TempDir())
	defer e.Close()

	// The child's descriptor is here already.
	parent := newTestSM(t, e, 1)
	parent.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "", ""))
	newTestSM(t, e, 2).apply(initCmd(2, kvpb.Keyspace_KEYSPACE_KV, "m", ""))
	if err := update(parent, splitCmd(1, "m", 2)); !errors.Is(err, errSplitChildExists) {
		t.Fatalf("split onto a child that has a descriptor here: %v, want errSplitChildExists", err)
	}

	// The child has a replica here, with no descriptor yet.
	p2 := newTestSM(t, e, 10)
	p2.apply(initCmd(10, kvpb.Keyspace_KEYSPACE_DIST, "", ""))
	if err := e.putBoot(&kvpb.BootRecord{RangeId: 11, ReplicaId: 7, Join: true}); err != nil {
		t.Fatal(err)
	}
	res := p2.apply(splitCmd(1, "m", 11))[0]
	if res.Status != kvpb.Status_STATUS_OK || string(p2.sm.Descriptor().End) != "m" {
		t.Fatalf("split beside a waiting child replica: %v %s, parent %v", res.Status, res.Message, p2.sm.Descriptor())
	}
	if boot, _, _ := e.bootRecord(11); boot.ReplicaId != 7 {
		t.Fatalf("the split rewrote the waiting child's boot record: %v", boot)
	}
	if _, found, _ := get(e.db, metaKey(11, metaDescriptor)); found {
		t.Fatal("the split wrote a descriptor under the waiting child replica")
	}

	// The merge's right range has no frozen replica here.
	left := newTestSM(t, e, 20)
	left.apply(initCmd(20, kvpb.Keyspace_KEYSPACE_RETAIN, "", "m"))
	frozen := &kvpb.RangeDescriptor{Id: 21, Keyspace: kvpb.Keyspace_KEYSPACE_RETAIN, Start: []byte("m"), Ver: 2, ConfVer: 1,
		Replicas: []*kvpb.Replica{{ReplicaId: 1, StoreId: 1}}, State: kvpb.RangeState_RANGE_STATE_FROZEN,
		Merge: &kvpb.MergeIntent{LeftId: 20, LeftVer: 1}}
	if err := update(left, commitMergeCmd(1, frozen)); !errors.Is(err, errMergeRightMismatch) {
		t.Fatalf("merge commit with no frozen right replica here: %v, want errMergeRightMismatch", err)
	}
}
