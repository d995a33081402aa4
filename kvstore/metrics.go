package kvstore

import (
	"strings"
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
	// recovered mirrors snapshotsRecovered for callers without a registry.
	recovered atomic.Uint64
	ranges    prometheus.GaugeFunc
	leaders   prometheus.GaugeFunc
	bytes     keyspaceBytes
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
		ranges: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bifrost_kvstore_ranges",
			Help: "Replicas of ranges running on this store.",
		}, rangesFn),
		leaders: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bifrost_kvstore_leaders",
			Help: "Ranges whose leader is the replica on this store.",
		}, leadersFn),
		bytes: keyspaceBytes{desc: prometheus.NewDesc("bifrost_kvstore_range_bytes",
			"Bytes of the data of the ranges with a replica on this store, by keyspace (Pebble's estimate for a large range, the exact bytes for a small one; as bifrost admin ranges shows them), measured at scrape time.",
			[]string{"keyspace"}, nil), sizes: bytesFn},
	}
	if reg != nil {
		reg.MustRegister(m.proposals, m.proposeLatency, m.reads, m.applyLatency, m.appliedEntries, m.snapshotsRecovered, m.snapshotsSaved, m.ranges, m.leaders, m.bytes)
	}
	return m
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
		name := strings.ToLower(strings.TrimPrefix(ks.String(), "KEYSPACE_"))
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), name)
	}
}
