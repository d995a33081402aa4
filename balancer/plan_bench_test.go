package balancer

import (
	"fmt"
	"testing"
)

// BenchmarkPlan plans one step for a store of a 3-store cluster whose
// ranges are balanced, mid-sized and cold, so that every rule looks at
// every range and none acts: the cost of a step that finds nothing to do,
// which must grow with the ranges, not with their square.
func BenchmarkPlan(b *testing.B) {
	for _, n := range []int{10_000, 20_000} {
		b.Run(fmt.Sprintf("ranges=%d", n), func(b *testing.B) {
			v := View{Self: 1, Live: []uint64{1, 2, 3}, Dead: map[uint64]bool{}, CPU: 0.1}
			for i := 0; i < n; i++ {
				start, end := fmt.Sprintf("k%08d", i), fmt.Sprintf("k%08d", i+1)
				if i == 0 {
					start = ""
				}
				if i == n-1 {
					end = ""
				}
				v.Ranges = append(v.Ranges, rv(desc(uint64(i+1), start, end, 1, 2, 3), uint64(1+i%3), 100<<20))
			}
			p := DefaultPolicy()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if acts := Plan(v, p); len(acts) != 0 {
					b.Fatalf("a balanced cluster planned %v", acts[0])
				}
			}
		})
	}
}
