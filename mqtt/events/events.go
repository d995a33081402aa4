// Package events is the frontend's event collector plug-in: what happened
// to clients (connected, disconnected, kicked, denied, messages dropped,
// wills published), handed to a Collector.
//
// Invariant: Collect never blocks its caller on I/O. The frontend calls it
// on connection goroutines, some with a connection's lock held; a collector
// that cannot keep up drops events and counts them, it does not slow
// clients down.
package events

import (
	"context"
	"log/slog"
	"time"
)

// Type is what an event reports.
type Type string

// The event types.
const (
	// Connect: a client was accepted (CONNACK success).
	Connect Type = "connect"
	// Disconnect: a connected client's connection ended; Reason says how
	// (client_disconnect, connection_lost, kicked, or the server's
	// DISCONNECT reason).
	Disconnect Type = "disconnect"
	// Kicked: the server closed a client's connection from elsewhere;
	// Reason is the DISCONNECT reason code (session taken over, server
	// shutting down, ...).
	Kicked Type = "kicked"
	// SubscribeDenied: the auth provider denied a subscription to Topic.
	SubscribeDenied Type = "subscribe_denied"
	// PublishDenied: the auth provider denied a publish to Topic (or it
	// was to a reserved topic).
	PublishDenied Type = "publish_denied"
	// MessageDropped: Count messages were not delivered to the client (or,
	// without a client, not routed); Reason is the drop reason of the
	// bifrost_mqtt_messages_dropped_total metric.
	MessageDropped Type = "message_dropped"
	// InboxOverflow: a persistent session's full inbox dropped a message.
	InboxOverflow Type = "inbox_overflow"
	// WillPublished: a client's will was published to Topic.
	WillPublished Type = "will_published"
	// QuotaExceeded: a client went over one of its tenant's settings;
	// Reason names it (max-connections, publish-rate, ...), Topic is the
	// topic or filter when one was.
	QuotaExceeded Type = "quota_exceeded"
)

// Event is one thing that happened. Empty fields are left out of its JSON.
type Event struct {
	Type     Type      `json:"type"`
	Time     time.Time `json:"time"`
	Tenant   string    `json:"tenant,omitempty"`
	ClientID string    `json:"client_id,omitempty"`
	User     string    `json:"user,omitempty"`
	Remote   string    `json:"remote_addr,omitempty"`
	Topic    string    `json:"topic,omitempty"`
	QoS      byte      `json:"qos,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Count    int       `json:"count,omitempty"`
}

// Collector takes events. Collect must not block (see the package
// invariant) and is called concurrently.
type Collector interface {
	Collect(e Event)
}

// Log writes each event to a logger, at Info, message "mqtt event".
func Log(l *slog.Logger) Collector { return logCollector{l} }

type logCollector struct{ l *slog.Logger }

func (c logCollector) Collect(e Event) {
	attrs := []slog.Attr{slog.String("type", string(e.Type))}
	add := func(k, v string) {
		if v != "" {
			attrs = append(attrs, slog.String(k, v))
		}
	}
	add("tenant", e.Tenant)
	add("client", e.ClientID)
	add("user", e.User)
	add("remote", e.Remote)
	add("topic", e.Topic)
	add("reason", e.Reason)
	if e.Count > 1 {
		attrs = append(attrs, slog.Int("count", e.Count))
	}
	c.l.LogAttrs(context.Background(), slog.LevelInfo, "mqtt event", attrs...)
}

// Multi hands each event to every collector of cs, in order.
func Multi(cs ...Collector) Collector {
	switch len(cs) {
	case 0:
		return nil
	case 1:
		return cs[0]
	}
	return multi(cs)
}

type multi []Collector

func (m multi) Collect(e Event) {
	for _, c := range m {
		c.Collect(e)
	}
}

// Close closes the collectors of m that have a Close.
func (m multi) Close() error {
	for _, c := range m {
		if cl, ok := c.(interface{ Close() error }); ok {
			_ = cl.Close()
		}
	}
	return nil
}
