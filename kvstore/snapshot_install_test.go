package kvstore

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// dumpEngine reads every key of the engine.
func dumpEngine(t testing.TB, e *Engine) map[string]string {
	t.Helper()
	it, err := e.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	out := map[string]string{}
	for it.First(); it.Valid(); it.Next() {
		out[string(it.Key())] = string(it.Value())
	}
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}
	return out
}

func saveSnapshot(t testing.TB, s *rangeStateMachine) *bytes.Buffer {
	t.Helper()
	ctx, err := s.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.SaveSnapshot(ctx, &buf, nil); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// ingestEntries lists what is left in the engine's directory of snapshot
// tables.
func ingestEntries(t testing.TB, e *Engine) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(e.ingestDir, func(path string, d os.DirEntry, err error) error {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if path != e.ingestDir {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var tableLimits = installLimits{inlineBytes: 0, tableBytes: 1}

// A snapshot replaces exactly its range's metadata, data and dedupe spans of
// the one engine the store's ranges share, whichever way it is installed: as
// one batch, or as tables of one pair each, of a few pairs, or after the
// first pairs outgrew a batch. Between two tables' keys lies a stale key of
// the old state, which the first table's range deletion must cover; the
// neighbours' keys sit right against each span's bounds.
func TestSnapshotInstallReplacesExactlyItsSpans(t *testing.T) {
	cases := []struct {
		name     string
		limits   installLimits
		dedupe   bool // the snapshot carries dedupe records
		flush    bool // the old state is in tables, not in the memtable
		ingested bool
	}{
		{name: "one batch", limits: defaultInstallLimits, dedupe: true},
		{name: "a table per pair", limits: tableLimits, dedupe: true, ingested: true},
		{name: "tables of a few pairs", limits: installLimits{0, 2 << 10}, dedupe: true, ingested: true},
		{name: "tables after a batch's worth", limits: installLimits{3 << 10, 2 << 10}, dedupe: true, ingested: true},
		{name: "tables, no dedupe records", limits: tableLimits, ingested: true},
		{name: "tables over flushed tables", limits: installLimits{0, 2 << 10}, dedupe: true, flush: true, ingested: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := newTestSM(t, openTestEngine(t, t.TempDir()), 1)
			defer src.sm.engine.Close()
			src.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "b", "d"))
			value := string(bytes.Repeat([]byte("v"), 100))
			for i := 0; i < 100; i += 10 {
				var ops []*kvpb.Op
				for j := i; j < i+10; j++ {
					ops = append(ops, putOp(fmt.Sprintf("b%03d", j), value))
				}
				src.apply(write(1, ops...))
			}
			if tc.dedupe {
				src.apply(casWithID(1, "c", "req-snap"))
				src.apply(casWithID(1, "b050", "req-snap2"))
			}

			e := openTestEngine(t, t.TempDir())
			defer e.Close()
			if _, err := e.StoreID(); err != nil {
				t.Fatal(err)
			}
			// The old state of range 1: keys the snapshot has, keys between
			// them that it lacks, and a dedupe record it lacks.
			old := newTestSM(t, e, 1)
			old.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "b", "d"))
			old.apply(write(1, putOp("b001", "stale"), putOp("b0505", "stale"), putOp("c9", "stale")))
			old.apply(casWithID(1, "b0505", "req-old"))
			// Its neighbours, with keys and dedupe records against its bounds.
			left := newTestSM(t, e, 3)
			left.apply(initCmd(3, kvpb.Keyspace_KEYSPACE_KV, "", "b"))
			left.apply(write(1, putOp("a", "l"), putOp("a\xff\xff", "l")))
			left.apply(casWithID(1, "a\xff\xff", "req-left"))
			right := newTestSM(t, e, 2)
			right.apply(initCmd(2, kvpb.Keyspace_KEYSPACE_KV, "d", ""))
			right.apply(write(1, putOp("d", "r"), putOp("e", "r")))
			right.apply(casWithID(1, "d", "req-right"))
			if err := e.db.Set(DataKey(kvpb.Keyspace_KEYSPACE_DIST, []byte("b1")), []byte("dist"), nil); err != nil {
				t.Fatal(err)
			}

			spans := replicaSpans(1, src.sm.Descriptor())
			want := map[string]string{}
			for k, v := range dumpEngine(t, e) {
				if spanOf(spans, []byte(k)) < 0 {
					want[k] = v
				}
			}
			for k, v := range dumpEngine(t, src.sm.engine) {
				if spanOf(spans, []byte(k)) >= 0 {
					want[k] = v
				}
			}
			if tc.flush {
				if err := e.db.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			ingestsBefore := e.db.Metrics().Ingest.Count

			e.install = tc.limits
			if err := old.sm.RecoverFromSnapshot(saveSnapshot(t, src.sm), nil); err != nil {
				t.Fatal(err)
			}
			got := dumpEngine(t, e)
			for k, v := range want {
				if g, ok := got[k]; !ok || g != v {
					t.Errorf("key %q = %.20q (present %v), want %.20q", k, g, ok, v)
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("key %q should be gone", k)
				}
			}
			if ingested := e.db.Metrics().Ingest.Count > ingestsBefore; ingested != tc.ingested {
				t.Errorf("installed by ingestion: %v, want %v", ingested, tc.ingested)
			}
			if left := ingestEntries(t, e); len(left) > 0 {
				t.Errorf("the install left %v", left)
			}

			// The state machine, and one opened again on the engine, see the
			// snapshot's applied index and descriptor, and go on from there.
			if old.sm.Applied() != src.sm.Applied() || !proto.Equal(old.sm.Descriptor(), src.sm.Descriptor()) {
				t.Fatalf("after install: applied %d, descriptor %v; want %d, %v", old.sm.Applied(), old.sm.Descriptor(), src.sm.Applied(), src.sm.Descriptor())
			}
			reopened := newTestSM(t, e, 1)
			if reopened.index != src.sm.Applied() || !proto.Equal(reopened.sm.Descriptor(), src.sm.Descriptor()) {
				t.Fatalf("reopened: applied %d, descriptor %v", reopened.index, reopened.sm.Descriptor())
			}
			if tc.dedupe {
				if again := reopened.apply(casWithID(1, "c", "req-snap"))[0]; !again.Results[0].CasOk {
					t.Fatalf("a retry after the snapshot must return the first result: %v", again.Results)
				}
			}
			if got := reopened.get(1, "b099").Results[0]; string(got.Value) != value {
				t.Fatalf("b099 = %q after reopening", got.Value)
			}
		})
	}
}

// A snapshot that fails part way (a key outside the range or out of order,
// a stream cut short, the install stopped) leaves the engine as it was and no
// table behind.
func TestSnapshotInstallFailureLeavesNoTrace(t *testing.T) {
	desc := initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "b", "d").GetInit().Range
	descBytes, err := proto.Marshal(desc)
	if err != nil {
		t.Fatal(err)
	}
	key := func(i int) []byte { return DataKey(kvpb.Keyspace_KEYSPACE_KV, fmt.Appendf(nil, "b%05d", i)) }
	// stream writes a snapshot of pairs b00000..b(n-1), then tail.
	stream := func(n int, tail func(w *bufio.Writer)) *bytes.Buffer {
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		_, _ = w.WriteString(snapMagic)
		_ = writeRecord(w, tagHeader, descBytes, u64(10))
		_ = writeRecord(w, tagPair, metaKey(1, metaApplied), u64(10))
		_ = writeRecord(w, tagPair, metaKey(1, metaDescriptor), descBytes)
		for i := range n {
			_ = writeRecord(w, tagPair, key(i), []byte("new"))
		}
		tail(w)
		_ = w.Flush()
		return &buf
	}
	end := func(w *bufio.Writer) { _ = writeRecord(w, tagEnd) }
	cases := []struct {
		name   string
		limits installLimits
		input  func() io.Reader
		done   func(r io.Reader) (io.Reader, <-chan struct{})
	}{
		{name: "batch, foreign key", limits: defaultInstallLimits, input: func() io.Reader {
			return stream(50, func(w *bufio.Writer) {
				_ = writeRecord(w, tagPair, DataKey(kvpb.Keyspace_KEYSPACE_KV, []byte("x")), []byte("evil"))
				end(w)
			})
		}},
		{name: "tables, foreign key", limits: tableLimits, input: func() io.Reader {
			return stream(50, func(w *bufio.Writer) {
				_ = writeRecord(w, tagPair, DataKey(kvpb.Keyspace_KEYSPACE_KV, []byte("x")), []byte("evil"))
				end(w)
			})
		}},
		{name: "tables, key out of order", limits: tableLimits, input: func() io.Reader {
			return stream(50, func(w *bufio.Writer) {
				_ = writeRecord(w, tagPair, key(20), []byte("again"))
				end(w)
			})
		}},
		{name: "tables, meta key after data", limits: tableLimits, input: func() io.Reader {
			return stream(50, func(w *bufio.Writer) {
				_ = writeRecord(w, tagPair, metaKey(1, metaRangeTime), u64(1))
				end(w)
			})
		}},
		{name: "tables, cut short", limits: tableLimits, input: func() io.Reader {
			b := stream(50, end)
			return bytes.NewReader(b.Bytes()[:b.Len()/2])
		}},
		{name: "tables, stopped", limits: installLimits{0, 4 << 10}, input: func() io.Reader { return stream(40000, end) },
			done: func(r io.Reader) (io.Reader, <-chan struct{}) {
				// Stopped once half the stream was read.
				done := make(chan struct{})
				return &closeAfter{r: r, n: r.(*bytes.Buffer).Len() / 2, done: done}, done
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := openTestEngine(t, t.TempDir())
			defer e.Close()
			ts := newTestSM(t, e, 1)
			ts.apply(initCmd(1, kvpb.Keyspace_KEYSPACE_KV, "b", "d"))
			ts.apply(write(1, putOp("b00001", "old"), putOp("c", "old")))
			before := dumpEngine(t, e)
			e.install = tc.limits
			r := tc.input()
			var done <-chan struct{}
			if tc.done != nil {
				r, done = tc.done(r)
			}
			err := ts.sm.RecoverFromSnapshot(r, done)
			if err == nil {
				t.Fatal("the bad snapshot was installed")
			}
			if tc.done != nil && !errors.Is(err, sm.ErrSnapshotStopped) {
				t.Fatalf("stopped install: %v, want ErrSnapshotStopped", err)
			}
			if after := dumpEngine(t, e); !maps.Equal(before, after) {
				t.Fatalf("a failed install changed the engine: %d keys before, %d after", len(before), len(after))
			}
			if left := ingestEntries(t, e); len(left) > 0 {
				t.Fatalf("a failed install left %v", left)
			}
			if ts.sm.Applied() != 2 {
				t.Fatalf("applied index after a failed install = %d, want 2", ts.sm.Applied())
			}
		})
	}
}

// closeAfter closes done once n bytes of r were read.
type closeAfter struct {
	r    io.Reader
	n    int
	done chan struct{}
}

func (c *closeAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n -= n; c.n <= 0 && c.done != nil {
		close(c.done)
		c.done = nil
	}
	return n, err
}

// The tables of an install a crash interrupted are removed when the engine
// opens again.
func TestOpenEngineRemovesUnfinishedInstalls(t *testing.T) {
	dir := t.TempDir()
	e := openTestEngine(t, dir)
	stale := filepath.Join(e.ingestDir, "range-1-123", "000000.sst")
	if err := os.MkdirAll(filepath.Dir(stale), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("half a table"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openTestEngine(t, dir)
	defer e.Close()
	if left := ingestEntries(t, e); len(left) > 0 {
		t.Fatalf("open left %v", left)
	}
}

// generatedSnapshot streams a snapshot of range 1 (keyspace kv, all of it)
// with pairs of valueSize random bytes, about size bytes in all, and a
// dedupe record for every 16th key, as SaveSnapshot writes them. It makes
// them as they are read: a test of a large install holds none of it.
func generatedSnapshot(t testing.TB, size, valueSize int) io.Reader {
	desc := &kvpb.RangeDescriptor{Id: 1, Keyspace: kvpb.Keyspace_KEYSPACE_KV, Ver: 1, ConfVer: 1,
		Replicas: []*kvpb.Replica{{ReplicaId: 1, StoreId: 1}}, NextReplicaId: 2}
	descBytes, err := proto.Marshal(desc)
	if err != nil {
		t.Fatal(err)
	}
	pairs := size / (valueSize + 12)
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w := bufio.NewWriterSize(pw, 64<<10)
		rng := rand.NewChaCha8([32]byte{1})
		value := make([]byte, valueSize)
		key := func(i int) []byte { return fmt.Appendf(nil, "key%09d", i) }
		err := func() error {
			if _, err := w.WriteString(snapMagic); err != nil {
				return err
			}
			if err := writeRecord(w, tagHeader, descBytes, u64(1000)); err != nil {
				return err
			}
			if err := writeRecord(w, tagPair, metaKey(1, metaApplied), u64(1000)); err != nil {
				return err
			}
			if err := writeRecord(w, tagPair, metaKey(1, metaDescriptor), descBytes); err != nil {
				return err
			}
			for i := range pairs {
				_, _ = rng.Read(value)
				if err := writeRecord(w, tagPair, DataKey(desc.Keyspace, key(i)), value); err != nil {
					return err
				}
			}
			for i := 0; i < pairs; i += 16 {
				if err := writeRecord(w, tagPair, dedupeKey(desc.Keyspace, key(i), []byte("req")), []byte("result")); err != nil {
					return err
				}
			}
			if err := writeRecord(w, tagEnd); err != nil {
				return err
			}
			return w.Flush()
		}()
		pw.CloseWithError(err)
	}()
	t.Cleanup(func() {
		pr.Close()
		wg.Wait()
	})
	return pr
}

// heapPeak samples the bytes of heap objects (live or not yet swept) until
// stop is called, which returns the highest sample less the first.
func heapPeak() (stop func() uint64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	runtime.GC()
	base := read()
	peak := base
	quit, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			peak = max(peak, read())
			select {
			case <-quit:
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 {
		close(quit)
		<-exited
		return max(peak, read()) - base
	}
}

// installGenerated installs a generated snapshot of size bytes on a new
// engine in dir and returns the peak heap growth during the install.
func installGenerated(t testing.TB, dir string, size, valueSize int, limits installLimits) (heap uint64, e *Engine) {
	t.Helper()
	// A small memtable and block cache, so that the engine's own buffers do
	// not blur the figure.
	e, err := OpenEngine(dir, EngineOptions{CacheBytes: 8 << 20, MemTableBytes: 4 << 20}, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	e.install = limits
	s := &rangeStateMachine{engine: e, rangeID: 1, replicaID: 1}
	if _, err := s.Open(nil); err != nil {
		t.Fatal(err)
	}
	r := generatedSnapshot(t, size, valueSize)
	stop := heapPeak()
	err = s.RecoverFromSnapshot(r, nil)
	heap = stop()
	if err != nil {
		t.Fatal(err)
	}
	return heap, e
}

// maxInstallHeap is the memory one install may take, whatever the size of
// the range (issue 15).
const maxInstallHeap = 64 << 20

// TestSnapshotInstallMemoryIsBounded installs a 96 MiB range of 1,000-byte
// values and a 48 MiB one of 32-byte values (the most keys, hence the
// largest filters and indexes, per table): the heap grows by less than 64 MiB
// (it grew by several times the range when a snapshot was one batch in
// memory).
func TestSnapshotInstallMemoryIsBounded(t *testing.T) {
	for _, tc := range []struct{ size, valueSize int }{{96 << 20, 1000}, {48 << 20, 32}} {
		t.Run(fmt.Sprintf("%dMiB of %d-byte values", tc.size>>20, tc.valueSize), func(t *testing.T) {
			heap, e := installGenerated(t, t.TempDir(), tc.size, tc.valueSize, defaultInstallLimits)
			defer e.Close()
			t.Logf("heap growth: %.1f MiB", float64(heap)/(1<<20))
			if heap > maxInstallHeap {
				t.Errorf("the install grew the heap by %d MiB, want at most %d MiB", heap>>20, maxInstallHeap>>20)
			}
			if e.db.Metrics().Ingest.Count == 0 {
				t.Error("the large snapshot was not ingested")
			}
			// Every pair arrived.
			lo, hi := dataSpan(&kvpb.RangeDescriptor{Keyspace: kvpb.Keyspace_KEYSPACE_KV})
			it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for it.First(); it.Valid(); it.Next() {
				n++
			}
			if err := it.Close(); err != nil {
				t.Fatal(err)
			}
			if want := tc.size / (tc.valueSize + 12); n != want {
				t.Fatalf("%d pairs after the install, want %d", n, want)
			}
		})
	}
}

// BenchmarkSnapshotInstall installs a generated snapshot of a 128 MiB and a
// 512 MiB range on an empty engine (1,000-byte random values; the stream is
// made as it is read, on another goroutine) and reports the throughput and
// the peak heap growth of an install. batch/128MiB is the way every snapshot
// was installed before, one batch in memory, for comparison.
//
//	flock /tmp/bifrost-heavy.lock go test -run '^$' -bench SnapshotInstall -benchtime 2x ./kvstore/
func BenchmarkSnapshotInstall(b *testing.B) {
	batch := installLimits{inlineBytes: 1 << 40, tableBytes: defaultInstallLimits.tableBytes}
	for _, bc := range []struct {
		name   string
		size   int
		limits installLimits
	}{
		{"ingest/128MiB", 128 << 20, defaultInstallLimits},
		{"ingest/512MiB", 512 << 20, defaultInstallLimits},
		{"batch/128MiB", 128 << 20, batch},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(bc.size))
			var peak uint64
			for range b.N {
				b.StopTimer()
				dir, err := os.MkdirTemp(b.TempDir(), "engine")
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				heap, e := installGenerated(b, dir, bc.size, 1000, bc.limits)
				b.StopTimer()
				peak = max(peak, heap)
				if err := e.Close(); err != nil {
					b.Fatal(err)
				}
				if err := os.RemoveAll(dir); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}
