package nemesis

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/bifrost-mq/bifrost/jepsen/cluster"
)

func fakeStores(n int) []*cluster.Node {
	var out []*cluster.Node
	for i := 1; i <= n; i++ {
		out = append(out, &cluster.Node{Name: fmt.Sprintf("n%d", i)})
	}
	return out
}

// hears returns, for each node, the set of other nodes whose packets it
// accepts under the grudge.
func hears(stores []*cluster.Node, drops map[*cluster.Node][]*cluster.Node) map[*cluster.Node]map[*cluster.Node]bool {
	out := map[*cluster.Node]map[*cluster.Node]bool{}
	for _, r := range stores {
		out[r] = map[*cluster.Node]bool{}
		for _, s := range stores {
			out[r][s] = true
		}
		for _, s := range drops[r] {
			delete(out[r], s)
		}
	}
	return out
}

// TestPartitionShapes: the grudges have the shapes their names promise,
// for 3 and 5 stores and several seeds.
func TestPartitionShapes(t *testing.T) {
	for _, n := range []int{3, 5} {
		for seed := uint64(1); seed <= 5; seed++ {
			stores := fakeStores(n)
			majority := n/2 + 1
			t.Run(fmt.Sprintf("%d stores seed %d", n, seed), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 0))

				drops, desc := (&Partition{Mode: "one"}).Grudge(rng, stores)
				h := hears(stores, drops)
				isolated := 0
				for _, s := range stores {
					if len(h[s]) == 1 {
						isolated++
					} else if len(h[s]) != n-1 {
						t.Errorf("one (%s): %s hears %d nodes", desc, s.Name, len(h[s]))
					}
				}
				if isolated != 1 {
					t.Errorf("one (%s): %d isolated nodes", desc, isolated)
				}

				drops, desc = (&Partition{Mode: "halves"}).Grudge(rng, stores)
				h = hears(stores, drops)
				sizes := map[int]int{}
				for _, s := range stores {
					sizes[len(h[s])]++
					for o := range h[s] {
						if !h[o][s] {
							t.Errorf("halves (%s): %s hears %s but not back", desc, s.Name, o.Name)
						}
					}
				}
				if sizes[majority] != majority || sizes[n-majority] != n-majority {
					t.Errorf("halves (%s): component sizes %v", desc, sizes)
				}

				drops, desc = (&Partition{Mode: "ring"}).Grudge(rng, stores)
				h = hears(stores, drops)
				seen := map[string]bool{}
				for _, s := range stores {
					if len(h[s]) != majority {
						t.Errorf("ring (%s): %s hears %d nodes, want a majority of %d", desc, s.Name, len(h[s]), majority)
					}
					key := names(keys(h[s]))
					if seen[key] {
						t.Errorf("ring (%s): two nodes hear the same majority %s", desc, key)
					}
					seen[key] = true
				}

				drops, desc = (&Partition{Mode: "bridge"}).Grudge(rng, stores)
				h = hears(stores, drops)
				bridges := 0
				for _, s := range stores {
					if len(h[s]) == n {
						bridges++
					}
				}
				if bridges != 1 {
					t.Errorf("bridge (%s): %d nodes hear everyone, want 1", desc, bridges)
				}
			})
		}
	}
}

func keys(m map[*cluster.Node]bool) []*cluster.Node {
	var out []*cluster.Node
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestScheduleReplays: the same seed picks the same targets.
func TestScheduleReplays(t *testing.T) {
	stores := fakeStores(5)
	pick := func(seed uint64) string {
		rng := rand.New(rand.NewPCG(seed, 0))
		var s string
		for i := 0; i < 5; i++ {
			_, d := (&Partition{Mode: "halves"}).Grudge(rng, stores)
			s += d + ";"
		}
		return s
	}
	if first, again := pick(7), pick(7); first != again {
		t.Fatal("one seed gave two schedules")
	}
	if pick(7) == pick(8) {
		t.Fatal("two seeds gave the same five partitions")
	}
}
