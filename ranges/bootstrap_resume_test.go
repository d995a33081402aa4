package ranges_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestBootstrapResumesAfterFailure stops the bootstrap of a 3-store cluster
// after the first range has started (before the other first ranges exist)
// or after it was initialised (the others started, not initialised), and checks that the bootstrapper
// finishes the same plan: in process on its next attempt, or after a crash and
// restart. Every keyspace must then route and take a write, and the ranges
// must be exactly the four of the plan (IDs 1..4, replica IDs 1..3 on the
// stores in ID order), each on every store once.
func TestBootstrapResumesAfterFailure(t *testing.T) {
	for _, tc := range []struct {
		step    string
		restart bool
	}{
		{ranges.FailBootstrapAfterStart, true},
		{ranges.FailBootstrapAfterInit, true},
		{ranges.FailBootstrapAfterStart, false},
	} {
		t.Run(fmt.Sprintf("%s/restart=%v", tc.step, tc.restart), func(t *testing.T) {
			testBootstrapResume(t, tc.step, tc.restart)
		})
	}
}

func testBootstrapResume(t *testing.T, step string, restart bool) {
	const n = 3
	var armed atomic.Bool
	armed.Store(true)
	fired := make(chan int, 100)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("BIFROST_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	base := t.TempDir()
	cfgs := make([]ranges.NodeConfig, n)
	nodes := make([]*ranges.Node, n)
	for i := range cfgs {
		i := i
		cfgs[i] = ranges.NodeConfig{
			Store: kvstore.Config{
				DataDir:        filepath.Join(base, fmt.Sprintf("store%d", i)),
				RaftAddr:       rangestest.FreeAddr(t),
				RTTMillisecond: 20,
				SmallLogDB:     true,
			},
			GossipAddr:        rangestest.FreeAddr(t),
			GRPCAddr:          rangestest.FreeAddr(t),
			BootstrapExpect:   n,
			FastGossip:        true,
			ReconcileInterval: 500 * time.Millisecond,
			Logger:            logger.With("node", i),
			Failpoint: func(s string) error {
				if s == step && armed.Load() {
					fired <- i
					return errors.New("injected failure at " + s)
				}
				return nil
			},
		}
		if i > 0 {
			cfgs[i].Join = []string{cfgs[0].GossipAddr}
		}
	}
	start := func(i int) {
		t.Helper()
		var err error
		for attempt := 0; attempt < 50; attempt++ {
			if nodes[i], err = ranges.StartNode(cfgs[i]); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("start node %d: %v", i, err)
	}
	t.Cleanup(func() {
		for _, nd := range nodes {
			if nd != nil {
				_ = nd.Close()
			}
		}
	})
	for i := range nodes {
		start(i)
	}

	var boot int
	select {
	case boot = <-fired:
	case <-time.After(60 * time.Second):
		t.Fatal("the bootstrap failpoint never fired")
	}
	if restart {
		_ = nodes[boot].Close()
		nodes[boot] = nil
		if _, err := os.Stat(filepath.Join(cfgs[boot].Store.DataDir, "bootstrap-plan.json")); err != nil {
			t.Fatalf("the stopped bootstrapper kept no plan: %v", err)
		}
		armed.Store(false)
		// The others saw a store that holds a range: none of them may
		// bootstrap a cluster of its own while the bootstrapper is down.
		time.Sleep(2 * time.Second)
		for i, nd := range nodes {
			if nd == nil {
				continue
			}
			for _, r := range nd.Store().Replicas() {
				// The plan starts its first range, then the others
				// (all before initialising them): stopped after the
				// first start, only the first runs; stopped later,
				// only the plan's ranges do (checked at the end).
				planned := false
				for _, fr := range ranges.FirstRanges {
					planned = planned || fr.ID == r.RangeID
				}
				if !planned || (step == ranges.FailBootstrapAfterStart && r.RangeID != ranges.FirstRanges[0].ID) {
					t.Fatalf("store %d runs range %d while the bootstrapper is down", i, r.RangeID)
				}
			}
		}
		cfgs[boot].Join = []string{cfgs[(boot+1)%n].GossipAddr}
		start(boot)
	} else {
		armed.Store(false)
	}

	// Every keyspace routes on every store and takes a write.
	deadline := time.Now().Add(60 * time.Second)
	for i, nd := range nodes {
		for _, fr := range ranges.FirstRanges {
			for {
				ctx := ctxT(t, 3*time.Second)
				_ = nd.Refresh(ctx)
				key := []byte(fmt.Sprintf("k-%d", i))
				op := &kvpb.Op{Op: &kvpb.Op_Put{Put: &kvpb.PutOp{Key: key, Value: []byte("v")}}}
				var err error
				if nd.Router().Table().Lookup(fr.Keyspace, key) == nil {
					err = errors.New("no route")
				} else {
					var res *kvpb.CommandResult
					res, err = nd.Router().Write(ctx, fr.Keyspace, key, ranges.NewRequestID(), op)
					if err == nil && res.Status != kvpb.Status_STATUS_OK {
						err = fmt.Errorf("%v: %s", res.Status, res.Message)
					}
				}
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("store %d: keyspace %v takes no write: %v", i, fr.Keyspace, err)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}

	// The ranges are the plan's: IDs 1..4, one per keyspace, replica i+1 on
	// the i-th store in ID order, running once on every store.
	storeIDs := make([]uint64, n)
	for i, nd := range nodes {
		storeIDs[i] = nd.Store().ID()
	}
	slices.Sort(storeIDs)
	cl, err := ranges.Dial(cfgs[0].GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	resp, err := cl.Admin.Ranges(ctxT(t, 10*time.Second), &rangespb.RangesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Ranges) != len(ranges.FirstRanges) {
		t.Fatalf("the cluster has %d ranges, want %d", len(resp.Ranges), len(ranges.FirstRanges))
	}
	for _, r := range resp.Ranges {
		want := -1
		for j, fr := range ranges.FirstRanges {
			if fr.ID == r.Range.Id && fr.Keyspace == r.Range.Keyspace {
				want = j
			}
		}
		if want < 0 {
			t.Errorf("range %d (%v) is not in the bootstrap plan", r.Range.Id, r.Range.Keyspace)
			continue
		}
		if len(r.Range.Replicas) != n {
			t.Errorf("range %d has %d replicas, want %d", r.Range.Id, len(r.Range.Replicas), n)
		}
		for _, rep := range r.Range.Replicas {
			if rep.ReplicaId < 1 || rep.ReplicaId > n || storeIDs[rep.ReplicaId-1] != rep.StoreId {
				t.Errorf("range %d: replica %d on store %d is not the plan's", r.Range.Id, rep.ReplicaId, rep.StoreId)
			}
		}
	}
	// The bootstrapper removes its plan once its last Init returned, which
	// can be a moment after the writes above went through (seen under the
	// race detector in make test: the plan still there).
	for i := range cfgs {
		plan := filepath.Join(cfgs[i].Store.DataDir, "bootstrap-plan.json")
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := os.Stat(plan)
			if errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("store %d still has a bootstrap plan 10 s after the bootstrap finished: %v", i, err)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// A follower applies the last Inits a moment after the bootstrapper
	// saw them commit: wait for them, then require exactly the plan.
	deadline = time.Now().Add(20 * time.Second)
	for i, nd := range nodes {
		for {
			var got []uint64
			missing := ""
			for _, r := range nd.Store().Replicas() {
				got = append(got, r.RangeID)
				if r.Descriptor == nil {
					missing = fmt.Sprintf("store %d: range %d has no descriptor", i, r.RangeID)
				}
			}
			if missing == "" && slices.Equal(got, []uint64{1, 2, 3, 4}) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("store %d runs ranges %v, want [1 2 3 4] each with a descriptor (%s)", i, got, missing)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
