package kvstore

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// TestBackgroundAfterStop: work started while or after the store closes
// (an apply goroutine applying a split as Close runs) either runs before
// stop returns or not at all. Before, Close's WaitGroup.Wait raced the
// apply goroutine's Add (the race detector's "WaitGroup is reused before
// previous Wait has returned"), and work added after Wait ran on a closed
// NodeHost and engine.
func TestBackgroundAfterStop(t *testing.T) {
	for range 50 {
		b := newBackground()
		var running, afterStop atomic.Int32
		var stopped atomic.Bool
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					b.run(func(ctx context.Context) {
						running.Add(1)
						if stopped.Load() {
							afterStop.Add(1)
						}
						<-ctx.Done()
						running.Add(-1)
					})
				}
			}()
		}
		b.stop()
		stopped.Store(true)
		wg.Wait()
		if n := running.Load(); n != 0 {
			t.Fatalf("%d goroutines still running after stop", n)
		}
		if n := afterStop.Load(); n != 0 {
			t.Fatalf("%d goroutines started after stop", n)
		}
		if b.run(func(context.Context) { t.Error("ran after stop") }) {
			t.Fatal("run after stop reported true")
		}
	}
}

// TestCompactGoneRangeStops: a split child's replica removed (or merged
// away) before its log was compacted ends the compaction's retries. Before,
// they went on every 100 ms until the store closed.
func TestCompactGoneRangeStops(t *testing.T) {
	s := openTestStore(t)
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.compactNewRange(ctx, &kvpb.BootRecord{RangeId: 77, ReplicaId: 1, CompactOnStart: true})
	if ctx.Err() != nil {
		t.Fatal("the compaction of a range this store does not hold retried until its context ended")
	}
}

// openTestStore opens a store with no replicas on a free loopback port.
func openTestStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(Config{DataDir: t.TempDir(), RaftAddr: freeLoopbackAddr(t), RTTMillisecond: 50, SmallLogDB: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// freeLoopbackAddr returns a loopback address with a port free a moment ago.
func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
