package mqtt

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/mqtt/internal/promreg"
)

type metrics struct {
	connections   prometheus.Gauge
	connects      *prometheus.CounterVec // by result
	packetsIn     *prometheus.CounterVec // by type
	published     *prometheus.CounterVec // by qos
	delivered     prometheus.Counter
	dropped       *prometheus.CounterVec // by reason
	subscriptions prometheus.Gauge
	routeChanges  *prometheus.CounterVec // add/remove
	matchCache    *prometheus.CounterVec // hit/miss
	matchBatch    prometheus.Histogram   // topics per dist match request
	remote        *prometheus.CounterVec // remote deliveries by result
	// The durable path: each inbox call's duration by op (insert, fetch,
	// commit), and the items of each batched insert.
	inboxCalls  *prometheus.HistogramVec
	insertBatch prometheus.Histogram
	// One connection per client ID (claim.go): claims sent to other
	// frontends by result (ok, retry), and connections closed by one.
	claimsSent      *prometheus.CounterVec
	claimKicks      prometheus.Counter
	claimsRefused   prometheus.Counter
	inboxDuplicates prometheus.Counter
	// Writes of persistent sessions' unreleased QoS 2 packet IDs (qos2.go),
	// by result.
	relWrites *prometheus.CounterVec
	// readerPauses counts the times a connection's reader waited for its
	// client to read the replies (conn.waitBacklog).
	readerPauses prometheus.Counter
	// retainFailures counts retained messages that were not stored, by
	// result: refused (the store answered no; a retry would be refused
	// too) or error (no answer).
	retainFailures *prometheus.CounterVec
	// budgetWaits counts the times a persistent session stopped taking
	// messages from its inbox because its connection held its byte budget
	// (budget.go).
	budgetWaits prometheus.Counter
	// quotaExceeded counts tenants' settings exceeded, by tenant (at most
	// quotaLabelTenants of them, then "_other") and setting; throttleWaits
	// the times a reader waited for its tenant's inbound bandwidth.
	quotaExceeded *prometheus.CounterVec
	throttleWaits prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bifrost_mqtt_connections", Help: "MQTT connections past CONNACK.",
		}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_mqtt_connects_total", Help: "CONNECT packets by result.",
		}, []string{"result"}),
		packetsIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_mqtt_packets_received_total", Help: "Control packets received, by type.",
		}, []string{"type"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_mqtt_messages_published_total", Help: "PUBLISH packets accepted from clients, by QoS.",
		}, []string{"qos"}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_mqtt_messages_delivered_total", Help: "Messages handed to a client connection.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_mqtt_messages_dropped_total", Help: "Messages not delivered, by reason.",
		}, []string{"reason"}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bifrost_mqtt_subscriptions", Help: "Subscriptions of connected sessions.",
		}),
		routeChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_mqtt_route_changes_total", Help: "dist route changes made by this frontend.",
		}, []string{"op", "result"}),
		matchCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_mqtt_match_cache_total", Help: "dist match cache lookups.",
		}, []string{"result"}),
		matchBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "bifrost_mqtt_match_batch_topics", Help: "Topics per dist match request (concurrent publishes batched).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 5),
		}),
		remote: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_mqtt_remote_deliveries_total", Help: "Messages handed to other frontends, by result.",
		}, []string{"result"}),
		inboxCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bifrost_mqtt_inbox_call_duration_seconds", Help: "Calls to the inbox coprocessor for persistent sessions, by op (insert, fetch, commit).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"op"}),
		insertBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "bifrost_mqtt_inbox_insert_batch_items", Help: "Messages per batched inbox insert (concurrent publishes batched).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 7),
		}),
		claimsSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_mqtt_claims_sent_total", Help: "Client ID claims sent to other frontends, by result (ok; retry: the frontend did not answer, sent again).",
		}, []string{"result"}),
		claimKicks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_mqtt_claim_kicks_total", Help: "Connections closed because a newer connection of their client ID was accepted on another frontend.",
		}),
		inboxDuplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_mqtt_inbox_duplicates_total", Help: "Inbox inserts of a QoS 2 message an inbox had taken already (routed again after its publisher's frontend changed), not queued twice.",
		}),
		claimsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_mqtt_claims_refused_total", Help: "Client ID claims of this frontend's CONNECTs refused by another frontend that holds the client ID for another user.",
		}),
		readerPauses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_mqtt_reader_pauses_total", Help: "Times a connection stopped reading because its client did not read the replies (over 256 KiB waiting).",
		}),
		budgetWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_mqtt_budget_waits_total", Help: "Times a persistent session stopped taking messages from its inbox until its client read, because its connection held its byte budget (--mqtt-max-queued-bytes).",
		}),
		relWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_mqtt_qos2_rel_writes_total", Help: "Writes of persistent sessions' unreleased inbound QoS 2 packet IDs to their inbox (before PUBREC, before PUBCOMP), by result.",
		}, []string{"result"}),
		retainFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_mqtt_retain_failures_total", Help: "Retained messages not stored, by result (refused: the store said no, error: it did not answer).",
		}, []string{"result"}),
		quotaExceeded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_mqtt_tenant_quota_exceeded_total", Help: "Times a client went over its tenant's setting, by tenant (the first 1000 tenants seen; then _other) and setting.",
		}, []string{"tenant", "setting"}),
		throttleWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_mqtt_throttle_waits_total", Help: "Times a connection's reader waited for its tenant's inbound bandwidth (inbound-bytes-per-second).",
		}),
	}
	m.connections = register(reg, m.connections)
	m.connects = register(reg, m.connects)
	m.packetsIn = register(reg, m.packetsIn)
	m.published = register(reg, m.published)
	m.delivered = register(reg, m.delivered)
	m.dropped = register(reg, m.dropped)
	m.subscriptions = register(reg, m.subscriptions)
	m.routeChanges = register(reg, m.routeChanges)
	m.matchCache = register(reg, m.matchCache)
	m.matchBatch = register(reg, m.matchBatch)
	m.remote = register(reg, m.remote)
	m.inboxCalls = register(reg, m.inboxCalls)
	m.insertBatch = register(reg, m.insertBatch)
	m.claimsSent = register(reg, m.claimsSent)
	m.claimKicks = register(reg, m.claimKicks)
	m.claimsRefused = register(reg, m.claimsRefused)
	m.inboxDuplicates = register(reg, m.inboxDuplicates)
	m.relWrites = register(reg, m.relWrites)
	m.readerPauses = register(reg, m.readerPauses)
	m.retainFailures = register(reg, m.retainFailures)
	m.budgetWaits = register(reg, m.budgetWaits)
	m.quotaExceeded = register(reg, m.quotaExceeded)
	m.throttleWaits = register(reg, m.throttleWaits)
	return m
}

// register registers c, or returns the collector already registered under
// its name (several frontends in one process, as tests run them).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	return promreg.Register(reg, c)
}
