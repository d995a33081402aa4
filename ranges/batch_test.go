package ranges_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

const ksKV = kvpb.Keyspace_KEYSPACE_KV

func casOp(key, expected, value string) *kvpb.Op {
	op := &kvpb.CasOp{Key: []byte(key), NewValue: []byte(value)}
	if expected == "" {
		op.ExpectAbsent = true
	} else {
		op.Expected = []byte(expected)
	}
	return &kvpb.Op{Op: &kvpb.Op_Cas{Cas: op}}
}

// casChain is a batch of two CASes per key (absent -> 1 -> 2), the keys
// interleaved so that each range's ops are scattered through the batch. An
// op applied twice, or out of order, makes a CAS fail.
func casChain(keys []string, tag string) []ranges.KeyedOp {
	var ops []ranges.KeyedOp
	for _, k := range keys {
		ops = append(ops, ranges.KeyedOp{Op: casOp(k, "", tag+"1")})
	}
	for _, k := range keys {
		ops = append(ops, ranges.KeyedOp{Op: casOp(k, tag+"1", tag+"2")})
	}
	return ops
}

func batchKeys(prefix string) []string {
	var keys []string
	for c := 'a'; c <= 'z'; c++ {
		keys = append(keys, fmt.Sprintf("%c%s", c, prefix))
	}
	return keys
}

// checkChain checks every CAS of a casChain succeeded, at its input index,
// and each key ends at tag+"2".
func checkChain(t *testing.T, c *rangestest.Cluster, keys []string, tag string, res []*kvpb.OpResult) {
	t.Helper()
	if len(res) != 2*len(keys) {
		t.Fatalf("%d results for %d ops", len(res), 2*len(keys))
	}
	for i, r := range res {
		if r == nil || !r.CasOk {
			t.Errorf("op %d (key %q): %v, want a successful CAS", i, keys[i%len(keys)], r)
		}
	}
	for _, k := range keys {
		v, found, err := c.Client(1).Get(ctxT(t, 10*time.Second), []byte(k))
		if err != nil || !found || string(v) != tag+"2" {
			t.Errorf("key %q = %q (found %v, err %v), want %q", k, v, found, err, tag+"2")
		}
	}
}

// TestWriteBatchAcrossRanges: a batch over four ranges applies every op
// once, in per-key order, and answers in input order.
func TestWriteBatchAcrossRanges(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	c.WaitReady()
	for _, k := range []string{"g", "n", "t"} {
		split(t, c, 0, k)
	}
	r := c.Nodes[0].Router()
	_ = c.Nodes[0].Refresh(ctxT(t, 10*time.Second))
	keys := batchKeys("-across")
	ops := casChain(keys, "v")
	res, err := r.WriteBatch(ctxT(t, 30*time.Second), ksKV, ops)
	if err != nil {
		t.Fatal(err)
	}
	checkChain(t, c, keys, "v", res)
	for i, op := range ops {
		if len(op.RequestID) == 0 {
			t.Fatalf("op %d got no request ID", i)
		}
	}
	// The same batch again, same request IDs: the remembered results, no
	// second application.
	res, err = r.WriteBatch(ctxT(t, 30*time.Second), ksKV, ops)
	if err != nil {
		t.Fatal(err)
	}
	checkChain(t, c, keys, "v", res)

	// A fresh batch with mixed ops and a failing CAS: per-op results.
	mixed := []ranges.KeyedOp{
		{Op: &kvpb.Op{Op: &kvpb.Op_Put{Put: &kvpb.PutOp{Key: []byte("p-mixed"), Value: []byte("x")}}}},
		{Op: casOp("a-across", "nope", "y")},
		{Op: &kvpb.Op{Op: &kvpb.Op_Delete{Delete: &kvpb.DeleteOp{Key: []byte("z-across")}}}},
	}
	res, err = r.WriteBatch(ctxT(t, 30*time.Second), ksKV, mixed)
	if err != nil {
		t.Fatal(err)
	}
	if res[1].CasOk || string(res[1].Value) != "v2" {
		t.Errorf("failing CAS: %v, want not ok with the current value", res[1])
	}
	if _, found, _ := c.Client(0).Get(ctxT(t, 10*time.Second), []byte("z-across")); found {
		t.Error("the delete did not apply")
	}
	if _, err := r.WriteBatch(ctxT(t, 5*time.Second), ksKV, []ranges.KeyedOp{{Op: &kvpb.Op{Op: &kvpb.Op_Scan{Scan: &kvpb.ScanOp{}}}}}); !errors.Is(err, ranges.ErrBadRequest) {
		t.Errorf("a scan in a batch: %v, want ErrBadRequest", err)
	}
}

// copyRefresher refreshes a private (stale) table from a node's.
type copyRefresher struct {
	n     *ranges.Node
	table *ranges.Table
}

func (f copyRefresher) Refresh(ctx context.Context) error {
	err := f.n.Refresh(ctx)
	for _, rt := range f.n.Router().Table().All() {
		f.table.Update(&rangespb.RangeInfo{Range: rt.Desc})
	}
	return err
}

func snapshotTable(n *ranges.Node) *ranges.Table {
	tb := ranges.NewTable()
	for _, rt := range n.Router().Table().All() {
		tb.Update(&rangespb.RangeInfo{Range: rt.Desc})
	}
	return tb
}

// TestWriteBatchStaleTable: a batch planned on a table read before two
// splits is refused by the split ranges and resent, regrouped, to the
// children; every op applies exactly once.
func TestWriteBatchStaleTable(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	c.WaitReady()
	split(t, c, 0, "m")
	n := c.Nodes[0]
	_ = n.Refresh(ctxT(t, 10*time.Second))
	stale := snapshotTable(n)
	split(t, c, 1, "f")
	split(t, c, 2, "s")
	r := ranges.NewRouter(ranges.RouterConfig{}, stale, n, copyRefresher{n, stale})
	keys := batchKeys("-stale")
	res, err := r.WriteBatch(ctxT(t, 30*time.Second), ksKV, casChain(keys, "s"))
	if err != nil {
		t.Fatal(err)
	}
	checkChain(t, c, keys, "s", res)
}

// lossyTransport runs every request but, for the first write to each range,
// loses the answer; before it answers it may run a hook (a split).
type lossyTransport struct {
	n      *ranges.Node
	mu     sync.Mutex
	lost   map[uint64]bool
	before func(rangeID uint64)
}

func (l *lossyTransport) Execute(ctx context.Context, storeID uint64, req *rangespb.ExecuteRequest) (*rangespb.ExecuteResponse, error) {
	resp, err := l.n.Execute(ctx, storeID, req)
	if err != nil || req.GetCommand().GetWrite() == nil || resp.Result.Status != kvpb.Status_STATUS_OK {
		return resp, err
	}
	l.mu.Lock()
	first := !l.lost[req.RangeId]
	l.lost[req.RangeId] = true
	l.mu.Unlock()
	if !first {
		return resp, err
	}
	if l.before != nil {
		l.before(req.RangeId)
	}
	return nil, status.Error(codes.DeadlineExceeded, "injected: answer lost")
}

// TestWriteBatchLostAnswerThenSplit: each range applies its part of the
// batch but the answer is lost, and the range splits before the retry, so
// the ops of a resent command now lie in two ranges. The retry must not
// apply any op again: it is resent whole to the range of its first key,
// which answers with the remembered result.
func TestWriteBatchLostAnswerThenSplit(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	c.WaitReady()
	split(t, c, 0, "m")
	n := c.Nodes[0]
	_ = n.Refresh(ctxT(t, 10*time.Second))
	splitAt := map[string]bool{}
	var splitMu sync.Mutex
	lt := &lossyTransport{n: n, lost: map[uint64]bool{}}
	lt.before = func(rangeID uint64) {
		rt := n.Router().Table().Get(rangeID)
		if rt == nil {
			return
		}
		key := "f"
		if string(rt.Desc.Start) >= "m" {
			key = "s"
		}
		splitMu.Lock()
		defer splitMu.Unlock()
		if splitAt[key] {
			return
		}
		splitAt[key] = true
		split(t, c, 1, key)
	}
	tb := snapshotTable(n)
	r := ranges.NewRouter(ranges.RouterConfig{MinBackoff: time.Millisecond}, tb, lt, copyRefresher{n, tb})
	// Keys in descending order: each command's first key is the highest of
	// its range, so the split leaves it in the right child and the other
	// keys of the command in the left one, which refuses the retry without
	// looking for a remembered result. Planning those ops afresh would apply
	// them again.
	keys := batchKeys("-lost")
	slices.Reverse(keys)
	res, err := r.WriteBatch(ctxT(t, 60*time.Second), ksKV, casChain(keys, "l"))
	if err != nil {
		t.Fatal(err)
	}
	checkChain(t, c, keys, "l", res)
	if len(splitAt) != 2 {
		t.Errorf("split at %v, want f and s", splitAt)
	}
}

// TestWriteBatchConcurrentSplits: batches run while ranges split under
// them; every op applies exactly once.
func TestWriteBatchConcurrentSplits(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	c.WaitReady()
	r := c.Nodes[0].Router()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, k := range []string{"m", "f", "s", "c", "w"} {
			if _, err := c.Client(1).Admin.Split(ctxT(t, 30*time.Second), &rangespb.SplitRequest{Keyspace: "kv", Key: []byte(k)}); err != nil {
				t.Errorf("split at %q: %v", k, ranges.FromStatus(err))
			}
		}
	}()
	for round := 0; ; round++ {
		keys := batchKeys(fmt.Sprintf("-conc%d", round))
		res, err := r.WriteBatch(ctxT(t, 30*time.Second), ksKV, casChain(keys, "c"))
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		checkChain(t, c, keys, "c", res)
		select {
		case <-done:
			if round < 2 {
				continue
			}
			return
		default:
		}
	}
}

// BenchmarkBatchVsSinglePuts: 100 Puts over four ranges, one Router.Write
// each, against one 100-op WriteBatch.
func BenchmarkBatchVsSinglePuts(b *testing.B) {
	c := rangestest.Start(b, 3, rangestest.Options{})
	c.WaitReady()
	for _, k := range []string{"g", "n", "t"} {
		if _, err := c.Client(0).Admin.Split(context.Background(), &rangespb.SplitRequest{Keyspace: "kv", Key: []byte(k)}); err != nil {
			b.Fatal(ranges.FromStatus(err))
		}
	}
	r := c.Nodes[0].Router()
	_ = c.Nodes[0].Refresh(context.Background())
	keys := make([][]byte, 100)
	for i := range keys {
		keys[i] = []byte(fmt.Sprintf("%c-bench-%d", 'a'+i%26, i))
	}
	put := func(k []byte) *kvpb.Op {
		return &kvpb.Op{Op: &kvpb.Op_Put{Put: &kvpb.PutOp{Key: k, Value: []byte("v")}}}
	}
	b.Run("single", func(b *testing.B) {
		for b.Loop() {
			for _, k := range keys {
				if _, err := r.Write(context.Background(), ksKV, k, nil, put(k)); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("batch", func(b *testing.B) {
		for b.Loop() {
			ops := make([]ranges.KeyedOp, len(keys))
			for i, k := range keys {
				ops[i] = ranges.KeyedOp{Op: put(k)}
			}
			if _, err := r.WriteBatch(context.Background(), ksKV, ops); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// stuckTransport is a store that stopped answering (a paused process): what
// is sent to store stuck runs, but its answer never comes back.
type stuckTransport struct {
	n     *ranges.Node
	stuck uint64
}

func (s *stuckTransport) Execute(ctx context.Context, storeID uint64, req *rangespb.ExecuteRequest) (*rangespb.ExecuteResponse, error) {
	resp, err := s.n.Execute(ctx, storeID, req)
	if storeID == s.stuck {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return resp, err
}

// TestHedgedAttempts: the leader's store applies but does not answer; the
// attempt is sent again to the followers, which forward to the leader and
// answer with the remembered result: a call returns well within an attempt
// timeout (with hedging off it cannot, the deadline being shorter than the
// attempt), and every CAS applied once.
func TestHedgedAttempts(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	c.WaitReady()
	n := c.Nodes[0]
	_ = n.Refresh(ctxT(t, 10*time.Second))
	mustPut(t, c.Client(0), "hedge-warm", "x")
	rt := n.Router().Table().Lookup(ksKV, []byte("hedge"))
	if rt == nil || rt.LeaderStore() == 0 {
		t.Fatal("no route with a known leader")
	}
	tr := &stuckTransport{n: n, stuck: rt.LeaderStore()}
	router := func(hedge time.Duration) *ranges.Router {
		tb := snapshotTable(n)
		tb.SetLeader(rt.Desc.Id, rt.LeaderID, rt.LeaderTerm)
		return ranges.NewRouter(ranges.RouterConfig{AttemptTimeout: time.Minute, HedgeAfter: hedge}, tb, tr, copyRefresher{n, tb})
	}
	if _, err := router(-1).Write(ctxT(t, 3*time.Second), ksKV, []byte("hedge-off"), nil, casOp("hedge-off", "", "1")); err == nil {
		t.Fatal("without hedging a write through a stuck leader returned before its attempt timed out")
	}
	r := router(50 * time.Millisecond)
	res, err := r.Write(ctxT(t, 20*time.Second), ksKV, []byte("hedge"), nil, casOp("hedge", "", "1"), casOp("hedge", "1", "2"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Results) != 2 || !res.Results[0].CasOk || !res.Results[1].CasOk {
		t.Fatalf("hedged write: %v, want both CASes done once", res.Results)
	}
	keys := batchKeys("-hedge")
	out, err := r.WriteBatch(ctxT(t, 20*time.Second), ksKV, casChain(keys, "h"))
	if err != nil {
		t.Fatal(err)
	}
	checkChain(t, c, keys, "h", out)
	if _, err := r.Read(ctxT(t, 20*time.Second), ksKV, []byte("hedge"), false, &kvpb.Op{Op: &kvpb.Op_Get{Get: &kvpb.GetOp{Key: []byte("hedge")}}}); err != nil {
		t.Fatal(err)
	}
	if v, found, err := c.Client(1).Get(ctxT(t, 10*time.Second), []byte("hedge")); err != nil || !found || string(v) != "2" {
		t.Fatalf("hedge = %q %v %v, want 2", v, found, err)
	}
}
