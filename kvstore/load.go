package kvstore

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// LoadWindow is the span over which a range's load is measured: the rate is
// that of the last whole window, and the split-by-load key is chosen from
// the keys sampled in it.
const LoadWindow = 10 * time.Second

// loadSamples is how many keys a window keeps (a reservoir sample of every
// key written or read through this store).
const loadSamples = 64

// rangeLoad measures the reads and writes this store sent to one range (it
// sends them to the leader, so on the leader's store this is the range's
// load) and samples their keys, for a split that halves the load rather than
// the bytes (a hot key range in a large, cold range, say).
type rangeLoad struct {
	mu           sync.Mutex
	start        time.Time
	reads, write uint64
	seen         uint64
	keys         [][]byte
	// last is the previous whole window.
	lastRate float64
	lastKeys [][]byte
}

// loads holds the per-range trackers; a range gets one on its first op.
type loads struct {
	mu sync.RWMutex
	m  map[uint64]*rangeLoad
}

// get is on every read and write's path: a range's tracker is looked up
// under the read lock, and made under the write lock only once.
func (l *loads) get(rangeID uint64, create bool) *rangeLoad {
	l.mu.RLock()
	r := l.m[rangeID]
	l.mu.RUnlock()
	if r != nil || !create {
		return r
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r = l.m[rangeID]
	if r == nil {
		if l.m == nil {
			l.m = map[uint64]*rangeLoad{}
		}
		r = &rangeLoad{}
		l.m[rangeID] = r
	}
	return r
}

func (l *loads) drop(rangeID uint64) {
	l.mu.Lock()
	delete(l.m, rangeID)
	l.mu.Unlock()
}

// record counts the ops and samples their keys.
func (l *loads) record(rangeID uint64, ops []*kvpb.Op, write bool, now time.Time) {
	if len(ops) == 0 {
		return
	}
	r := l.get(rangeID, true)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.roll(now)
	for _, op := range ops {
		if write {
			r.write++
		} else {
			r.reads++
		}
		k, isScan := OpKey(op)
		if isScan || len(k) == 0 {
			continue
		}
		r.seen++
		if len(r.keys) < loadSamples {
			r.keys = append(r.keys, bytes.Clone(k))
		} else if i := rand.Uint64N(r.seen); i < loadSamples {
			r.keys[i] = bytes.Clone(k)
		}
	}
}

// roll closes the window if it is over. A window with no ops that follows
// an idle period leaves rate 0: a range idle for two windows is cold.
func (r *rangeLoad) roll(now time.Time) {
	if r.start.IsZero() {
		r.start = now
		return
	}
	el := now.Sub(r.start)
	if el < LoadWindow {
		return
	}
	if el < 2*LoadWindow {
		r.lastRate = float64(r.reads+r.write) / el.Seconds()
		r.lastKeys = r.keys
	} else {
		r.lastRate, r.lastKeys = 0, nil
	}
	r.start, r.reads, r.write, r.seen, r.keys = now, 0, 0, 0, nil
}

// Load returns the ops per second (reads plus writes) this store sent to the
// range over the last whole window.
func (s *Store) Load(rangeID uint64) float64 {
	r := s.loads.get(rangeID, false)
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.roll(time.Now())
	return r.lastRate
}

// LoadSplitKey returns a key that splits the range's recent ops in two
// halves (the median of the sampled keys), aligned so that no coprocessor
// unit is cut; nil when there is none: too few samples, or the load is on
// one key (or one unit), which no split can spread.
func (s *Store) LoadSplitKey(rangeID uint64) ([]byte, error) {
	rep, err := s.replica(rangeID)
	if err != nil {
		return nil, err
	}
	rep.mu.RLock()
	d, cop := rep.desc, rep.cop
	rep.mu.RUnlock()
	if d == nil {
		return nil, ErrNotReady
	}
	r := s.loads.get(rangeID, false)
	if r == nil {
		return nil, nil
	}
	r.mu.Lock()
	r.roll(time.Now())
	keys := r.lastKeys
	if len(keys) < len(r.keys) {
		keys = r.keys
	}
	keys = slices.Clone(keys)
	r.mu.Unlock()
	return medianSplitKey(d, cop, keys), nil
}

// medianSplitKey is the median of keys inside d, aligned by the coprocessor,
// if it lies strictly inside d and leaves some sampled load on each side.
func medianSplitKey(d *kvpb.RangeDescriptor, cop Coprocessor, keys [][]byte) []byte {
	keys = slices.DeleteFunc(keys, func(k []byte) bool { return !ContainsKey(d, k) })
	if len(keys) < loadSamples/8 {
		return nil
	}
	slices.SortFunc(keys, bytes.Compare)
	key := keys[len(keys)/2]
	if a, ok := cop.(SplitAligner); ok {
		key = a.AlignSplitKey(key)
	}
	if len(key) == 0 || bytes.Compare(key, d.Start) <= 0 || !ContainsKey(d, key) {
		return nil
	}
	// The split must leave load on both sides: all samples at or after the
	// key (one hot key at the median, say) make the left side cold.
	if bytes.Compare(keys[0], key) >= 0 {
		return nil
	}
	return key
}
