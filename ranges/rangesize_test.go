package ranges_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// scanBytes sums the engine bytes (the two-byte prefix, key and value) of
// the kv pairs in [start, end), read through the KV API.
func scanBytes(t *testing.T, cl *ranges.Client, start, end []byte) uint64 {
	t.Helper()
	var n uint64
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := cl.KV.Scan(ctx, &rangespb.ScanRequest{Start: start, End: end})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range resp.Pairs {
			n += uint64(2 + len(p.Key) + len(p.Value))
		}
		if !resp.More || len(resp.NextKey) == 0 || (len(end) > 0 && bytes.Compare(resp.NextKey, end) >= 0) {
			return n
		}
		start = resp.NextKey
	}
}

// localSizes returns what each store reports of its replicas' sizes
// (LocalRanges, the form gossip carries), by store index and range ID.
func localSizes(t *testing.T, c *rangestest.Cluster) []map[uint64]*rangespb.RangeInfo {
	t.Helper()
	out := make([]map[uint64]*rangespb.RangeInfo, len(c.Nodes))
	for i, n := range c.Nodes {
		if n == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := rangespb.NewStoreClient(c.Client(i).Conn()).LocalRanges(ctx, &rangespb.LocalRangesRequest{})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = map[uint64]*rangespb.RangeInfo{}
		for _, r := range resp.Ranges {
			out[i][r.Range.Id] = r
		}
	}
	return out
}

// waitSizesAgree waits until every store reports, for each kv range, the
// size a scan of its span finds.
func waitSizesAgree(t *testing.T, c *rangestest.Cluster, cl *ranges.Client, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		bad := ""
		for i, ranges := range localSizes(t, c) {
			for id, r := range ranges {
				if r.Range.Keyspace != kvpb.Keyspace_KEYSPACE_KV {
					continue
				}
				if want := scanBytes(t, cl, r.Range.Start, r.Range.End); r.ApproximateBytes != want {
					bad = fmt.Sprintf("store %d reports %d bytes for range %d, a scan finds %d", i, r.ApproximateBytes, id, want)
				}
			}
		}
		if bad == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, bad)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Range sizes are counters kept at apply time: the sizes stores report
// (LocalRanges, gossip) agree with a scan after writes, deletes, a split, a
// merge and a restart, and reporting them scans nothing. A store used to
// scan every range under 16 MiB on each of those reports, on each
// descriptor or leader change, and at each metrics scrape.
func TestRangeSizesAreCountersNotScans(t *testing.T) {
	c := rangestest.Start(t, 2, rangestest.Options{})
	cl := c.Client(0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < 100; i++ {
		if err := cl.Put(ctx, fmt.Appendf(nil, "size/%03d", i), bytes.Repeat([]byte{'v'}, 10+i*7)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 100; i += 3 {
		if err := cl.Delete(ctx, fmt.Appendf(nil, "size/%03d", i)); err != nil {
			t.Fatal(err)
		}
		if err := cl.Put(ctx, fmt.Appendf(nil, "size/%03d", i+1), []byte("short")); err != nil {
			t.Fatal(err)
		}
	}
	waitSizesAgree(t, c, cl, "after writes")

	leader := c.WaitLeader(1)
	if _, _, err := c.Nodes[leader].Split(ctx, 1, []byte("size/050")); err != nil {
		t.Fatal(err)
	}
	waitSizesAgree(t, c, cl, "after a split")
	if _, err := c.Nodes[c.WaitLeader(1)].Merge(ctx, 1); err != nil {
		t.Fatal(err)
	}
	waitSizesAgree(t, c, cl, "after a merge")

	// From here on sizes are only read: no store may measure a span.
	scans := []uint64{c.Nodes[0].Store().SizeScans(), c.Nodes[1].Store().SizeScans()}
	for i := 0; i < 10; i++ {
		localSizes(t, c)
		if _, err := cl.Admin.Ranges(ctx, &rangespb.RangesRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	// A leader change reports the range to the table on both stores.
	leader = c.WaitLeader(1)
	other := 1 - leader
	if err := c.Nodes[leader].TransferLeader(ctx, 1, c.Nodes[other].Store().ID()); err != nil {
		t.Fatal(err)
	}
	for c.LeaderNode(1) != other {
		if ctx.Err() != nil {
			t.Fatal("leadership of range 1 did not move")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Node 1 restarts: its replicas open with their counters, and its join
	// pulls node 0's gossip state (every range's size) and pushes its own.
	c.StopNode(1)
	c.StartNode(1)
	c.WaitReady()
	waitSizesAgree(t, c, cl, "after a restart")
	if got := c.Nodes[0].Store().SizeScans(); got != scans[0] {
		t.Fatalf("store 0 measured %d spans while sizes were read, gossiped and its leader changed", got-scans[0])
	}
	if got := c.Nodes[1].Store().SizeScans(); got != 0 {
		t.Fatalf("store 1 measured %d spans after a restart; its counters were on disk", got)
	}
}
