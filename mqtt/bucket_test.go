package mqtt

import (
	"testing"
	"time"
)

// The publish-rate bucket: a burst of one second's packets, then one per
// 1/rate; a fractional rate still lets one through.
func TestPublishRateBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		rate  float64
		steps []struct {
			at   time.Duration
			want bool
		}
	}{
		{2, []struct {
			at   time.Duration
			want bool
		}{{0, true}, {0, true}, {0, false}, {400 * time.Millisecond, false}, {500 * time.Millisecond, true}, {500 * time.Millisecond, false}, {10 * time.Second, true}, {10 * time.Second, true}, {10 * time.Second, false}}},
		{0.1, []struct {
			at   time.Duration
			want bool
		}{{0, true}, {time.Second, false}, {9 * time.Second, false}, {10 * time.Second, true}}},
	} {
		b := newBucket(tc.rate, t0)
		for i, s := range tc.steps {
			if got := b.take(t0.Add(s.at)); got != s.want {
				t.Fatalf("rate %v, step %d at %v: %v, want %v", tc.rate, i, s.at, got, s.want)
			}
		}
	}
}
