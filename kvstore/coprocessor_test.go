package kvstore

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// keyCop is a coprocessor shaped like dist's: the key it writes comes from
// its input, not from the op's key, and it mirrors its keys in memory, where
// it counts them against a limit the input names, as dist counts a tenant's
// routes.
//
// Input "add <key> [limit]" writes key; "has <key>" asks the in-memory index;
// "agree <key>" whether the index holds the key exactly when the reader's
// range does; "span" whether every indexed key lies in the reader's range.
type keyCop struct {
	mu   sync.Mutex
	keys map[string]bool
	// resets counts the Resets of this instance.
	resets int
}

func newKeyCop(*kvpb.RangeDescriptor) Coprocessor { return &keyCop{keys: map[string]bool{}} }

func (c *keyCop) Mutate(tx Tx, input []byte) ([]byte, error) {
	f := strings.Fields(string(input))
	if len(f) < 2 || f[0] != "add" {
		return []byte("invalid"), nil
	}
	key := []byte(f[1])
	if _, found, err := tx.Get(key); err != nil {
		return nil, err
	} else if found {
		return []byte("exists"), nil
	}
	if len(f) > 2 {
		limit, _ := strconv.Atoi(f[2])
		c.mu.Lock()
		n := len(c.keys)
		c.mu.Unlock()
		if n >= limit {
			return []byte("limit"), nil
		}
	}
	if err := tx.Set(key, []byte("v")); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.keys[string(key)] = true
	c.mu.Unlock()
	return []byte("ok"), nil
}

func (c *keyCop) Query(r Reader, input []byte) ([]byte, error) {
	f := strings.Fields(string(input))
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case len(f) == 2 && f[0] == "has":
		if c.keys[f[1]] {
			return []byte("yes"), nil
		}
		return []byte("no"), nil
	case len(f) == 2 && f[0] == "agree":
		// The index holds the key exactly when the range does.
		if c.keys[f[1]] == ContainsKey(r.Range(), []byte(f[1])) {
			return []byte("yes"), nil
		}
		return []byte("no"), nil
	case len(f) == 1 && f[0] == "span":
		for k := range c.keys {
			if !ContainsKey(r.Range(), []byte(k)) {
				return []byte("outside " + k), nil
			}
		}
		return []byte("inside"), nil
	}
	return []byte("invalid"), nil
}

// Reset clears the index and fills it key by key, as a coprocessor may.
func (c *keyCop) Reset(r Reader) error {
	c.mu.Lock()
	c.keys = map[string]bool{}
	c.resets++
	c.mu.Unlock()
	return r.Iterate(nil, nil, func(k, _ []byte) bool {
		c.mu.Lock()
		c.keys[string(k)] = true
		c.mu.Unlock()
		return true
	})
}

func newCopSM(t *testing.T, e *Engine, rangeID uint64) *testSM {
	s := &rangeStateMachine{engine: e, rangeID: rangeID, replicaID: 1, coprocessorFor: newKeyCop}
	applied, err := s.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &testSM{t: t, sm: s, index: applied}
}

func coprocOp(key, input string) *kvpb.Op {
	return &kvpb.Op{Op: &kvpb.Op_Coproc{Coproc: &kvpb.CoprocOp{Key: []byte(key), Input: []byte(input)}}}
}

func (ts *testSM) query(ver uint64, key, input string) string {
	ts.t.Helper()
	out, err := ts.sm.Lookup(&kvpb.Query{Ver: ver, Ops: []*kvpb.Op{coprocOp(key, input)}})
	if err != nil {
		ts.t.Fatal(err)
	}
	res := out.(*kvpb.CommandResult)
	if res.Status != kvpb.Status_STATUS_OK {
		ts.t.Fatalf("query %q: %v %s", input, res.Status, res.Message)
	}
	return string(res.Results[0].Value)
}

// A coprocessor that touches a key outside the range (its input disagrees
// with the op's key, or an admin split cut the unit it works on) used to
// return ErrKeyNotInRange from the apply path, which Dragonboat treats as
// fatal: every replica stopped on that entry, and again on every replay.
// The command must be refused as a result instead, its writes undone, and
// the rest of the batch applied.
func TestCoprocessorKeyOutsideRangeIsRefusedNotFatal(t *testing.T) {
	ts := newCopSM(t, openTestEngine(t, t.TempDir()), 7)
	ts.apply(initCmd(7, kvpb.Keyspace_KEYSPACE_DIST, "b", "m"))
	res := ts.apply(
		write(1, coprocOp("c", "add c")),
		// The op's key is in the range, the key the input names is not; the
		// put before it belongs to the same command and must go too.
		write(1, putOp("d", "1"), coprocOp("d", "add x")),
		// Two coprocessor ops: the first ran and changed the coprocessor's
		// memory before the second was refused.
		write(1, coprocOp("g", "add g"), coprocOp("h", "add z")),
		write(1, coprocOp("e", "add e")),
	)
	want := []kvpb.Status{kvpb.Status_STATUS_OK, kvpb.Status_STATUS_KEY_NOT_IN_RANGE, kvpb.Status_STATUS_KEY_NOT_IN_RANGE, kvpb.Status_STATUS_OK}
	for i, r := range res {
		if r.Status != want[i] {
			t.Fatalf("command %d: %v (%s), want %v", i, r.Status, r.Message, want[i])
		}
		if r.Status == kvpb.Status_STATUS_KEY_NOT_IN_RANGE && (r.Range.GetId() != 7 || r.Range.Ver != 1) {
			t.Fatalf("command %d: a refusal must carry the current descriptor, got %v", i, r.Range)
		}
	}
	for k, v := range map[string]string{"c": "v", "e": "v", "d": "", "g": ""} {
		got := ts.get(1, k).Results[0]
		if string(got.Value) != v || got.Found != (v != "") {
			t.Errorf("%s = %q (found %v), want %q", k, got.Value, got.Found, v)
		}
	}
	for k, v := range map[string]string{"c": "yes", "e": "yes", "g": "no"} {
		if got := ts.query(1, "b", "has "+k); got != v {
			t.Errorf("index has %s: %s, want %s", k, got, v)
		}
	}
	// The range keeps serving.
	if r := ts.apply(write(1, coprocOp("f", "add f")))[0]; r.Status != kvpb.Status_STATUS_OK {
		t.Fatalf("after the refusal: %v %s", r.Status, r.Message)
	}
}

// A command's staged writes are visible to its own reads, merged in key
// order with the batch's keys, and reach the batch only when flushed.
func TestStagedTxReadsItsOwnWrites(t *testing.T) {
	e := openTestEngine(t, t.TempDir())
	defer e.Close()
	desc := &kvpb.RangeDescriptor{Id: 1, Keyspace: kvpb.Keyspace_KEYSPACE_KV, Start: []byte("b"), End: []byte("y")}
	for _, k := range []string{"a", "c", "e", "g", "y"} {
		if err := e.db.Set(DataKey(desc.Keyspace, []byte(k)), []byte("db"), nil); err != nil {
			t.Fatal(err)
		}
	}
	batch := e.db.NewIndexedBatch()
	defer batch.Close()
	tx := newStagedTx(batch, desc)
	for _, k := range []string{"b", "d", "e", "x"} {
		if err := tx.Set([]byte(k), []byte("tx")); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Delete([]byte("c")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Set([]byte("z"), nil); !errors.Is(err, ErrKeyNotInRange) {
		t.Fatalf("set outside the range: %v", err)
	}
	collect := func(start, end string, stopAfter int) string {
		var out []string
		err := tx.Iterate([]byte(start), []byte(end), func(k, v []byte) bool {
			out = append(out, string(k)+"="+string(v))
			return len(out) < stopAfter
		})
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(out, " ")
	}
	tests := []struct {
		start, end string
		stop       int
		want       string
	}{
		{"", "", 100, "b=tx d=tx e=tx g=db x=tx"},
		{"c", "f", 100, "d=tx e=tx"},
		{"", "", 2, "b=tx d=tx"},
		{"", "", 3, "b=tx d=tx e=tx"},
		{"f", "", 1, "g=db"},
		{"h", "", 100, "x=tx"},
	}
	for _, tc := range tests {
		if got := collect(tc.start, tc.end, tc.stop); got != tc.want {
			t.Errorf("iterate [%q, %q) stop after %d: %q, want %q", tc.start, tc.end, tc.stop, got, tc.want)
		}
	}
	if _, found, _ := tx.Get([]byte("c")); found {
		t.Error("a staged delete is not seen by Get")
	}
	if v, _, _ := tx.Get([]byte("e")); string(v) != "tx" {
		t.Errorf("Get e = %q, want tx", v)
	}
	if _, found, _ := get(batch, DataKey(desc.Keyspace, []byte("b"))); found {
		t.Fatal("a staged write reached the batch before flush")
	}
	if err := tx.flush(); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := get(batch, DataKey(desc.Keyspace, []byte("c"))); found {
		t.Error("flushed delete missing")
	}
	if v, _, _ := get(batch, DataKey(desc.Keyspace, []byte("x"))); string(v) != "tx" {
		t.Errorf("flushed x = %q", v)
	}
}

// Update used to publish a split's or merge's descriptor and only then
// rebuild the coprocessor in place (clear, then refill key by key): a query
// in between missed entries that existed before and after, or saw the new
// span with the old index. A query must see the descriptor and the index of
// the same moment, and never a half-built index.
func TestQueriesDuringSpanChangesSeeAWholeIndex(t *testing.T) {
	e := openTestEngine(t, t.TempDir())
	defer e.Close()
	parent := newCopSM(t, e, 1)
	parent.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_DIST, "", ""))
	var adds []*kvpb.Command
	for i := range 200 {
		for _, p := range []string{"a", "z"} {
			k := fmt.Sprintf("%s%03d", p, i)
			adds = append(adds, write(1, coprocOp(k, "add "+k)))
		}
	}
	parent.apply(adds...)

	stop := make(chan struct{})
	failed := make(chan string, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, in := range []string{"has a100", "agree a100", "agree z100", "span"} {
				out, err := parent.sm.Lookup(&kvpb.Query{Ver: 0, Ops: []*kvpb.Op{coprocOp("", in)}})
				if err != nil {
					failed <- err.Error()
					return
				}
				res := out.(*kvpb.CommandResult)
				if res.Status == kvpb.Status_STATUS_EPOCH_NOT_MATCH {
					// Ver 0 never matches; ask again at the version the
					// refusal names, as the router does.
					out, _ = parent.sm.Lookup(&kvpb.Query{Ver: res.Range.Ver, Ops: []*kvpb.Op{coprocOp("", in)}})
					res = out.(*kvpb.CommandResult)
				}
				if res.Status != kvpb.Status_STATUS_OK {
					continue // the version moved on in between
				}
				if got := string(res.Results[0].Value); got != "yes" && got != "inside" {
					select {
					case failed <- fmt.Sprintf("%q at version %d: %s", in, res.Range.Ver, got):
					default:
					}
					return
				}
			}
		}
	}()
	ver := uint64(1)
	for i := range 30 {
		childID := uint64(100 + i)
		split := parent.apply(splitCmd(ver, "m", childID))[0]
		if split.Status != kvpb.Status_STATUS_OK {
			t.Fatalf("split: %v %s", split.Status, split.Message)
		}
		ver = split.Range.Ver
		child := newCopSM(t, e, childID)
		frozen := child.apply(prepareMergeCmd(split.SplitChild.Ver, 1, ver))[0]
		merged := parent.apply(commitMergeCmd(ver, frozen.Range))[0]
		if merged.Status != kvpb.Status_STATUS_OK {
			t.Fatalf("merge: %v %s", merged.Status, merged.Message)
		}
		ver = merged.Range.Ver
	}
	close(stop)
	wg.Wait()
	select {
	case msg := <-failed:
		t.Fatal(msg)
	default:
	}
}

// dist and retain check a tenant's limit against their in-memory count,
// which was rebuilt for a split's new span only after the whole Update
// batch. A replica that got the split and a later add in one batch counted
// with the old span; one that got them in two batches counted with the new:
// LIMIT on one replica, OK on another, and their data diverged. What a
// command sees must depend only on the entries before it.
func TestCoprocessorStateAfterSplitIsTheSameForAnyBatching(t *testing.T) {
	log := []*kvpb.Command{
		initCmd(1, kvpb.Keyspace_KEYSPACE_DIST, "", ""),
		write(1, coprocOp("a1", "add a1")),
		write(1, coprocOp("z1", "add z1")),
		splitCmd(1, "m", 2),
		// The range holds one key now, so a limit of two admits one more.
		write(2, coprocOp("a2", "add a2 2")),
		write(2, coprocOp("a3", "add a3 2")),
	}
	batchings := map[string][]int{
		"one entry per batch":      {1, 1, 1, 1, 1, 1},
		"split and adds together":  {1, 2, 3},
		"everything in one batch":  {6},
		"split ends a batch":       {2, 2, 2},
		"split alone then the two": {3, 1, 2},
	}
	want := []string{"ok", "limit"}
	for name, sizes := range batchings {
		t.Run(name, func(t *testing.T) {
			ts := newCopSM(t, openTestEngine(t, t.TempDir()), 1)
			var results []*kvpb.CommandResult
			next := 0
			for _, n := range sizes {
				results = append(results, ts.apply(log[next:next+n]...)...)
				next += n
			}
			for i, r := range results[4:] {
				if r.Status != kvpb.Status_STATUS_OK {
					t.Fatalf("add %d: %v %s", i, r.Status, r.Message)
				}
				if got := string(r.Results[0].Value); got != want[i] {
					t.Errorf("add %d after the split: %s, want %s", i, got, want[i])
				}
			}
			if got := ts.get(2, "a2").Results[0]; !got.Found {
				t.Error("a2 was not written")
			}
			if got := ts.get(2, "a3").Results[0]; got.Found {
				t.Error("a3 was written past the limit")
			}
		})
	}
}
