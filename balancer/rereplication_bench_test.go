package balancer_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/balancer"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// BenchmarkReReplication fills the kv range of a 4-store cluster, kills a
// store that holds it, and reports how long the balancer takes to bring the
// range back to 3 caught-up replicas (from the moment the store is declared
// dead), and the p99 of a client's writes meanwhile. BIFROST_BENCH_MB sets
// the data size (default 64).
//
//	BIFROST_BENCH_MB=1024 go test -run '^$' -bench ReReplication -benchtime 1x -timeout 60m ./balancer/
func BenchmarkReReplication(b *testing.B) {
	mb := 64
	if v, err := strconv.Atoi(os.Getenv("BIFROST_BENCH_MB")); err == nil && v > 0 {
		mb = v
	}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c := rangestest.Start(b, 3, rangestest.Options{RTTMillisecond: 50})
		n4 := c.AddNode()
		router := c.Nodes[0].Router()
		ctx := context.Background()
		value := make([]byte, 64<<10)
		for k := 0; k < mb*16; k += 16 {
			var ops []*kvpb.Op
			for j := k; j < k+16; j++ {
				ops = append(ops, &kvpb.Op{Op: &kvpb.Op_Put{Put: &kvpb.PutOp{Key: []byte(fmt.Sprintf("k%08d", j)), Value: value}}})
			}
			if _, err := router.Write(ctx, kvpb.Keyspace_KEYSPACE_KV, ops[0].GetPut().Key, nil, ops...); err != nil {
				b.Fatal(err)
			}
		}
		// The victim holds range 1 and does not lead it.
		leader := c.WaitLeader(1)
		victim := (leader + 1) % 3
		h := &harness{t: nil, c: c, cancel: map[int]context.CancelFunc{}, cfg: balancer.Config{
			Policy: balancer.Policy{ReplicationFactor: 3}, Interval: 200 * time.Millisecond,
			DeadStoreTimeout: time.Second, ActionTimeout: 30 * time.Minute, Logger: testLogger(),
		}}
		var lat []time.Duration
		var mu sync.Mutex
		var stop atomic.Bool
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := ranges.Dial(c.Addr(leader))
			if err != nil {
				return
			}
			defer cl.Close()
			for j := 0; !stop.Load(); j++ {
				t0 := time.Now()
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				if cl.Put(wctx, []byte(fmt.Sprintf("w%06d", j%1000)), []byte("x")) == nil {
					mu.Lock()
					lat = append(lat, time.Since(t0))
					mu.Unlock()
				}
				cancel()
				time.Sleep(2 * time.Millisecond)
			}
		}()
		c.StopNode(victim)
		for j := range c.Nodes {
			if c.Nodes[j] != nil {
				h.run(j)
			}
		}
		b.StartTimer()
		start := time.Now()
		newStore := c.Nodes[n4].Store()
		want := c.Nodes[leader].Store().RangeBytes(1)
		for {
			d, err := newStore.Descriptor(1)
			if err == nil && d != nil && newStore.RangeBytes(1) >= want*95/100 {
				break
			}
			if time.Since(start) > 30*time.Minute {
				b.Fatal("re-replication did not finish in 30 minutes")
			}
			time.Sleep(50 * time.Millisecond)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		stop.Store(true)
		wg.Wait()
		h.stopAll()
		slices.Sort(lat)
		b.ReportMetric(float64(mb), "MB")
		b.ReportMetric(elapsed.Seconds(), "rereplication-s")
		if len(lat) > 0 {
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "write-p99-ms")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "write-p50-ms")
		}
		c.Close()
	}
}
