// Package memrange is a range held in memory for the coprocessors' unit
// tests: a kvstore.Tx over a map that, like the real one, refuses keys
// outside the range's span with kvstore.ErrKeyNotInRange.
package memrange

import (
	"fmt"
	"slices"
	"sync"

	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// Range is one range's data. It is safe for concurrent use.
type Range struct {
	desc *kvpb.RangeDescriptor
	mu   sync.RWMutex
	data map[string][]byte
}

var _ kvstore.Tx = (*Range)(nil)

// New returns an empty range [start, end) of a keyspace; an empty end is
// the keyspace's end.
func New(ks kvpb.Keyspace, start, end string) *Range {
	return &Range{
		desc: &kvpb.RangeDescriptor{Id: 1, Keyspace: ks, Start: []byte(start), End: []byte(end), Ver: 1},
		data: map[string][]byte{},
	}
}

func (r *Range) Range() *kvpb.RangeDescriptor { return r.desc }

func (r *Range) Get(key []byte) ([]byte, bool, error) {
	if !kvstore.ContainsKey(r.desc, key) {
		return nil, false, fmt.Errorf("get %q: %w", key, kvstore.ErrKeyNotInRange)
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, ok := r.data[string(key)]
	return slices.Clone(v), ok, nil
}

func (r *Range) Iterate(start, end []byte, fn func(key, value []byte) bool) error {
	r.mu.RLock()
	var keys []string
	for k := range r.data {
		if kvstore.ContainsKey(r.desc, []byte(k)) && k >= string(start) && (len(end) == 0 || k < string(end)) {
			keys = append(keys, k)
		}
	}
	r.mu.RUnlock()
	slices.Sort(keys)
	for _, k := range keys {
		r.mu.RLock()
		v, ok := r.data[k]
		r.mu.RUnlock()
		if ok && !fn([]byte(k), v) {
			break
		}
	}
	return nil
}

func (r *Range) Set(key, value []byte) error {
	if !kvstore.ContainsKey(r.desc, key) {
		return fmt.Errorf("set %q: %w", key, kvstore.ErrKeyNotInRange)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.data[string(key)] = slices.Clone(value)
	return nil
}

func (r *Range) Delete(key []byte) error {
	if !kvstore.ContainsKey(r.desc, key) {
		return fmt.Errorf("delete %q: %w", key, kvstore.ErrKeyNotInRange)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.data, string(key))
	return nil
}
