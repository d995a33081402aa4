package kvstore

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// Metrics are the store's Prometheus metrics, registered by NewMetrics.
type Metrics struct {
	proposals          *prometheus.CounterVec
	proposeLatency     prometheus.Histogram
	reads              *prometheus.CounterVec
	applyLatency       prometheus.Histogram
	appliedEntries     prometheus.Counter
	snapshotsRecovered prometheus.Counter
	snapshotsSaved     prometheus.Counter
	// Snapshots installed by ingesting tables (the large ones), and the
	// bytes of those tables.
	snapshotsIngested     prometheus.Counter
	snapshotIngestedBytes prometheus.Counter
	// spanConflicts counts the starts refused and snapshots held back
	// because another local replica held part of the span (spans.go).
	spanConflicts *prometheus.CounterVec
	// dedupeSweeps counts the SweepDedupe commands applied, dedupeSwept the
	// expired records they deleted.
	dedupeSweeps, dedupeSwept prometheus.Counter
	// recovered and ingested mirror snapshotsRecovered and
	// snapshotsIngested for callers without a registry, sweepsApplied
	// dedupeSweeps.
	recovered, ingested, sweepsApplied atomic.Uint64
	// scans counts the spans measured key by key to size a range (size.go).
	scans atomic.Uint64
	// readIndexes counts the reads that took a read index (Store.ReadIndexes).
	readIndexes atomic.Uint64
	sizeScans   prometheus.CounterFunc
	ranges      prometheus.GaugeFunc
	leaders     prometheus.GaugeFunc
	bytes       keyspaceBytes
}

func newMetrics(reg prometheus.Registerer, rangesFn, leadersFn func() float64, bytesFn func() map[kvpb.Keyspace]uint64) *Metrics {
	m := &Metrics{
		proposals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_kvstore_proposals_total",
			Help: "Raft proposals by outcome (ok, rejected, error).",
		}, []string{"outcome"}),
		proposeLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bifrost_kvstore_propose_duration_seconds",
			Help:    "Time from proposal to applied result.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_kvstore_reads_total",
			Help: "Reads by kind (linearizable, stale) and outcome.",
		}, []string{"kind", "outcome"}),
		applyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bifrost_kvstore_apply_batch_duration_seconds",
			Help:    "Time to apply one batch of committed entries.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
		appliedEntries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_kvstore_applied_entries_total",
			Help: "Raft entries applied by range state machines.",
		}),
		snapshotsRecovered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_kvstore_snapshots_recovered_total",
			Help: "Range snapshots installed on this store.",
		}),
		snapshotsSaved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_kvstore_snapshots_saved_total",
			Help: "Range snapshots written by this store.",
		}),
		snapshotsIngested: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_kvstore_snapshots_ingested_total",
			Help: "Range snapshots installed by ingesting tables written from the stream (those too large for one batch); part of bifrost_kvstore_snapshots_recovered_total.",
		}),
		snapshotIngestedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_kvstore_snapshot_ingested_bytes_total",
			Help: "Bytes of the tables ingested to install range snapshots.",
		}),
		spanConflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_kvstore_span_conflicts_total",
			Help: "Replica starts refused (start_refused) and snapshots held back (snapshot_waited) because another replica on the store held part of the span.",
		}, []string{"action"}),
		dedupeSweeps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_kvstore_dedupe_sweeps_total",
			Help: "Timed sweeps of expired dedupe records (SweepDedupe) applied by replicas on this store.",
		}),
		dedupeSwept: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_kvstore_dedupe_swept_records_total",
			Help: "Expired dedupe records the timed sweeps deleted on this store.",
		}),
		ranges: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bifrost_kvstore_ranges",
			Help: "Replicas of ranges running on this store.",
		}, rangesFn),
		leaders: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bifrost_kvstore_leaders",
			Help: "Ranges whose leader is the replica on this store.",
		}, leadersFn),
		bytes: keyspaceBytes{desc: prometheus.NewDesc("bifrost_kvstore_range_bytes",
			"Bytes of the keys and values of the ranges with a replica on this store, by keyspace (each range's size counter, kept at apply time; as bifrost admin ranges shows them).",
			[]string{"keyspace"}, nil), sizes: bytesFn},
	}
	m.sizeScans = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "bifrost_kvstore_range_size_scans_total",
		Help: "Spans measured key by key to size a range (a split's child, a replica with no size counter when it opens); range sizes are otherwise counters kept at apply time.",
	}, func() float64 { return float64(m.scans.Load()) })
	if reg != nil {
		reg.MustRegister(m.proposals, m.proposeLatency, m.reads, m.applyLatency, m.appliedEntries, m.snapshotsRecovered, m.snapshotsSaved, m.snapshotsIngested, m.snapshotIngestedBytes, m.spanConflicts, m.dedupeSweeps, m.dedupeSwept, m.ranges, m.leaders, m.bytes, m.sizeScans)
	}
	return m
}

// engineCollector exports the Pebble database's own figures, read from
// pebble.DB.Metrics at each scrape.
type engineCollector struct {
	s *Store
}

var (
	engineCacheBytes  = prometheus.NewDesc("bifrost_kvstore_engine_block_cache_bytes", "Bytes held by the engine's block cache.", nil, nil)
	engineCacheHits   = prometheus.NewDesc("bifrost_kvstore_engine_block_cache_hits_total", "Block cache lookups that found the block.", nil, nil)
	engineCacheMisses = prometheus.NewDesc("bifrost_kvstore_engine_block_cache_misses_total", "Block cache lookups that read the block from a table file.", nil, nil)
	engineFilterHits  = prometheus.NewDesc("bifrost_kvstore_engine_bloom_filter_hits_total", "Table reads a bloom filter avoided (the key was not in the table).", nil, nil)
	engineMemtable    = prometheus.NewDesc("bifrost_kvstore_engine_memtable_bytes", "Bytes allocated by the engine's memtables.", nil, nil)
	engineCompactions = prometheus.NewDesc("bifrost_kvstore_engine_compactions_total", "Compactions the engine ran.", nil, nil)
	engineDebt        = prometheus.NewDesc("bifrost_kvstore_engine_compaction_debt_bytes", "Bytes the engine estimates it must compact to reach a stable shape.", nil, nil)
	engineL0Files     = prometheus.NewDesc("bifrost_kvstore_engine_l0_files", "Table files in level 0 (each one a read may have to probe).", nil, nil)
	engineReadAmp     = prometheus.NewDesc("bifrost_kvstore_engine_read_amplification", "Tables and memtables a point read may probe.", nil, nil)
	engineDiskBytes   = prometheus.NewDesc("bifrost_kvstore_engine_disk_bytes", "Bytes the engine's files take on disk.", nil, nil)
)

func (c engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{engineCacheBytes, engineCacheHits, engineCacheMisses, engineFilterHits, engineMemtable, engineCompactions, engineDebt, engineL0Files, engineReadAmp, engineDiskBytes} {
		ch <- d
	}
}

func (c engineCollector) Collect(ch chan<- prometheus.Metric) {
	// A scrape during Close reads nothing: a closed Pebble panics.
	c.s.sizeMu.RLock()
	defer c.s.sizeMu.RUnlock()
	if c.s.sizeClosed {
		return
	}
	m := c.s.engine.db.Metrics()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(engineCacheBytes, float64(m.BlockCache.Size))
	counter(engineCacheHits, float64(m.BlockCache.Hits))
	counter(engineCacheMisses, float64(m.BlockCache.Misses))
	counter(engineFilterHits, float64(m.Filter.Hits))
	gauge(engineMemtable, float64(m.MemTable.Size))
	counter(engineCompactions, float64(m.Compact.Count))
	gauge(engineDebt, float64(m.Compact.EstimatedDebt))
	gauge(engineL0Files, float64(m.Levels[0].TablesCount))
	gauge(engineReadAmp, float64(m.ReadAmp()))
	gauge(engineDiskBytes, float64(m.DiskSpaceUsage()))
}

// keyspaceBytes is bifrost_kvstore_range_bytes: the sizes come from the
// store when Prometheus scrapes, as the range count does.
type keyspaceBytes struct {
	desc  *prometheus.Desc
	sizes func() map[kvpb.Keyspace]uint64
}

func (c keyspaceBytes) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c keyspaceBytes) Collect(ch chan<- prometheus.Metric) {
	for ks, n := range c.sizes() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), KeyspaceName(ks))
	}
}
