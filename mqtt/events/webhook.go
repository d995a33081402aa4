package events

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/mqtt/internal/jsonpost"
	"github.com/bifrost-mq/bifrost/mqtt/internal/promreg"
)

// WebhookConfig configures the HTTP event collector. Zero values take the
// documented defaults.
type WebhookConfig struct {
	// URL receives each batch as a JSON POST ({"events": [...]}). http or
	// https. Required.
	URL string
	// QueueSize bounds the events waiting to be sent; more are dropped and
	// counted. Default 10000.
	QueueSize int
	// BatchSize is the most events in one POST; a full batch is sent at
	// once. Default 100.
	BatchSize int
	// FlushInterval is the longest an event waits for its batch to fill.
	// Default 1s.
	FlushInterval time.Duration
	// Timeout bounds each POST; a batch that fails is dropped and counted,
	// not retried. Default 5s.
	Timeout time.Duration
	// Client makes the calls. Default: a client that follows no redirects.
	Client *http.Client

	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Validate reports a missing or bad URL and negative sizes.
func (c WebhookConfig) Validate() error {
	if err := jsonpost.CheckURL(c.URL); err != nil {
		return fmt.Errorf("events: %w", err)
	}
	if c.QueueSize < 0 || c.BatchSize < 0 || c.FlushInterval < 0 || c.Timeout < 0 {
		return fmt.Errorf("events: webhook queue size %d, batch size %d, flush interval %v and timeout %v must not be negative",
			c.QueueSize, c.BatchSize, c.FlushInterval, c.Timeout)
	}
	return nil
}

// Batch is the JSON body of one POST.
type Batch struct {
	Events []Event `json:"events"`
}

// Webhook sends events to a web service in batches, from a goroutine of
// its own that Close stops.
type Webhook struct {
	cfg    WebhookConfig
	queue  chan Event
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	m      *webhookMetrics
}

// NewWebhook starts the HTTP event collector of cfg.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = 10000
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 100
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Client == nil {
		cfg.Client = jsonpost.NewClient()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := &Webhook{cfg: cfg, queue: make(chan Event, cfg.QueueSize), done: make(chan struct{}), m: newWebhookMetrics(cfg.Registerer)}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return w, nil
}

// Collect queues e, or drops and counts it when the queue is full.
func (w *Webhook) Collect(e Event) {
	select {
	case w.queue <- e:
	default:
		w.m.dropped.WithLabelValues("queue_full").Inc()
	}
}

// Close stops the sender: a POST under way is abandoned (its events
// dropped), what is still queued is sent once more within the timeout.
func (w *Webhook) Close() error {
	w.once.Do(func() {
		w.cancel()
		<-w.done
	})
	return nil
}

func (w *Webhook) run() {
	defer close(w.done)
	tick := time.NewTicker(w.cfg.FlushInterval)
	defer tick.Stop()
	batch := make([]Event, 0, w.cfg.BatchSize)
	for {
		select {
		case e := <-w.queue:
			batch = append(batch, e)
			if len(batch) < w.cfg.BatchSize {
				continue
			}
		case <-tick.C:
			if len(batch) == 0 {
				continue
			}
		case <-w.ctx.Done():
			w.drain(batch)
			return
		}
		w.send(w.ctx, batch)
		batch = batch[:0]
	}
}

// drain sends what is batched and queued at Close, in batches, within one
// timeout in all.
func (w *Webhook) drain(batch []Event) {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Timeout)
	defer cancel()
	for more := true; more; {
		select {
		case e := <-w.queue:
			batch = append(batch, e)
		default:
			more = false
		}
		if len(batch) == w.cfg.BatchSize || (!more && len(batch) > 0) {
			w.send(ctx, batch)
			batch = batch[:0]
		}
	}
}

func (w *Webhook) send(ctx context.Context, batch []Event) {
	start := time.Now()
	err := jsonpost.Post(ctx, w.cfg.Client, w.cfg.URL, w.cfg.Timeout, Batch{Events: batch}, nil)
	w.m.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		w.m.dropped.WithLabelValues("send_failed").Add(float64(len(batch)))
		w.cfg.Logger.Warn("event webhook failed; events dropped", "url", w.cfg.URL, "events", len(batch), "err", err)
		return
	}
	w.m.sent.Add(float64(len(batch)))
}

type webhookMetrics struct {
	sent    prometheus.Counter
	dropped *prometheus.CounterVec
	latency prometheus.Histogram
}

func newWebhookMetrics(reg prometheus.Registerer) *webhookMetrics {
	return &webhookMetrics{
		sent: promreg.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bifrost_events_webhook_sent_total", Help: "Events the event webhook took (2xx).",
		})),
		dropped: promreg.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_events_webhook_dropped_total", Help: "Events not sent to the event webhook, by reason (queue_full: it did not keep up; send_failed: its POST failed).",
		}, []string{"reason"})),
		latency: promreg.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "bifrost_events_webhook_post_duration_seconds", Help: "Duration of the event webhook's POSTs.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		})),
	}
}
