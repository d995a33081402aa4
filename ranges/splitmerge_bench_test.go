package ranges_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// BenchmarkSplitMerge times a split and a merge of one range on 3 stores,
// empty and holding 100 MB, while a client keeps writing to it, and reports
// the p99 of those writes.
//
//	go test -run '^$' -bench SplitMerge -benchtime 5x ./ranges/
func BenchmarkSplitMerge(b *testing.B) {
	for _, size := range []int{0, 100 << 20} {
		b.Run(fmt.Sprintf("bytes=%dMB", size>>20), func(b *testing.B) {
			c := rangestest.Start(b, 3, rangestest.Options{RTTMillisecond: 50})
			router := c.Nodes[0].Router()
			ctx := context.Background()
			const valueSize = 10 << 10
			value := make([]byte, valueSize)
			keys := size / valueSize
			for i := 0; i < keys; i += 100 {
				var ops []*kvpb.Op
				for j := i; j < min(i+100, keys); j++ {
					ops = append(ops, &kvpb.Op{Op: &kvpb.Op_Put{Put: &kvpb.PutOp{Key: []byte(fmt.Sprintf("k%07d", j)), Value: value}}})
				}
				if _, err := router.Write(ctx, kvpb.Keyspace_KEYSPACE_KV, ops[0].GetPut().Key, nil, ops...); err != nil {
					b.Fatal(err)
				}
			}
			admin := c.Client(0)
			writer := c.Client(1)
			var mu sync.Mutex
			var lat []time.Duration
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					t0 := time.Now()
					wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					err := writer.Put(wctx, []byte(fmt.Sprintf("w%07d", i%1000)), []byte("x"))
					cancel()
					if err == nil {
						mu.Lock()
						lat = append(lat, time.Since(t0))
						mu.Unlock()
					}
				}
			}()
			var splitT, mergeT time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				resp, err := admin.Admin.Split(ctx, &rangespb.SplitRequest{Keyspace: "kv", Key: []byte(fmt.Sprintf("k%07d", keys/2+1))})
				if err != nil {
					b.Fatal(ranges.FromStatus(err))
				}
				splitT += time.Since(t0)
				t0 = time.Now()
				if _, err := admin.Admin.Merge(ctx, &rangespb.MergeRequest{RangeId: resp.Left.Id}); err != nil {
					b.Fatal(ranges.FromStatus(err))
				}
				mergeT += time.Since(t0)
			}
			b.StopTimer()
			close(stop)
			wg.Wait()
			slices.Sort(lat)
			b.ReportMetric(float64(splitT.Milliseconds())/float64(b.N), "split-ms")
			b.ReportMetric(float64(mergeT.Milliseconds())/float64(b.N), "merge-ms")
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "write-p50-ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "write-p99-ms")
			}
		})
	}
}
