package kvstore

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/prometheus/client_golang/prometheus"
)

func TestEngineOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		o    EngineOptions
		want string
	}{
		{EngineOptions{}, ""},
		{EngineOptions{CacheBytes: 512 << 20, MemTableBytes: 128 << 20}, ""},
		{EngineOptions{CacheBytes: 1000}, "block cache"},
		{EngineOptions{MemTableBytes: 1000}, "memtable"},
		{EngineOptions{MemTableBytes: 4 << 30}, "memtable"},
	} {
		err := tc.o.Validate()
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.o, err, tc.want)
		}
		if tc.want != "" {
			if _, err := Open(Config{DataDir: t.TempDir(), RaftAddr: "127.0.0.1:1", Engine: tc.o}); err == nil {
				t.Errorf("%+v: Open accepted it", tc.o)
			}
		}
	}
	if d := DefaultCacheBytes(); d < 64<<20 || d > 8<<30 {
		t.Errorf("DefaultCacheBytes() = %d", d)
	}
}

// TestEngineMetrics checks the collector reads the database's own figures:
// lookups of absent keys are answered by the tables' bloom filters, repeated
// reads by the block cache.
func TestEngineMetrics(t *testing.T) {
	e, err := OpenEngine(t.TempDir(), EngineOptions{CacheBytes: 8 << 20, MemTableBytes: 1 << 20}, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	b := e.db.NewBatch()
	for i := range 1000 {
		if err := b.Set(fmt.Appendf(nil, "key-%04d", i), []byte("value"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := e.db.Flush(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for i := range 1000 {
			if _, _, err := get(e.db, fmt.Appendf(nil, "key-%04d", i)); err != nil {
				t.Fatal(err)
			}
			if _, found, err := get(e.db, fmt.Appendf(nil, "key-%04d-absent", i)); err != nil || found {
				t.Fatal(found, err)
			}
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(engineCollector{&Store{engine: e}})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		m := f.GetMetric()[0]
		got[f.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
	}
	if len(got) != 10 {
		t.Errorf("%d engine metrics, want 10: %v", len(got), got)
	}
	for _, name := range []string{"bifrost_kvstore_engine_block_cache_hits_total", "bifrost_kvstore_engine_bloom_filter_hits_total", "bifrost_kvstore_engine_block_cache_bytes", "bifrost_kvstore_engine_disk_bytes"} {
		if got[name] <= 0 {
			t.Errorf("%s = %v, want > 0", name, got[name])
		}
	}
}
