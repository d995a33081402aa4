package kvstore

import (
	"context"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// BenchmarkIdleRangeMemory starts b.N single-replica ranges on one store and
// reports the heap each idle range holds (Raft node, queues, state machine).
func BenchmarkIdleRangeMemory(b *testing.B) {
	s := openTestStore(b)
	defer s.Close()
	start := func(id uint64) {
		if err := s.StartReplica(&kvpb.BootRecord{RangeId: id, ReplicaId: 1, InitialMembers: map[uint64]string{1: s.RaftAddr()}}, nil); err != nil {
			b.Fatal(err)
		}
	}
	// One range first, so one-time costs are not counted per range.
	start(1)
	n := max(b.N, 100)
	before := liveHeap()
	b.ResetTimer()
	for i := 0; i < n; i++ {
		start(uint64(i + 2))
	}
	b.StopTimer()
	// Let every range elect itself and go idle.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		for !s.IsLeader(uint64(i + 2)) {
			if ctx.Err() != nil {
				b.Fatal("ranges did not elect leaders")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	b.ReportMetric(float64(liveHeap()-before)/float64(n), "heap-bytes/range")
}
