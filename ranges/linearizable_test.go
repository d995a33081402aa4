package ranges_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// The register model of one key. A state is the key's value; "" is absent
// (the test never writes an empty value).

type linOpKind int

const (
	linGet linOpKind = iota
	linPut
	linCAS
)

type linInput struct {
	Kind linOpKind
	Key  string
	// Value is what a put or a CAS writes.
	Value string
	// Expected is what a CAS compares with ("": the key must be absent).
	Expected string
}

type linOutput struct {
	// Unknown: the call returned an error, so a write may or may not have
	// applied. Such an operation returns at the end of the history, so it can
	// be linearised anywhere after its call, including after everything else
	// (which is the same as never).
	Unknown bool
	// Value is what a get read, or what a CAS found ("": absent).
	Value string
	// OK is whether a CAS wrote.
	OK bool
}

func linStep(state, input, output interface{}) (bool, interface{}) {
	s := state.(string)
	in := input.(linInput)
	out := output.(linOutput)
	switch in.Kind {
	case linGet:
		return out.Value == s, s
	case linPut:
		return true, in.Value
	case linCAS:
		if out.Unknown {
			if s == in.Expected {
				return true, in.Value
			}
			return true, s
		}
		if out.OK {
			return s == in.Expected && out.Value == s, in.Value
		}
		return s != in.Expected && out.Value == s, s
	}
	return false, s
}

func describeLinOp(input, output interface{}) string {
	in := input.(linInput)
	out := output.(linOutput)
	show := func(v string) string {
		if v == "" {
			return "∅"
		}
		return v
	}
	var s string
	switch in.Kind {
	case linGet:
		s = fmt.Sprintf("get(%s) -> %s", in.Key, show(out.Value))
	case linPut:
		s = fmt.Sprintf("put(%s, %s)", in.Key, in.Value)
	case linCAS:
		s = fmt.Sprintf("cas(%s, %s→%s)", in.Key, show(in.Expected), in.Value)
		if !out.Unknown {
			s += fmt.Sprintf(" -> %v (found %s)", out.OK, show(out.Value))
		}
	}
	if out.Unknown {
		s += " -> ?"
	}
	return s
}

var linModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(linInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	PartitionEvent: func(history []porcupine.Event) [][]porcupine.Event {
		// A return event carries the output only; it goes to its call's key.
		keyOf := map[int]string{}
		byKey := map[string][]porcupine.Event{}
		var keys []string
		for _, ev := range history {
			if ev.Kind == porcupine.CallEvent {
				keyOf[ev.Id] = ev.Value.(linInput).Key
			}
			k := keyOf[ev.Id]
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], ev)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Event, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init:              func() interface{} { return "" },
	Step:              linStep,
	DescribeOperation: describeLinOp,
	DescribeState: func(state interface{}) string {
		if s := state.(string); s != "" {
			return s
		}
		return "∅"
	},
}

// TestLinearizableUnderLeaderKill runs concurrent gets, puts and CASes on a
// few keys of one 3-replica range while the range's leader store is killed
// and restarted, and checks the history with porcupine.
func TestLinearizableUnderLeaderKill(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	runLinearizable(t, c, 9*time.Second, func(start time.Time, now func() int64) []porcupine.Annotation {
		// Kill the store that leads range 1 (the kv keyspace, which holds
		// every key here), keep it down, restart it.
		const kills = 2
		var notes []porcupine.Annotation
		time.Sleep(time.Second)
		for k := 0; k < kills; k++ {
			leader := c.WaitLeader(1)
			t0 := now()
			c.StopNode(leader)
			t.Logf("%v: killed store %d, the leader of range 1", time.Since(start).Round(time.Millisecond), leader)
			time.Sleep(1500 * time.Millisecond)
			c.StartNode(leader)
			t.Logf("%v: restarted store %d", time.Since(start).Round(time.Millisecond), leader)
			notes = append(notes, porcupine.Annotation{
				Tag: "nemesis", Start: t0, End: now(),
				Description: fmt.Sprintf("store %d down", leader),
				Details:     fmt.Sprintf("node %d (leader of range 1) killed and restarted", leader),
			})
			time.Sleep(1500 * time.Millisecond)
		}
		return notes
	})
}

// TestLinearizableSteady runs concurrent gets, puts and CASes on a few keys
// of one 3-replica range, with no nemesis, for a short while, and checks the
// history with porcupine. The clients are spread over the three stores, so
// most calls arrive at a follower's store: a read that is not a ReadIndex
// read, or a write acknowledged before it commits, shows up here within a
// few seconds (TestBugzooStaleReadIsCaught and TestBugzooAckBeforeCommitIsCaught
// run this test with those faults built in).
func TestLinearizableSteady(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	c.WaitLeader(1)
	runLinearizable(t, c, 3*time.Second, func(time.Time, func() int64) []porcupine.Annotation { return nil })
}

// Splits and merges under concurrent Put/Get/CAS: the keys move between
// ranges while the clients run (issue: split and merge, porcupine).
func TestLinearizableUnderSplitsAndMerges(t *testing.T) {
	c := rangestest.Start(t, 3, rangestest.Options{})
	admin := c.Client(0)
	runLinearizable(t, c, 9*time.Second, func(start time.Time, now func() int64) []porcupine.Annotation {
		var notes []porcupine.Annotation
		time.Sleep(500 * time.Millisecond)
		for round := 0; time.Since(start) < 8*time.Second; round++ {
			for _, key := range []string{"lin-b", "lin-c", "lin-d"} {
				t0 := now()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				resp, err := admin.Admin.Split(ctx, &rangespb.SplitRequest{Keyspace: "kv", Key: []byte(key)})
				cancel()
				if err != nil {
					t.Errorf("split at %s: %v", key, ranges.FromStatus(err))
					return notes
				}
				notes = append(notes, porcupine.Annotation{Tag: "nemesis", Start: t0, End: now(),
					Description: "split at " + key, Details: fmt.Sprintf("new range %d", resp.Right.Id)})
				time.Sleep(200 * time.Millisecond)
			}
			for i := 0; i < 3; i++ {
				t0 := now()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := admin.Admin.Merge(ctx, &rangespb.MergeRequest{RangeId: 1})
				cancel()
				if err != nil {
					t.Errorf("merge: %v", ranges.FromStatus(err))
					return notes
				}
				notes = append(notes, porcupine.Annotation{Tag: "nemesis", Start: t0, End: now(), Description: "merge into range 1"})
				time.Sleep(200 * time.Millisecond)
			}
			t.Logf("%v: split/merge round %d done", time.Since(start).Round(time.Millisecond), round)
		}
		return notes
	})
}

// runLinearizable runs clients doing random Get/Put/CAS on a few keys for
// runFor while nemesis (on the test goroutine) disturbs the cluster, then
// checks the history with porcupine.
func runLinearizable(t *testing.T, c *rangestest.Cluster, runFor time.Duration, nemesis func(start time.Time, now func() int64) []porcupine.Annotation) {
	const (
		nClients  = 6
		opTimeout = 3 * time.Second
		minOK     = 100
		// A slow machine (the race detector, a loaded CI box) runs the
		// clients on past runFor, by up to maxExtra, until wantOK
		// operations have succeeded.
		wantOK   = 3 * minOK
		maxExtra = 10 * time.Second
	)
	keys := []string{"lin-a", "lin-b", "lin-c", "lin-d"}
	// Every client is dialled here: the nemesis below changes c.Nodes, which
	// c.Client must not race with.
	clients := make([]*ranges.Client, nClients)
	for i := range clients {
		cl, err := ranges.Dial(c.Addr(i % len(c.Nodes)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		clients[i] = cl
	}

	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }

	type pending struct {
		op      porcupine.Operation
		unknown bool
	}
	histories := make([][]pending, nClients)
	var succeeded atomic.Int64
	var failedReads, timedOut [nClients]int
	stop := make(chan struct{})
	var wg sync.WaitGroup
	stopClients := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	// A t.Fatal in the nemesis still stops the clients before the cluster
	// is closed.
	defer stopClients()

	for id := 0; id < nClients; id++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(start.UnixNano()), uint64(id)))
			cl := clients[id]
			// The last value this client saw per key, for CASes that may win.
			seen := map[string]string{}
			backoff := 100 * time.Millisecond
			for {
				select {
				case <-stop:
					return
				default:
				}
				in := linInput{Key: keys[rng.IntN(len(keys))]}
				switch r := rng.IntN(10); {
				case r < 4:
					in.Kind = linGet
				case r < 7:
					in.Kind = linPut
					in.Value = fmt.Sprint(rng.IntN(1000) + 1)
				default:
					in.Kind = linCAS
					in.Value = fmt.Sprint(rng.IntN(1000) + 1)
					in.Expected = seen[in.Key]
					if rng.IntN(5) == 0 {
						in.Expected = fmt.Sprint(rng.IntN(1000) + 1)
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				call := now()
				var out linOutput
				var err error
				switch in.Kind {
				case linGet:
					var v []byte
					var found bool
					v, found, err = cl.Get(ctx, []byte(in.Key))
					if found {
						out.Value = string(v)
					}
				case linPut:
					err = cl.Put(ctx, []byte(in.Key), []byte(in.Value))
				case linCAS:
					var expected, cur []byte
					if in.Expected != "" {
						expected = []byte(in.Expected)
					}
					out.OK, cur, err = cl.CompareAndSwap(ctx, []byte(in.Key), expected, []byte(in.Value))
					out.Value = string(cur)
				}
				ret := now()
				cancel()
				if errors.Is(ctx.Err(), context.DeadlineExceeded) {
					timedOut[id]++
				}
				if err != nil {
					if in.Kind == linGet {
						// A failed read changed nothing.
						failedReads[id]++
					} else {
						histories[id] = append(histories[id], pending{
							op:      porcupine.Operation{ClientId: id, Input: in, Call: call, Output: linOutput{Unknown: true}},
							unknown: true,
						})
					}
					// Back off while the node or the range is down: every
					// failed write is one more unknown outcome, and the
					// checker's work grows exponentially with those that
					// overlap.
					backoff = min(2*backoff, time.Second)
					select {
					case <-stop:
						return
					case <-time.After(backoff):
					}
					continue
				}
				backoff = 100 * time.Millisecond
				succeeded.Add(1)
				histories[id] = append(histories[id], pending{op: porcupine.Operation{
					ClientId: id, Input: in, Call: call, Output: out, Return: ret,
				}})
				switch {
				case in.Kind == linPut, in.Kind == linCAS && out.OK:
					seen[in.Key] = in.Value
				default:
					seen[in.Key] = out.Value
				}
			}
		}()
	}

	notes := nemesis(start, now)
	if rest := runFor - time.Since(start); rest > 0 {
		time.Sleep(rest)
	}
	if succeeded.Load() < wantOK {
		t.Logf("%v: %d operations succeeded; running on until %d have, for at most %v more",
			time.Since(start).Round(time.Millisecond), succeeded.Load(), wantOK, maxExtra)
		for deadline := time.Now().Add(maxExtra); succeeded.Load() < wantOK && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
	}
	stopClients()

	// Unknown writes return at the end of the history, after everything else.
	end := now() + 1
	var history []porcupine.Operation
	var ok, unknown, reads int
	nextLane := nClients
	for _, h := range histories {
		for _, p := range h {
			op := p.op
			if p.unknown {
				op.Return = end
				// Its own lane in the visualization: the client went on.
				op.ClientId = nextLane
				nextLane++
				unknown++
			} else {
				ok++
				if op.Input.(linInput).Kind == linGet {
					reads++
				}
			}
			history = append(history, op)
		}
	}
	failed, slow := 0, 0
	for id := range failedReads {
		failed += failedReads[id]
		slow += timedOut[id]
	}
	t.Logf("%d operations succeeded (%d reads), %d writes have an unknown outcome, %d reads failed, %d calls ran into the %v timeout; %v in all",
		ok, reads, unknown, failed, slow, opTimeout, time.Since(start).Round(time.Millisecond))
	if ok < minOK {
		t.Fatalf("only %d operations succeeded, want at least %d: the test proved nothing", ok, minOK)
	}

	// The model partitions the history by key, so the check is a few small
	// searches and takes milliseconds; the timeout is only a backstop, and
	// running into it fails the test: an unchecked history proves nothing.
	checkStart := time.Now()
	res := porcupine.CheckOperationsTimeout(linModel, history, linCheckTimeout)
	t.Logf("porcupine: %s in %v (%d operations on %d keys)", res, time.Since(checkStart).Round(time.Millisecond),
		len(history), len(linModel.Partition(history)))
	switch res {
	case porcupine.Ok:
	case porcupine.Unknown:
		t.Fatalf("the linearizability check did not finish within %v: the history is neither proven nor refuted", linCheckTimeout)
	case porcupine.Illegal:
		_, info := porcupine.CheckOperationsVerbose(linModel, history, linCheckTimeout)
		info.AddAnnotations(notes)
		path, err := writeVisualization(info)
		if err != nil {
			t.Errorf("write the visualization: %v", err)
		}
		t.Fatalf("the history is not linearizable; visualization: %s", path)
	}
}

// linCheckTimeout bounds one porcupine check. It is generous: a check of a
// partitioned history takes milliseconds even under the race detector.
const linCheckTimeout = 2 * time.Minute

// linVisualizationDirEnv names the directory the visualization of a
// non-linearizable history goes to; the default is os.TempDir().
// The TestBugzoo*IsCaught tests set it to a directory of their own.
const linVisualizationDirEnv = "BIFROST_LINEARIZABILITY_DIR"

// writeVisualization writes porcupine's HTML view of a history to a file that
// outlives the test (t.TempDir is removed) and returns its path.
func writeVisualization(info porcupine.LinearizationInfo) (string, error) {
	f, err := os.CreateTemp(os.Getenv(linVisualizationDirEnv), "bifrost-linearizability-*.html")
	if err != nil {
		return "", err
	}
	err = porcupine.Visualize(linModel, info, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return f.Name(), errors.Join(err, os.Remove(f.Name()))
	}
	return f.Name(), nil
}

// TestLinearizabilityModel checks the model on small histories, so that a
// pass of TestLinearizableUnderLeaderKill means something.
func TestLinearizabilityModel(t *testing.T) {
	const end = 1000
	get := func(call, ret int64, v string) porcupine.Operation {
		return porcupine.Operation{Input: linInput{Kind: linGet, Key: "k"}, Call: call, Output: linOutput{Value: v}, Return: ret}
	}
	put := func(call, ret int64, v string) porcupine.Operation {
		return porcupine.Operation{Input: linInput{Kind: linPut, Key: "k", Value: v}, Call: call, Output: linOutput{}, Return: ret}
	}
	unknownPut := func(call int64, v string) porcupine.Operation {
		return porcupine.Operation{Input: linInput{Kind: linPut, Key: "k", Value: v}, Call: call, Output: linOutput{Unknown: true}, Return: end}
	}
	cas := func(call, ret int64, expected, v string, ok bool, found string) porcupine.Operation {
		return porcupine.Operation{Input: linInput{Kind: linCAS, Key: "k", Expected: expected, Value: v}, Call: call,
			Output: linOutput{OK: ok, Value: found}, Return: ret}
	}
	unknownCAS := func(call int64, expected, v string) porcupine.Operation {
		return porcupine.Operation{Input: linInput{Kind: linCAS, Key: "k", Expected: expected, Value: v}, Call: call,
			Output: linOutput{Unknown: true}, Return: end}
	}
	other := func(op porcupine.Operation) porcupine.Operation {
		in := op.Input.(linInput)
		in.Key = "other"
		op.Input = in
		return op
	}
	for _, tc := range []struct {
		name    string
		history []porcupine.Operation
		want    porcupine.CheckResult
	}{
		{"stale read after a put", []porcupine.Operation{put(0, 10, "1"), get(20, 30, "")}, porcupine.Illegal},
		{"read concurrent with a put", []porcupine.Operation{put(0, 30, "1"), get(10, 20, "")}, porcupine.Ok},
		{"unknown put never seen", []porcupine.Operation{unknownPut(0, "1"), get(20, 30, "")}, porcupine.Ok},
		{"unknown put seen", []porcupine.Operation{unknownPut(0, "1"), get(20, 30, "1")}, porcupine.Ok},
		{"unknown put seen, then unseen", []porcupine.Operation{unknownPut(0, "1"), get(20, 30, "1"), get(40, 50, "")}, porcupine.Illegal},
		{"value seen before its put", []porcupine.Operation{get(0, 10, "1"), unknownPut(20, "1")}, porcupine.Illegal},
		{"cas chain", []porcupine.Operation{cas(0, 10, "", "1", true, ""), cas(20, 30, "", "2", false, "1"),
			cas(40, 50, "1", "2", true, "1"), get(60, 70, "2")}, porcupine.Ok},
		{"cas fails on a match", []porcupine.Operation{put(0, 10, "1"), cas(20, 30, "1", "2", false, "1")}, porcupine.Illegal},
		{"cas reports a wrong value", []porcupine.Operation{put(0, 10, "1"), cas(20, 30, "3", "2", false, "4")}, porcupine.Illegal},
		{"cas wins twice", []porcupine.Operation{cas(0, 10, "", "1", true, ""), cas(20, 30, "", "2", true, "")}, porcupine.Illegal},
		{"unknown cas that could not apply", []porcupine.Operation{put(0, 10, "1"), unknownCAS(20, "5", "2"), get(30, 40, "2")}, porcupine.Illegal},
		{"unknown cas that applied", []porcupine.Operation{put(0, 10, "1"), unknownCAS(20, "1", "2"), get(30, 40, "2")}, porcupine.Ok},
		{"keys are independent", []porcupine.Operation{put(0, 10, "1"), other(get(20, 30, ""))}, porcupine.Ok},
		{"one bad key fails all", []porcupine.Operation{other(put(0, 10, "1")), other(get(20, 30, "")), put(0, 10, "1")}, porcupine.Illegal},
	} {
		if got := porcupine.CheckOperationsTimeout(linModel, tc.history, 5*time.Second); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
