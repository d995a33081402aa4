package ranges_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/internal/clustertls"
	"github.com/bifrost-mq/bifrost/internal/clustertls/tlstest"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// The KV benchmarks run on one range with 3 replicas on 3 stores, all on
// loopback. Client i talks gRPC to store i%3, whose router forwards the call
// to the range's leader (in process when it is the leader's store), as a
// real frontend would.
//
//	go test -run '^$' -bench '^Benchmark(Put|Get)(TLS)?$' -benchtime 2s ./ranges/

const (
	benchKeys      = 1000
	benchValueSize = 100
)

var benchClients = []int{1, 16, 64}

func BenchmarkPut(b *testing.B) { benchPut(b, nil) }

// BenchmarkPutTLS is BenchmarkPut with the cluster's mutual TLS on every
// gRPC and Raft connection.
func BenchmarkPutTLS(b *testing.B) { benchPut(b, tlstest.NewCA(b, "bench").Credentials("store")) }

func BenchmarkGet(b *testing.B) { benchGet(b, nil) }

// BenchmarkGetTLS is BenchmarkGet with the cluster's mutual TLS.
func BenchmarkGetTLS(b *testing.B) { benchGet(b, tlstest.NewCA(b, "bench").Credentials("store")) }

func benchPut(b *testing.B, creds *clustertls.Credentials) {
	clients := benchCluster(b, false, creds)
	value := make([]byte, benchValueSize)
	for _, n := range benchClients {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			runKVBench(b, clients[:n], func(ctx context.Context, cl *ranges.Client, i int) error {
				return cl.Put(ctx, benchKey(i), value)
			})
		})
	}
}

func benchGet(b *testing.B, creds *clustertls.Credentials) {
	clients := benchCluster(b, true, creds)
	for _, n := range benchClients {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			runKVBench(b, clients[:n], func(ctx context.Context, cl *ranges.Client, i int) error {
				_, found, err := cl.Get(ctx, benchKey(i))
				if err == nil && !found {
					return fmt.Errorf("key %s is missing", benchKey(i))
				}
				return err
			})
		})
	}
}

func benchKey(i int) []byte { return fmt.Appendf(nil, "bench%04d", i%benchKeys) }

// benchCluster starts the cluster, dials the largest number of clients
// (spread over the stores) and, for reads, writes every key once. With
// creds, the cluster and its clients use mutual TLS.
func benchCluster(b *testing.B, preload bool, creds *clustertls.Credentials) []*ranges.Client {
	b.Helper()
	c := rangestest.Start(b, 3, rangestest.Options{RTTMillisecond: 50, TLS: creds})
	c.WaitLeader(1)
	clients := make([]*ranges.Client, slices.Max(benchClients))
	for i := range clients {
		clients[i] = c.Client(i % len(c.Nodes))
	}
	if preload {
		value := make([]byte, benchValueSize)
		for i := 0; i < benchKeys; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := clients[i%len(clients)].Put(ctx, benchKey(i), value)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	// Warm every connection and every store's route to the leader.
	for _, cl := range clients {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _, err := cl.Get(ctx, benchKey(0))
		cancel()
		if err != nil {
			b.Fatal(err)
		}
	}
	return clients
}

// runKVBench runs b.N calls of op, shared by one goroutine per client, and
// reports throughput and the p50 and p99 of the calls' latencies.
func runKVBench(b *testing.B, clients []*ranges.Client, op func(ctx context.Context, cl *ranges.Client, i int) error) {
	lat := make([][]time.Duration, len(clients))
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, b.N/len(clients)+1)
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N || firstErr.Load() != nil {
					break
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t0 := time.Now()
				err := op(ctx, cl, i*7919+w)
				d := time.Since(t0)
				cancel()
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					break
				}
				mine = append(mine, d)
			}
			lat[w] = mine
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if p := firstErr.Load(); p != nil {
		b.Fatal(*p)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(ms(all[len(all)/2]), "p50-ms")
	b.ReportMetric(ms(all[(len(all)*99)/100]), "p99-ms")
}
