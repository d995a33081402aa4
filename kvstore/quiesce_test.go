package kvstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// openQuickStores opens n stores on loopback with a 10 ms Raft tick, so that
// an idle range quiesces after 2 s (Dragonboat: 10 election timeouts of 20
// ticks without activity), and starts range 1 with a replica on each. The
// cleanup closes the stores not set to nil in the returned slice.
func openQuickStores(t *testing.T, n int) []*Store {
	t.Helper()
	members := map[uint64]string{}
	ss := make([]*Store, n)
	for i := range ss {
		addr := freeLoopbackAddr(t)
		s, err := Open(Config{DataDir: t.TempDir(), RaftAddr: addr, RTTMillisecond: 10, SmallLogDB: true, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		ss[i] = s
		t.Cleanup(func() {
			if ss[i] != nil {
				ss[i].Close()
			}
		})
		members[uint64(i+1)] = addr
	}
	d := &kvpb.RangeDescriptor{Id: 1, Keyspace: kvpb.Keyspace_KEYSPACE_KV, Ver: 1, ConfVer: 1, NextReplicaId: uint64(n + 1)}
	for i, s := range ss {
		if err := s.StartReplica(&kvpb.BootRecord{RangeId: 1, ReplicaId: uint64(i + 1), InitialMembers: members}, nil); err != nil {
			t.Fatal(err)
		}
		d.Replicas = append(d.Replicas, &kvpb.Replica{ReplicaId: uint64(i + 1), StoreId: s.ID()})
	}
	proposeUntil(t, ss[0], &kvpb.Command{Payload: &kvpb.Command_Init{Init: &kvpb.InitRange{Range: d}}}, 20*time.Second)
	return ss
}

// proposeUntil proposes cmd on s until it applies, failing t after limit.
func proposeUntil(t *testing.T, s *Store, cmd *kvpb.Command, limit time.Duration) *kvpb.CommandResult {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		res, err := s.Propose(ctx, 1, cmd)
		cancel()
		if err == nil {
			return res
		}
		if !errors.Is(err, ErrNotReady) && !errors.Is(err, ErrTimeout) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("store %d: not applied after %v: %v", s.ID(), limit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A quiesced range sends no heartbeats, so its followers do not notice that
// the leader's store died until something wakes them. A write or a read
// sent to a follower must wake it, and the range must elect a new leader and
// serve them.
func TestQuiescedRangeElectsWhenLeaderDies(t *testing.T) {
	for _, op := range []string{"write", "read"} {
		t.Run(op, func(t *testing.T) {
			ss := openQuickStores(t, 3)
			put := &kvpb.Command{Ver: 1, Payload: &kvpb.Command_Write{Write: &kvpb.WriteBatch{Ops: []*kvpb.Op{putOp("k", "v1")}}}}
			proposeUntil(t, ss[0], put, 10*time.Second)
			leader := -1
			for leader < 0 {
				for i, s := range ss {
					if s.IsLeader(1) {
						leader = i
					}
				}
				time.Sleep(10 * time.Millisecond)
			}
			// Idle well past the quiesce threshold (2 s at this tick).
			time.Sleep(4 * time.Second)
			follower := ss[(leader+1)%3]
			if err := ss[leader].Close(); err != nil {
				t.Fatal(err)
			}
			ss[leader] = nil // closed: the cleanup skips it
			start := time.Now()
			deadline := start.Add(15 * time.Second)
			for {
				var err error
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				if op == "write" {
					_, err = follower.Propose(ctx, 1, put)
				} else {
					var res *kvpb.CommandResult
					res, err = follower.Read(ctx, 1, &kvpb.Query{Ver: 1, Ops: []*kvpb.Op{getOp("k")}}, false)
					if err == nil && string(res.Results[0].Value) != "v1" {
						t.Fatalf("read %q after the failover, want v1", res.Results[0].Value)
					}
				}
				cancel()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the quiesced range did not serve a %s within 15 s of its leader's store closing: %v", op, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			id, _, ok := follower.Leader(1)
			if !ok || id == uint64(leader+1) {
				t.Fatalf("leader after the failover is %d (known %v), the dead one was %d", id, ok, leader+1)
			}
			t.Logf("%s served %v after the leader's store closed", op, time.Since(start).Round(time.Millisecond))
		})
	}
}

// Waking a quiesced range through a follower while its leader lives keeps
// that leader: the follower's election timer ran on through the quiesce, and
// it must hear from the leader before it would campaign.
func TestQuiescedRangeWakesWithoutElection(t *testing.T) {
	ss := openQuickStores(t, 3)
	put := &kvpb.Command{Ver: 1, Payload: &kvpb.Command_Write{Write: &kvpb.WriteBatch{Ops: []*kvpb.Op{putOp("k", "v1")}}}}
	proposeUntil(t, ss[0], put, 10*time.Second)
	for round := range 3 {
		time.Sleep(3 * time.Second) // quiesced by now
		id, term, ok := ss[0].Leader(1)
		if !ok {
			t.Fatal("no leader known before the wake")
		}
		follower := ss[id%3] // replica id+1's store, a follower
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if round%2 == 0 {
			_, err := follower.Read(ctx, 1, &kvpb.Query{Ver: 1, Ops: []*kvpb.Op{getOp("k")}}, false)
			if err != nil {
				t.Fatal(err)
			}
		} else if _, err := follower.Propose(ctx, 1, put); err != nil {
			t.Fatal(err)
		}
		cancel()
		time.Sleep(200 * time.Millisecond) // 20 ticks: any election would have started
		if id2, term2, _ := ss[0].Leader(1); id2 != id || term2 != term {
			t.Fatalf("round %d: waking the range moved its leader from %d (term %d) to %d (term %d)", round, id, term, id2, term2)
		}
	}
}
