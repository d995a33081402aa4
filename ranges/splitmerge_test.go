package ranges_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

func split(t *testing.T, c *rangestest.Cluster, node int, key string) *rangespb.SplitResponse {
	t.Helper()
	resp, err := c.Client(node).Admin.Split(ctxT(t, 30*time.Second), &rangespb.SplitRequest{Keyspace: "kv", Key: []byte(key)})
	if err != nil {
		t.Fatalf("split at %q: %v", key, ranges.FromStatus(err))
	}
	return resp
}

func merge(t *testing.T, c *rangestest.Cluster, node int, rangeID uint64) *kvpb.RangeDescriptor {
	t.Helper()
	resp, err := c.Client(node).Admin.Merge(ctxT(t, 30*time.Second), &rangespb.MergeRequest{RangeId: rangeID})
	if err != nil {
		t.Fatalf("merge range %d: %v", rangeID, ranges.FromStatus(err))
	}
	return resp.Range
}

func putAll(t *testing.T, cl *ranges.Client, kv map[string]string) {
	t.Helper()
	for k, v := range kv {
		mustPut(t, cl, k, v)
	}
}

func checkAll(t *testing.T, cl *ranges.Client, kv map[string]string) {
	t.Helper()
	for k, v := range kv {
		expectValue(t, cl, k, v)
	}
	// A scan across every range returns exactly the map.
	resp, err := cl.KV.Scan(ctxT(t, 15*time.Second), &rangespb.ScanRequest{Limit: 1000})
	if err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	got := map[string]string{}
	for _, p := range resp.Pairs {
		got[string(p.Key)] = string(p.Value)
	}
	delete(got, "__ready")
	if !maps.Equal(got, kv) {
		t.Fatalf("scan returned %d pairs, want %d: %v", len(got), len(kv), got)
	}
}

// checkNoOverlap checks, on every live store, that the normal local replicas
// of the kv keyspace never share a key: no key is served by two ranges.
func checkNoOverlap(t *testing.T, c *rangestest.Cluster) {
	t.Helper()
	for i, n := range c.Nodes {
		if n == nil {
			continue
		}
		var descs []*kvpb.RangeDescriptor
		for _, r := range n.Store().Replicas() {
			if d := r.Descriptor; d != nil && d.Keyspace == kvpb.Keyspace_KEYSPACE_KV && d.State == kvpb.RangeState_RANGE_STATE_NORMAL {
				descs = append(descs, d)
			}
		}
		for a := range descs {
			for b := a + 1; b < len(descs); b++ {
				x, y := descs[a], descs[b]
				if (len(x.End) == 0 || string(y.Start) < string(x.End)) && (len(y.End) == 0 || string(x.Start) < string(y.End)) {
					t.Fatalf("store %d: ranges %d [%q,%q) and %d [%q,%q) overlap", i, x.Id, x.Start, x.End, y.Id, y.Start, y.End)
				}
			}
		}
	}
}

func letters() map[string]string {
	kv := map[string]string{}
	for c := 'a'; c <= 'z'; c++ {
		kv[string(c)+"key"] = "v-" + string(c)
	}
	return kv
}

func TestSplitAndMerge(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	kv := letters()
	putAll(t, c.Client(0), kv)

	resp := split(t, c, 1, "m")
	if string(resp.Left.End) != "m" || string(resp.Right.Start) != "m" || resp.Left.Ver != resp.Right.Ver || resp.Right.Id < 100 {
		t.Fatalf("split: left %v right %v", resp.Left, resp.Right)
	}
	checkAll(t, c.Client(2), kv)
	kv["mkey"], kv["akey"] = "after-split", "after-split"
	putAll(t, c.Client(0), kv)
	checkAll(t, c.Client(1), kv)
	checkNoOverlap(t, c)

	// Bad splits change nothing.
	bad := []struct {
		req  *rangespb.SplitRequest
		want string
	}{
		{&rangespb.SplitRequest{RangeId: resp.Right.Id, Key: []byte("m")}, "strictly inside"},
		{&rangespb.SplitRequest{RangeId: resp.Left.Id, Key: []byte("x")}, "strictly inside"},
		{&rangespb.SplitRequest{Keyspace: "nope", Key: []byte("x")}, "unknown keyspace"},
		{&rangespb.SplitRequest{RangeId: 9999, Key: []byte("x")}, "unknown range"},
		{&rangespb.SplitRequest{Keyspace: "kv"}, "needs a key"},
	}
	for _, b := range bad {
		_, err := c.Client(0).Admin.Split(ctxT(t, 10*time.Second), b.req)
		if err == nil || !containsFold(err.Error(), b.want) {
			t.Errorf("split %v: %v, want an error saying %q", b.req, err, b.want)
		}
	}
	// The last range of a keyspace has no right neighbour.
	if _, err := c.Client(0).Admin.Merge(ctxT(t, 10*time.Second), &rangespb.MergeRequest{RangeId: resp.Right.Id}); err == nil || !containsFold(err.Error(), "no right neighbour") {
		t.Errorf("merge of the last range: %v", err)
	}

	merged := merge(t, c, 2, resp.Left.Id)
	if len(merged.End) != 0 || merged.Ver <= resp.Right.Ver {
		t.Fatalf("merged range %v", merged)
	}
	checkAll(t, c.Client(0), kv)
	checkNoOverlap(t, c)
	// Every store retires the right range.
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < 3; i++ {
		for {
			if _, err := c.Nodes[i].Store().Descriptor(resp.Right.Id); err != nil && c.Nodes[i].Store().Tombstoned(resp.Right.Id) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("store %d still runs merged range %d", i, resp.Right.Id)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Merged ranges survive a whole-cluster restart.
	for i := range c.Nodes {
		c.StopNode(i)
	}
	for i := range c.Nodes {
		c.StartNode(i)
	}
	c.WaitReady()
	checkAll(t, c.Client(1), kv)
}

func containsFold(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && (indexFold(s, sub) >= 0))
}

func indexFold(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// A replica added to a split child after the split must hold every key the
// child inherited (a prototype without the child's log compaction lost them).
func TestReplicaAddedToSplitChildHoldsEveryKey(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	kv := map[string]string{}
	var childKeys []string
	for i := 0; i < 300; i++ {
		k := fmt.Sprintf("k%03d", i)
		kv[k] = "v"
		if k >= "k150" {
			childKeys = append(childKeys, k)
		}
	}
	putAll(t, c.Client(0), kv)
	resp := split(t, c, 0, "k150")
	n4 := c.AddNode()
	newStore := c.Nodes[n4].Store().ID()
	waitGossip(t, c, newStore)
	if _, err := c.Client(0).Admin.AddReplica(ctxT(t, 30*time.Second), &rangespb.AddReplicaRequest{RangeId: resp.Right.Id, StoreId: newStore}); err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	waitRangeKeys(t, c, n4, resp.Right.Id, childKeys)
}

func waitGossip(t *testing.T, c *rangestest.Cluster, storeID uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		known := 0
		live := 0
		for _, n := range c.Nodes {
			if n != nil {
				live++
				if _, ok := n.Membership().Store(storeID); ok {
					known++
				}
			}
		}
		if known == live {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("store %d not known by gossip everywhere", storeID)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitRangeKeys waits until node i's own replica of a range holds every key.
func waitRangeKeys(t *testing.T, c *rangestest.Cluster, i int, rangeID uint64, keys []string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, k := range keys {
		for {
			q := staleGet(c, rangeID, k)
			res, err := c.Nodes[i].Store().Read(ctxT(t, 5*time.Second), rangeID, q, true)
			if err == nil && res.Status == kvpb.Status_STATUS_OK && res.Results[0].Found {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: range %d never got key %s: %v %v", i, rangeID, k, res, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func TestStoreOfflineDuringSplitCatchesUp(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	kv := letters()
	putAll(t, c.Client(0), kv)
	leader := c.WaitLeader(1)
	down := (leader + 1) % 3
	c.StopNode(down)
	resp := split(t, c, leader, "m")
	kv["zkey"] = "written-while-down"
	putAll(t, c.Client(leader), kv)
	c.StartNode(down)
	var rightKeys []string
	for k := range kv {
		if k >= "m" {
			rightKeys = append(rightKeys, k)
		}
	}
	waitRangeKeys(t, c, down, resp.Right.Id, rightKeys)
	checkAll(t, c.Client(down), kv)
	checkNoOverlap(t, c)
}

// A merge abandoned at each of its steps (its orchestrator died there) is
// finished or rolled back by the frozen range's leader, and no write is lost.
func TestMergeAbandonedAtEachStep(t *testing.T) {
	var step atomic.Value
	step.Store("")
	c := rangestest.Start(t, 3, rangestest.Options{Failpoint: func(s string) error {
		if step.Load().(string) == s {
			return errors.New("injected crash at " + s)
		}
		return nil
	}})
	kv := letters()
	putAll(t, c.Client(0), kv)
	for _, s := range []string{ranges.FailAfterFreeze, ranges.FailAfterWait, ranges.FailAfterCommit} {
		t.Run(s, func(t *testing.T) {
			resp := split(t, c, 0, "m")
			step.Store(s)
			_, err := c.Client(1).Admin.Merge(ctxT(t, 30*time.Second), &rangespb.MergeRequest{RangeId: resp.Left.Id})
			step.Store("")
			if err == nil {
				t.Fatal("the failpoint did not fire")
			}
			// The orchestrating store dies there and comes back later.
			c.StopNode(1)
			defer c.StartNode(1)
			// Writes to both sides succeed once the merge is resolved either way.
			kv["akey"], kv["zkey"] = "during-"+s, "during-"+s
			putAll(t, c.Client(2), kv)
			checkAll(t, c.Client(0), kv)
			checkNoOverlap(t, c)
			// Whatever happened, one more merge (or none needed) leaves one range.
			waitSettled(t, c, resp.Right.Id)
			c.StartNode(1)
			if d, _ := c.Nodes[0].Store().Descriptor(resp.Left.Id); d != nil && len(d.End) != 0 {
				waitSettled(t, c, resp.Right.Id)
				merge(t, c, 0, resp.Left.Id)
			}
			checkAll(t, c.Client(1), kv)
		})
	}
}

// waitSettled waits until no local replica of the range is frozen.
func waitSettled(t *testing.T, c *rangestest.Cluster, rangeID uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		frozen := false
		for _, n := range c.Nodes {
			if n == nil {
				continue
			}
			if d, err := n.Store().Descriptor(rangeID); err == nil && d != nil && d.State == kvpb.RangeState_RANGE_STATE_FROZEN {
				frozen = true
			}
		}
		if !frozen {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("range %d is still frozen", rangeID)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestHundredSplitMergeCycles(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	cl := c.Client(0)
	want := map[string]string{}
	rng := rand.New(rand.NewSource(1))
	ctx := context.Background()
	for cycle := 0; cycle < 100; cycle++ {
		for j := 0; j < 3; j++ {
			k := fmt.Sprintf("k%02d", rng.Intn(100))
			v := fmt.Sprintf("c%d-%d", cycle, j)
			want[k] = v
			mustPut(t, cl, k, v)
		}
		key := fmt.Sprintf("k%02d", 1+rng.Intn(98))
		resp := split(t, c, cycle%3, key)
		k := fmt.Sprintf("k%02d", rng.Intn(100))
		want[k] = fmt.Sprintf("between-%d", cycle)
		mustPut(t, cl, k, want[k])
		merge(t, c, (cycle+1)%3, resp.Left.Id)
	}
	_ = ctx
	checkAll(t, c.Client(2), want)
	checkNoOverlap(t, c)
}

// A merge abandoned after freezing its right range, whose left range is then
// merged into its own left neighbour: the frozen range must be unfrozen (the
// resolver used to fail reading the vanished left range, forever).
func TestFrozenRangeWhoseLeftWasMergedAway(t *testing.T) {
	var step atomic.Value
	step.Store("")
	c := rangestest.Start(t, 3, rangestest.Options{Failpoint: func(s string) error {
		if step.Load().(string) == s {
			return errors.New("injected crash at " + s)
		}
		return nil
	}})
	kv := letters()
	putAll(t, c.Client(0), kv)
	ab := split(t, c, 0, "h")
	bc := split(t, c, 0, "p")
	step.Store(ranges.FailAfterFreeze)
	if _, err := c.Client(1).Admin.Merge(ctxT(t, 30*time.Second), &rangespb.MergeRequest{RangeId: bc.Left.Id}); err == nil {
		t.Fatal("the failpoint did not fire")
	}
	step.Store("")
	// Range [h, p) merges into [a, h) while [p, ∞) is frozen for it.
	merge(t, c, 2, ab.Left.Id)
	waitSettled(t, c, bc.Right.Id)
	kv["zkey"] = "after"
	putAll(t, c.Client(0), kv)
	checkAll(t, c.Client(1), kv)
	checkNoOverlap(t, c)
}

// A split whose orchestrator dies right after proposing it: the split still
// happens on every replica (it is in the log) and the child serves.
func TestSplitAbandonedAfterPropose(t *testing.T) {
	var step atomic.Value
	step.Store(ranges.FailAfterSplit)
	c := rangestest.Start(t, 3, rangestest.Options{Failpoint: func(s string) error {
		if step.Load().(string) == s {
			return errors.New("injected crash at " + s)
		}
		return nil
	}})
	kv := letters()
	putAll(t, c.Client(0), kv)
	if _, err := c.Client(1).Admin.Split(ctxT(t, 30*time.Second), &rangespb.SplitRequest{Keyspace: "kv", Key: []byte("m")}); err == nil {
		t.Fatal("the failpoint did not fire")
	}
	step.Store("")
	c.StopNode(1)
	kv["zkey"] = "after"
	putAll(t, c.Client(0), kv)
	c.StartNode(1)
	checkAll(t, c.Client(1), kv)
	checkNoOverlap(t, c)
	for i, n := range c.Nodes {
		found := false
		for _, r := range n.Store().Replicas() {
			if d := r.Descriptor; d != nil && d.Keyspace == kvpb.Keyspace_KEYSPACE_KV && string(d.Start) == "m" {
				found = true
			}
		}
		if !found {
			t.Errorf("store %d runs no child range starting at m", i)
		}
	}
}
