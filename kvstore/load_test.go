package kvstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

func TestLoadRateAndSplitKey(t *testing.T) {
	var l loads
	d := &kvpb.RangeDescriptor{Id: 7, Start: []byte("a"), End: []byte("z")}
	t0 := time.Unix(1000, 0)
	// Cold keys over the whole span, hot ones in [p000, p100): the median
	// of the ops, not of the bytes, is in the hot part.
	for i := 0; i < 1000; i++ {
		k := fmt.Sprintf("p%03d", i%100)
		if i%10 == 0 {
			k = fmt.Sprintf("c%03d", i)
		}
		l.record(7, []*kvpb.Op{putOp(k, "v")}, i%2 == 0, t0.Add(time.Duration(i)*time.Millisecond))
	}
	r := l.get(7, false)
	r.mu.Lock()
	r.roll(t0.Add(LoadWindow))
	rate, keys := r.lastRate, r.lastKeys
	r.mu.Unlock()
	if want := 1000 / LoadWindow.Seconds(); rate != want {
		t.Fatalf("rate %v ops/s, want %v", rate, want)
	}
	key := medianSplitKey(d, nil, keys)
	if key == nil || string(key) < "p000" || string(key) >= "p100" {
		t.Fatalf("split key %q, want one inside the hot keys [p000, p100)", key)
	}
	// Two windows later with no ops the range is cold again.
	r.mu.Lock()
	r.roll(t0.Add(3 * LoadWindow))
	rate = r.lastRate
	r.mu.Unlock()
	if rate != 0 {
		t.Fatalf("rate %v after an idle window, want 0", rate)
	}
}

func TestLoadSplitKeyRefusesOneHotKey(t *testing.T) {
	d := &kvpb.RangeDescriptor{Id: 7, Start: []byte("a"), End: []byte("z")}
	var keys [][]byte
	for i := 0; i < loadSamples; i++ {
		keys = append(keys, []byte("hot"))
	}
	if k := medianSplitKey(d, nil, keys); k != nil {
		t.Fatalf("split key %q for load on one key: no split spreads it", k)
	}
	// The range's own start key is never a split key.
	for i := range keys {
		keys[i] = []byte("a")
	}
	keys[0] = []byte("m")
	if k := medianSplitKey(d, nil, keys); k != nil {
		t.Fatalf("split key %q at the range's start", k)
	}
	// Too few samples say nothing.
	if k := medianSplitKey(d, nil, [][]byte{[]byte("b"), []byte("c")}); k != nil {
		t.Fatalf("split key %q from two samples", k)
	}
}

// splitAtUnit aligns a key to the start of its unit: the first byte.
type splitAtUnit struct{ Coprocessor }

func (splitAtUnit) AlignSplitKey(k []byte) []byte { return k[:1] }

func TestLoadSplitKeyIsAligned(t *testing.T) {
	d := &kvpb.RangeDescriptor{Id: 7, Start: []byte("a"), End: []byte("z")}
	var keys [][]byte
	for i := 0; i < loadSamples; i++ {
		keys = append(keys, []byte(fmt.Sprintf("%c%03d", 'b'+i%8, i)))
	}
	k := medianSplitKey(d, splitAtUnit{}, keys)
	if len(k) != 1 {
		t.Fatalf("split key %q, want it aligned to a unit's start", k)
	}
}
