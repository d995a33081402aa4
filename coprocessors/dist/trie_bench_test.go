package dist

import (
	"fmt"
	"runtime"
	"testing"
)

// BenchmarkMatch1MRoutes matches against one tenant's 1M routes: device
// filters "dev/<n>/cmd/+" plus a few wildcard fan-outs, and reports the
// heap each route costs.
//
//	go test -run '^$' -bench Match1M ./coprocessors/dist/
func BenchmarkMatch1MRoutes(b *testing.B) {
	const n = 1_000_000
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	tr := NewTrie()
	for i := 0; i < n; i++ {
		tr.Add("tenant", Subscription{Filter: fmt.Sprintf("dev/%d/cmd/+", i)}, Receiver{1, fmt.Sprintf("frontend-%d", i%64)})
	}
	tr.Add("tenant", Subscription{Filter: "dev/+/cmd/#"}, Receiver{2, "audit"})
	tr.Add("tenant", Subscription{Filter: "dev/+/cmd/reboot", Group: "ops"}, Receiver{2, "ops-1"})
	perRoute := float64(heap()-before) / n
	topics := make([]string, 1024)
	for i := range topics {
		topics[i] = fmt.Sprintf("dev/%d/cmd/reboot", (i*7919)%n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if len(tr.Match("tenant", topics[i%len(topics)], "p", uint64(i))) != 3 {
				b.Fatal("wrong match")
			}
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "matches/s")
	b.ReportMetric(perRoute, "heap-bytes/route")
}
