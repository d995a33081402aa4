package kvstore

import (
	"context"
	"errors"
	"testing"
	"time"

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
