package kvstore

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// skewedClock is a wall clock a test sets ahead or behind, as a node whose
// clock is off has: the store's Config.WallClock.
type skewedClock struct{ offset atomic.Int64 }

func (c *skewedClock) now() time.Time      { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *skewedClock) set(d time.Duration) { c.offset.Store(int64(d)) }

// openSkewedStore opens a store whose wall clock the test skews, with one
// single-replica kv range (ID 1) over the whole keyspace, initialised;
// sweepEvery is its DedupeSweepInterval (0: the default).
func openSkewedStore(t *testing.T, sweepEvery time.Duration) (*Store, *skewedClock) {
	t.Helper()
	addr := freeLoopbackAddr(t)
	clock := &skewedClock{}
	s, err := Open(Config{DataDir: t.TempDir(), RaftAddr: addr, RTTMillisecond: 50, SmallLogDB: true,
		Logger: quietLogger(), WallClock: clock.now, DedupeSweepInterval: sweepEvery})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.StartReplica(&kvpb.BootRecord{RangeId: 1, ReplicaId: 1, InitialMembers: map[uint64]string{1: addr}}, nil); err != nil {
		t.Fatal(err)
	}
	init := &kvpb.Command{Payload: &kvpb.Command_Init{Init: &kvpb.InitRange{Range: &kvpb.RangeDescriptor{
		Id: 1, Keyspace: kvpb.Keyspace_KEYSPACE_KV, Ver: 1, ConfVer: 1,
		Replicas: []*kvpb.Replica{{ReplicaId: 1, StoreId: s.ID(), RaftAddr: addr}}, NextReplicaId: 2,
	}}}}
	if res := proposeReady(t, s, init); res.Status != kvpb.Status_STATUS_OK {
		t.Fatalf("init: %v %s", res.Status, res.Message)
	}
	return s, clock
}

// proposeReady proposes to range 1, retrying while it has no leader yet.
func proposeReady(t *testing.T, s *Store, cmd *kvpb.Command) *kvpb.CommandResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		res, err := s.Propose(ctx, 1, cmd)
		if err == nil {
			return res
		}
		if !errors.Is(err, ErrNotReady) || ctx.Err() != nil {
			t.Fatalf("propose: %v", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func withID(c *kvpb.Command, id string) *kvpb.Command {
	c.RequestId = []byte(id)
	return c
}

func readKey(t *testing.T, s *Store, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := s.Read(ctx, 1, &kvpb.Query{Ver: 1, Ops: []*kvpb.Op{getOp(key)}}, false)
	if err != nil || res.Status != kvpb.Status_STATUS_OK {
		t.Fatalf("read %s: %v %v", key, err, res)
	}
	return string(res.Results[0].Value)
}

// TestDedupeIgnoresAFastWallClock (issue 15): the dedupe window was judged
// from the newest wall-clock stamp a range had applied. One write from a
// node eleven minutes fast made every record of the range look expired,
// and every retry after it applied twice: a CAS retried after the "future"
// write answered casOk=false, for it had applied again.
func TestDedupeIgnoresAFastWallClock(t *testing.T) {
	s, clock := openSkewedStore(t, 0)
	cas := func() *kvpb.Command { return withID(write(1, casOp("k", "", "first")), "req-cas") }
	if res := proposeReady(t, s, cas()); !res.Results[0].CasOk {
		t.Fatalf("first CAS: %v", res)
	}
	proposeReady(t, s, withID(write(1, putOp("p", "a")), "req-put-a"))
	proposeReady(t, s, withID(write(1, putOp("p", "b")), "req-put-b"))

	clock.set(11 * time.Minute)
	proposeReady(t, s, withID(write(1, putOp("other", "x")), "req-future"))
	clock.set(0)

	if res := proposeReady(t, s, cas()); res.Status != kvpb.Status_STATUS_OK || !res.Results[0].CasOk {
		t.Fatalf("the CAS retried after a write from a fast clock answered %v %v: it applied twice", res.Status, res.Results)
	}
	proposeReady(t, s, withID(write(1, putOp("p", "a")), "req-put-a"))
	if got := readKey(t, s, "p"); got != "b" {
		t.Fatalf("p = %q after a retry of its first put: the retry applied twice", got)
	}
}

// TestDedupeOnASlowWallClock (issue 15): a node ten minutes slow stamped
// its writes so far behind the range's newest stamp that their records
// were expired as they were written: its own retries applied twice.
func TestDedupeOnASlowWallClock(t *testing.T) {
	s, clock := openSkewedStore(t, 0)
	proposeReady(t, s, withID(write(1, putOp("warm", "x")), "req-warm")) // the range has a time
	clock.set(-11 * time.Minute)
	cas := func() *kvpb.Command { return withID(write(1, casOp("k", "", "first")), "req-slow") }
	if res := proposeReady(t, s, cas()); !res.Results[0].CasOk {
		t.Fatalf("first CAS: %v", res)
	}
	clock.set(0)
	proposeReady(t, s, withID(write(1, putOp("other", "x")), "req-on-time"))
	clock.set(-11 * time.Minute)
	if res := proposeReady(t, s, cas()); res.Status != kvpb.Status_STATUS_OK || !res.Results[0].CasOk {
		t.Fatalf("the slow node's retry answered %v %v: it applied twice", res.Status, res.Results)
	}
}

// TestRangeClock: a store's estimate of a range's time runs at real speed
// from the newest time it saw applied, takes a newer one, ignores an older
// one, and does not stall when stamps come faster than a millisecond.
func TestRangeClock(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var c rangeClock
	c.observe(5000, t0)
	if got := c.stamp(t0.Add(2 * time.Second)); got != 7000 {
		t.Fatalf("stamp 2 s after observing 5000: %d", got)
	}
	c.observe(6000, t0.Add(3*time.Second)) // behind the estimate (8000): ignored
	if got := c.stamp(t0.Add(3 * time.Second)); got != 8000 {
		t.Fatalf("an older time moved the estimate: %d", got)
	}
	c.observe(20000, t0.Add(3*time.Second)) // another store's newer stamp
	if got := c.stamp(t0.Add(4 * time.Second)); got != 21000 {
		t.Fatalf("a newer time was not taken: %d", got)
	}
	now := t0.Add(4 * time.Second)
	for range 4000 {
		now = now.Add(250 * time.Microsecond)
		c.stamp(now)
	}
	if got := c.stamp(now); got != 22000 {
		t.Fatalf("stamps every 250 µs for 1 s moved the time to %d, want 22000", got)
	}
	var fresh rangeClock
	if got := fresh.stamp(t0); got != 0 {
		t.Fatalf("a range with no time yet stamps %d", got)
	}
}

// TestDedupeSweptOnATimer (issue 15): expired records were swept only by
// later writes, so a range that saw none kept them for good. The store's
// sweep loop proposes SweepDedupe to the ranges it leads; the range's time
// passes (the test advances the store's monotonic clock) and the records go.
func TestDedupeSweptOnATimer(t *testing.T) {
	s, _ := openSkewedStore(t, 20*time.Millisecond)
	proposeReady(t, s, withID(write(1, putOp("k", "v")), "req-k"))
	alloc := withID(&kvpb.Command{Payload: &kvpb.Command_AllocateIds{AllocateIds: &kvpb.AllocateIDs{Count: 1}}}, "req-alloc")
	proposeReady(t, s, alloc)
	writeRec := dedupeKey(kvpb.Keyspace_KEYSPACE_KV, []byte("k"), []byte("req-k"))
	metaRec := metaKey(1, metaDedupe, []byte("req-alloc"))
	has := func(key []byte) bool {
		_, found, err := get(s.engine.db, key)
		if err != nil {
			t.Fatal(err)
		}
		return found
	}
	if !has(writeRec) || !has(metaRec) {
		t.Fatal("the writes left no records")
	}
	// Within the window the sweeps keep them.
	r, err := s.replica(1)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a sweep", func() bool { return s.metrics.sweepsApplied.Load() > 0 })
	if !has(writeRec) || !has(metaRec) {
		t.Fatal("a sweep within the window deleted a live record")
	}
	s.advanced.Store(int64(DedupeWindow + time.Minute))
	waitFor(t, "the expired records swept", func() bool { return !has(writeRec) && !has(metaRec) })
	waitFor(t, "the replica marked swept", func() bool { return r.sweptAt.Load() == r.recordsWritten.Load() })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
