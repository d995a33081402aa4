package kvstore

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/internal/dbinit"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// BenchmarkIdleRanges runs 3 real stores in this process (Pebble, Dragonboat,
// Raft over loopback TCP) with -bench.ranges ranges of 3 replicas each, one
// on every store, left idle; it reports a store's idle CPU, the heap an idle
// range holds and how long a restarted store takes until every range on it
// has a leader again:
//
//	make bench-ranges RANGES=10000 RECEIVE_QUEUE=16
//	BIFROST_RAFT_RECEIVE_QUEUE=16 go test -run '^$' -bench '^BenchmarkIdleRanges$' -benchtime 1x -timeout 60m ./kvstore/ -args -bench.ranges 10000
//
// The ranges are made the cheapest honest way, not by 10,000 splits: each
// store starts its replica of every range with the 3 initial members (what a
// bootstrap does), then one Init per range gives it its descriptor. They run
// the store's production settings (Config defaults, the -raft-rtt-ms
// default, Dragonboat's small log store), with the Raft receive queue of
// BIFROST_RAFT_RECEIVE_QUEUE (kvstore/internal/dbinit: default 256).
//
//   - idle-cpu-%/store: CPU time of the process over -bench.idle, divided by
//     3 stores, in % of one core (the ranges are quiesced by then).
//   - heap-B/range: live heap after GC with the ranges, less the heap of the
//     3 open stores with none, divided by the 3×N replicas. heap-total-B/range
//     divides the whole live heap.
//   - restart-s: one store closed and opened again, until every range's
//     replica on it knows a leader.
//
// -bench.heapprofile writes the heap profile taken after the idle window,
// -bench.cpuprofile the CPU profile of the idle window.
var (
	benchRanges      = flag.Int("bench.ranges", 1000, "ranges for BenchmarkIdleRanges")
	benchIdle        = flag.Duration("bench.idle", 30*time.Second, "idle window BenchmarkIdleRanges measures CPU over")
	benchHeapProfile = flag.String("bench.heapprofile", "", "file BenchmarkIdleRanges writes its heap profile to")
	benchCPUProfile  = flag.String("bench.cpuprofile", "", "file BenchmarkIdleRanges writes the idle window's CPU profile to")
)

func BenchmarkIdleRanges(b *testing.B) {
	n := *benchRanges
	for b.Loop() {
		benchIdleRanges(b, n)
	}
}

func benchIdleRanges(b *testing.B, n int) {
	const stores = 3
	dirs := make([]string, stores)
	addrs := make([]string, stores)
	cfgs := make([]Config, stores)
	ss := make([]*Store, stores)
	for i := range ss {
		dirs[i] = b.TempDir()
		addrs[i] = freeLoopbackAddr(b)
		cfgs[i] = Config{DataDir: dirs[i], RaftAddr: addrs[i], RTTMillisecond: 50, Logger: quietLogger()}
		var err error
		if ss[i], err = Open(cfgs[i]); err != nil {
			b.Fatal(err)
		}
	}
	defer func() {
		for _, s := range ss {
			if s != nil {
				s.Close()
			}
		}
	}()
	base := liveHeap()
	members := map[uint64]string{}
	for i, a := range addrs {
		members[uint64(i+1)] = a
	}

	t0 := time.Now()
	parallel(b, n, func(k int) error {
		id := uint64(k + 1)
		for i, s := range ss {
			if err := s.StartReplica(&kvpb.BootRecord{RangeId: id, ReplicaId: uint64(i + 1), InitialMembers: members}, nil); err != nil {
				return err
			}
		}
		return nil
	})
	parallel(b, n, func(k int) error {
		id := uint64(k + 1)
		d := &kvpb.RangeDescriptor{Id: id, Keyspace: kvpb.Keyspace_KEYSPACE_KV, Ver: 1, ConfVer: 1, NextReplicaId: stores + 1,
			Start: fmt.Appendf(nil, "r%06d", k), End: fmt.Appendf(nil, "r%06d", k+1)}
		for i, s := range ss {
			d.Replicas = append(d.Replicas, &kvpb.Replica{ReplicaId: uint64(i + 1), StoreId: s.ID()})
		}
		cmd := &kvpb.Command{Payload: &kvpb.Command_Init{Init: &kvpb.InitRange{Range: d}}}
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := ss[k%stores].Propose(ctx, id, cmd)
			cancel()
			if err == nil && res.Status != kvpb.Status_STATUS_OK {
				return fmt.Errorf("init range %d: %s", id, res.Message)
			}
			if err == nil {
				return nil
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	for _, s := range ss {
		waitLed(b, s, n, 5*time.Minute)
	}
	b.Logf("%d ranges × %d replicas created and led in %v (%s=%q)", n, stores, time.Since(t0).Round(time.Millisecond),
		dbinit.ReceiveQueueEnv, os.Getenv(dbinit.ReceiveQueueEnv))

	// Idle long enough to quiesce (Dragonboat: 10 election timeouts without
	// activity), then measure.
	time.Sleep(time.Duration(10*20*50) * time.Millisecond)
	if *benchCPUProfile != "" {
		f, err := os.Create(*benchCPUProfile)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
	}
	cpu0, wall0 := cpuTime(), time.Now()
	time.Sleep(*benchIdle)
	if *benchCPUProfile != "" {
		pprof.StopCPUProfile()
	}
	idleCPU := (cpuTime() - cpu0).Seconds() / time.Since(wall0).Seconds() / stores * 100
	heap := liveHeap()
	if *benchHeapProfile != "" {
		f, err := os.Create(*benchHeapProfile)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}

	// Restart the last store.
	last := stores - 1
	if err := ss[last].Close(); err != nil {
		b.Fatal(err)
	}
	ss[last] = nil
	t1 := time.Now()
	s, err := Open(cfgs[last])
	if err != nil {
		b.Fatal(err)
	}
	ss[last] = s
	waitLed(b, s, n, 10*time.Minute)
	restart := time.Since(t1)

	b.ReportMetric(idleCPU, "idle-cpu-%/store")
	b.ReportMetric(float64(int64(heap)-int64(base))/float64(stores*n), "heap-B/range")
	b.ReportMetric(float64(heap)/float64(stores*n), "heap-total-B/range")
	b.ReportMetric(restart.Seconds(), "restart-s")
	b.ReportMetric(float64(n), "ranges/store")
}

// waitLed waits until the store's replica of each of ranges 1..n knows a leader.
func waitLed(b *testing.B, s *Store, n int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for id := uint64(1); id <= uint64(n); {
		if _, _, ok := s.Leader(id); ok {
			id++
			continue
		}
		if time.Now().After(deadline) {
			b.Fatalf("store %d: range %d has no leader after %v", s.ID(), id, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// parallel runs f(0..n-1) on a few goroutines and fails b on the first error.
func parallel(b *testing.B, n int, f func(k int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1) - 1)
				if k >= n {
					return
				}
				if err := f(k); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
