package listener

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are one listener's children of the shared vectors.
type metrics struct {
	accepted     prometheus.Counter
	open         prometheus.Gauge
	acceptErrors prometheus.Counter
	proxyErrors  prometheus.Counter
}

// newMetrics registers the vectors on reg, or reuses those a previous
// listener registered there: a broker runs several listeners, possibly of
// the same kind, on one registry.
func newMetrics(reg prometheus.Registerer, kind Kind) (*metrics, error) {
	accepted := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bifrost_mqtt_listener_connections_accepted_total",
		Help: "Connections handed to the broker, after their TLS and WebSocket handshakes.",
	}, []string{"kind"})
	open := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "bifrost_mqtt_listener_connections_open",
		Help: "Connections handed to the broker and not closed yet.",
	}, []string{"kind"})
	acceptErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bifrost_mqtt_listener_accept_errors_total",
		Help: "Failed accepts and failed TLS or WebSocket handshakes (including refused client certificates and wrong HTTP paths).",
	}, []string{"kind"})
	proxyErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bifrost_mqtt_listener_proxy_header_errors_total",
		Help: "Connections refused on a proxy-protocol listener for a missing, malformed or late PROXY header (also counted in accept errors).",
	}, []string{"kind"})
	if reg != nil {
		var err error
		if accepted, err = register(reg, accepted); err != nil {
			return nil, err
		}
		if open, err = register(reg, open); err != nil {
			return nil, err
		}
		if acceptErrors, err = register(reg, acceptErrors); err != nil {
			return nil, err
		}
		if proxyErrors, err = register(reg, proxyErrors); err != nil {
			return nil, err
		}
	}
	k := string(kind)
	return &metrics{
		accepted:     accepted.WithLabelValues(k),
		open:         open.WithLabelValues(k),
		acceptErrors: acceptErrors.WithLabelValues(k),
		proxyErrors:  proxyErrors.WithLabelValues(k),
	}, nil
}

// register registers c, or returns the equal collector already registered.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	var zero C
	return zero, fmt.Errorf("register metrics: %w", err)
}
