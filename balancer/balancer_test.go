package balancer_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/balancer"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// harness runs a balancer on every live node of a test cluster.
type harness struct {
	t      *testing.T
	c      *rangestest.Cluster
	cfg    balancer.Config
	mu     sync.Mutex
	cancel map[int]context.CancelFunc
	bals   map[int]*balancer.Balancer
	wg     sync.WaitGroup
}

func newHarness(t *testing.T, c *rangestest.Cluster, policy balancer.Policy) *harness {
	h := &harness{t: t, c: c, cancel: map[int]context.CancelFunc{}, bals: map[int]*balancer.Balancer{}, cfg: balancer.Config{
		Policy: policy, Interval: 200 * time.Millisecond, DeadStoreTimeout: 2 * time.Second, ActionTimeout: 20 * time.Second,
		Logger: testLogger(),
	}}
	t.Cleanup(h.stopAll)
	return h
}

func (h *harness) run(i int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel[i] = cancel
	b := balancer.New(h.cfg, h.c.Nodes[i])
	h.bals[i] = b
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		b.Run(ctx)
	}()
}

func (h *harness) stop(i int) {
	h.mu.Lock()
	cancel := h.cancel[i]
	delete(h.cancel, i)
	h.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

func (h *harness) stopAll() {
	h.mu.Lock()
	for i, c := range h.cancel {
		c()
		delete(h.cancel, i)
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// descriptors reads every range's descriptor through a live node's table,
// refreshed from every store.
func descriptors(c *rangestest.Cluster, via int) []*kvpb.RangeDescriptor {
	n := c.Nodes[via]
	_ = n.Refresh(context.Background())
	var out []*kvpb.RangeDescriptor
	for _, r := range n.Router().Table().All() {
		out = append(out, r.Desc)
	}
	return out
}

// quorumGrace is how long a range may go without answering a linearizable
// read before the monitor says it lost quorum: long enough for a leader
// election and the router's retries after a store is killed, and for the
// elections a starved test process (race detector, a shared 2-core machine)
// goes through; a range without a quorum stays silent until a store returns.
const quorumGrace = 15 * time.Second

// quorumMonitor checks, until stopped, that every range keeps a majority of
// its replicas on live stores and has a reachable quorum: a range that
// answers no linearizable read (its descriptor, through ReadIndex) for longer
// than quorumGrace has lost it. A range without a quorum cannot answer, so
// its descriptor alone could never show the loss. Ranges are probed at the
// same time, so that a slow one does not delay the others' probes.
func quorumMonitor(t *testing.T, c *rangestest.Cluster, via int, dead *atomic.Uint64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		lastAnswer := map[uint64]time.Time{}
		for {
			select {
			case <-done:
				return
			case <-time.After(200 * time.Millisecond):
			}
			router := c.Nodes[via].Router()
			routes := router.Table().All()
			type probe struct {
				desc *kvpb.RangeDescriptor
				err  error
			}
			probes := make([]probe, len(routes))
			var pg sync.WaitGroup
			for i, route := range routes {
				pg.Add(1)
				go func() {
					defer pg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					probes[i].desc, probes[i].err = router.Descriptor(ctx, route.Desc.Id)
				}()
			}
			pg.Wait()
			seen := map[uint64]bool{}
			for i, route := range routes {
				id := route.Desc.Id
				seen[id] = true
				if _, ok := lastAnswer[id]; !ok {
					lastAnswer[id] = time.Now()
				}
				d, err := probes[i].desc, probes[i].err
				if err != nil {
					if router.Table().Get(id) == nil {
						continue // merged away
					}
					if silent := time.Since(lastAnswer[id]); silent > quorumGrace {
						t.Errorf("range %d lost quorum: no linearizable read answered for %v (replicas %v): %v",
							id, silent.Round(time.Second), route.Desc.Replicas, err)
						lastAnswer[id] = time.Now() // report once per grace period
					}
					continue
				}
				lastAnswer[id] = time.Now()
				live := 0
				for _, r := range d.Replicas {
					if r.StoreId != dead.Load() {
						live++
					}
				}
				if live <= len(d.Replicas)/2 {
					t.Errorf("range %d lost quorum: %d of %d replicas live (%v)", d.Id, live, len(d.Replicas), d.Replicas)
				}
			}
			for id := range lastAnswer {
				if !seen[id] {
					delete(lastAnswer, id)
				}
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not reached in %v; last state: %s", what, timeout, last)
}

func counts(ds []*kvpb.RangeDescriptor) map[uint64]int {
	m := map[uint64]int{}
	for _, d := range ds {
		for _, r := range d.Replicas {
			m[r.StoreId]++
		}
	}
	return m
}

func TestNewStoreGetsReplicasAndDeadStoreIsReplaced(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	n4 := c.AddNode()
	h := newHarness(t, c, balancer.Policy{ReplicationFactor: 3})
	for i := range c.Nodes {
		h.run(i)
	}
	stores := map[uint64]bool{}
	for _, n := range c.Nodes {
		stores[n.Store().ID()] = true
	}
	var dead atomic.Uint64
	stopMonitor := quorumMonitor(t, c, 0, &dead)
	defer stopMonitor()
	// Spread: 4 ranges x 3 replicas over 4 stores, within one of the mean.
	waitFor(t, "replicas spread to the new store", 60*time.Second, func() (bool, string) {
		ds := descriptors(c, 0)
		cnt := counts(ds)
		for s := range stores {
			if cnt[s] < 2 || cnt[s] > 4 {
				return false, fmt.Sprint(cnt)
			}
		}
		for _, d := range ds {
			if len(d.Replicas) != 3 {
				return false, fmt.Sprintf("range %d has %d replicas", d.Id, len(d.Replicas))
			}
		}
		if cnt[c.Nodes[n4].Store().ID()] < 2 {
			return false, fmt.Sprint(cnt)
		}
		// Leaders: 4 ranges over 4 stores, within one of the mean.
		leaders := map[uint64]int{}
		for _, r := range c.Nodes[0].Router().Table().All() {
			leaders[r.LeaderStore()]++
		}
		for s := range stores {
			if leaders[s] > 2 {
				return false, fmt.Sprintf("leaders %v", leaders)
			}
		}
		return true, ""
	})

	// Kill a store while a client writes; every range gets back to 3 live replicas.
	victim := 2
	dead.Store(c.Nodes[victim].Store().ID())
	var acked sync.Map
	stopWrites := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cl, err := ranges.Dial(c.Addr(0))
		if err != nil {
			t.Error(err)
			return
		}
		defer cl.Close()
		for i := 0; ; i++ {
			select {
			case <-stopWrites:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			k := fmt.Sprintf("w%05d", i)
			if cl.Put(ctx, []byte(k), []byte("v")) == nil {
				acked.Store(k, true)
			}
			cancel()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	h.stop(victim)
	c.StopNode(victim)
	start := time.Now()
	waitFor(t, "every range back to 3 live replicas", 45*time.Second, func() (bool, string) {
		for _, d := range descriptors(c, 0) {
			if len(d.Replicas) != 3 {
				return false, fmt.Sprintf("range %d: %d replicas", d.Id, len(d.Replicas))
			}
			for _, r := range d.Replicas {
				if r.StoreId == dead.Load() {
					return false, fmt.Sprintf("range %d still on the dead store", d.Id)
				}
			}
		}
		return true, ""
	})
	t.Logf("re-replicated %v after the store died (dead-store timeout %v)", time.Since(start), h.cfg.DeadStoreTimeout)
	// Re-replication can be quicker than the writer acknowledges 50 writes
	// on a loaded machine; keep it writing (to the re-replicated ranges)
	// until it has.
	waitFor(t, "50 acknowledged writes", 30*time.Second, func() (bool, string) {
		n := 0
		acked.Range(func(_, _ any) bool { n++; return true })
		return n >= 50, fmt.Sprintf("%d acknowledged", n)
	})
	close(stopWrites)
	wg.Wait()
	cl := c.Client(1)
	acked.Range(func(k, _ any) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, found, err := cl.Get(ctx, []byte(k.(string))); err != nil || !found {
			t.Errorf("acknowledged write %s lost: %v", k, err)
		}
		return true
	})
}

// TestStoreRestartWithinDeadStoreTimeoutKeepsQuorum guards against the
// replication factor being capped by the live stores only: with one of three
// stores restarting, every leader removed a live replica (rf 2), leaving
// itself and the restarting store, two votes needed of two, and the range
// unavailable until the store was back.
func TestStoreRestartWithinDeadStoreTimeoutKeepsQuorum(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	h := newHarness(t, c, balancer.Policy{ReplicationFactor: 3})
	h.cfg.DeadStoreTimeout = 40 * time.Second
	for i := range c.Nodes {
		h.run(i)
	}
	var dead atomic.Uint64
	stopMonitor := quorumMonitor(t, c, 0, &dead)
	defer stopMonitor()
	threeReplicas := func() (bool, string) {
		for _, d := range descriptors(c, 0) {
			if len(d.Replicas) != 3 {
				return false, fmt.Sprintf("range %d: replicas %v", d.Id, d.Replicas)
			}
		}
		return true, ""
	}
	waitFor(t, "every range on 3 replicas", 30*time.Second, threeReplicas)

	victim := 2
	victimStore := c.Nodes[victim].Store().ID()
	dead.Store(victimStore)
	h.stop(victim)
	c.StopNode(victim)
	// Down for longer than the monitor's grace, well within the dead-store
	// timeout: the balancers see the store missing all along.
	down := time.Now()
	for time.Since(down) < quorumGrace+5*time.Second {
		if ok, state := threeReplicas(); !ok {
			t.Errorf("a replica was removed while store %d restarted: %s", victimStore, state)
		}
		time.Sleep(500 * time.Millisecond)
	}
	c.StartNode(victim)
	dead.Store(0)
	h.run(victim)

	cl := c.Client(0)
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		k := []byte(fmt.Sprintf("r%03d", i))
		if err := cl.Put(ctx, k, []byte("v")); err != nil {
			t.Fatalf("write after the restart: %v", err)
		}
		cancel()
	}
	waitFor(t, "every range on 3 replicas, the restarted store among them", 30*time.Second, func() (bool, string) {
		if ok, state := threeReplicas(); !ok {
			return false, state
		}
		for _, d := range descriptors(c, 0) {
			if !slices.ContainsFunc(d.Replicas, func(r *kvpb.Replica) bool { return r.StoreId == victimStore }) {
				return false, fmt.Sprintf("range %d is not on store %d: %v", d.Id, victimStore, d.Replicas)
			}
		}
		return true, ""
	})
}

func TestSplitWhenLargeMergeWhenEmpty(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	h := newHarness(t, c, balancer.Policy{ReplicationFactor: 3, SplitBytes: 64 << 10, MergeBytes: 8 << 10})
	var dead atomic.Uint64
	stopMonitor := quorumMonitor(t, c, 0, &dead)
	defer stopMonitor()
	for i := range c.Nodes {
		h.run(i)
	}
	cl := c.Client(0)
	value := make([]byte, 1000)
	for i := 0; i < 300; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := cl.Put(ctx, []byte(fmt.Sprintf("k%04d", i)), value); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	waitFor(t, "kv ranges split under 64 KiB", 60*time.Second, func() (bool, string) {
		_ = c.Nodes[0].Refresh(context.Background())
		return kvSplitUnder(c.Nodes[0].Router().Table().All(), 64<<10, 4)
	})
	for i := 0; i < 300; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := cl.Delete(ctx, []byte(fmt.Sprintf("k%04d", i))); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	waitFor(t, "empty kv ranges merged back into one", 90*time.Second, func() (bool, string) {
		_ = c.Nodes[0].Refresh(context.Background())
		n, sizes := kvSizes(c.Nodes[0].Router().Table().All())
		return n == 1, sizes
	})
	// The balancers forget the merged-away ranges: what they keep per range
	// (load samples, recent activity, refused splits) is for the ranges
	// their table holds, not every range they ever saw.
	waitFor(t, "balancers keep state only for ranges that exist", 30*time.Second, func() (bool, string) {
		for i, b := range h.bals {
			_ = c.Nodes[i].Refresh(context.Background())
			exists := map[uint64]bool{}
			for _, r := range c.Nodes[i].Router().Table().All() {
				exists[r.Desc.Id] = true
			}
			b.View(time.Now())
			tracked, _ := b.Tracked()
			for _, id := range tracked {
				if !exists[id] {
					return false, fmt.Sprintf("store %d's balancer tracks range %d, gone (tracks %v)", i, id, tracked)
				}
			}
		}
		return true, ""
	})
}

// kvSizes returns the number of kv ranges and their sizes, "?" for a size no
// store has reported yet.
func kvSizes(routes []*ranges.Route) (n int, sizes string) {
	var out []string
	for _, r := range routes {
		if r.Desc.Keyspace == kvpb.Keyspace_KEYSPACE_KV {
			n++
			if r.BytesKnown {
				out = append(out, fmt.Sprint(r.Bytes))
			} else {
				out = append(out, "?")
			}
		}
	}
	return n, fmt.Sprint(out)
}

// kvSplitUnder reports whether there are at least atLeast kv ranges and every one
// is known to be at most limit bytes. A size no store reported yet is unknown,
// not small: the table holds 0 for it.
func kvSplitUnder(routes []*ranges.Route, limit uint64, atLeast int) (bool, string) {
	n, sizes := kvSizes(routes)
	for _, r := range routes {
		if r.Desc.Keyspace == kvpb.Keyspace_KEYSPACE_KV && (!r.BytesKnown || r.Bytes > limit) {
			return false, sizes
		}
	}
	return n >= atLeast, sizes
}

// TestKVSplitUnderNeedsKnownSizes guards the split test's own check, which
// took a range whose size no store had reported (Bytes 0) for a small one.
func TestKVSplitUnderNeedsKnownSizes(t *testing.T) {
	route := func(start string, bytes uint64, known bool) *ranges.Route {
		return &ranges.Route{Desc: &kvpb.RangeDescriptor{Keyspace: kvpb.Keyspace_KEYSPACE_KV, Start: []byte(start)}, Bytes: bytes, BytesKnown: known}
	}
	tests := []struct {
		name   string
		routes []*ranges.Route
		want   bool
	}{
		{"every size known and under", []*ranges.Route{route("", 10, true), route("b", 20, true)}, true},
		{"one over", []*ranges.Route{route("", 10, true), route("b", 200, true)}, false},
		{"one unknown", []*ranges.Route{route("", 10, true), route("b", 0, false)}, false},
		{"too few ranges", []*ranges.Route{route("", 10, true)}, false},
	}
	for _, tc := range tests {
		if got, sizes := kvSplitUnder(tc.routes, 100, 2); got != tc.want {
			t.Errorf("%s: got %v, want %v (sizes %s)", tc.name, got, tc.want, sizes)
		}
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("BIFROST_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// TestSplitByLoadHalvesTheLoad: a range whose bytes are in cold keys and
// whose reads go to a few hot ones is split inside the hot keys, where the
// load is halved, not at the middle of its bytes.
func TestSplitByLoadHalvesTheLoad(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	// The threshold is low for a loaded 2-core machine; the preload's 220
	// writes stay under half of any window that crosses it.
	h := newHarness(t, c, balancer.Policy{ReplicationFactor: 3, SplitLoad: 60})
	cl := c.Client(0)
	cold := make([]byte, 2000)
	for i := 0; i < 200; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := cl.Put(ctx, []byte(fmt.Sprintf("a%03d", i)), cold); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := cl.Put(ctx, []byte(fmt.Sprintf("z%02d", i)), []byte("hot")); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	for i := range c.Nodes {
		h.run(i)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rd := c.Client(w % len(c.Nodes))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				rd.Get(ctx, []byte(fmt.Sprintf("z%02d", (i*7+w)%20)))
				cancel()
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	var splitAt string
	waitFor(t, "the hot range split by load", 90*time.Second, func() (bool, string) {
		_ = c.Nodes[0].Refresh(context.Background())
		var starts []string
		for _, r := range c.Nodes[0].Router().Table().All() {
			if r.Desc.Keyspace == kvpb.Keyspace_KEYSPACE_KV && len(r.Desc.Start) > 0 {
				starts = append(starts, string(r.Desc.Start))
			}
		}
		if len(starts) == 0 {
			return false, "one kv range"
		}
		slices.Sort(starts)
		splitAt = starts[0]
		return true, ""
	})
	if splitAt <= "z00" || splitAt > "z19" {
		t.Fatalf("split at %q, want inside the hot keys (z01..z19); by size it would be near a100", splitAt)
	}
}
