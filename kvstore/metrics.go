package kvstore

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
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
}

func newMetrics(reg prometheus.Registerer, rangesFn, leadersFn func() float64) *Metrics {
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
	}
	if reg != nil {
		reg.MustRegister(m.proposals, m.proposeLatency, m.reads, m.applyLatency, m.appliedEntries, m.snapshotsRecovered, m.snapshotsSaved, m.ranges, m.leaders)
	}
	return m
}
