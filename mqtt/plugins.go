package mqtt

import (
	"errors"
	"io"
	"net"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt/events"
)

// The frontend's side of the event collector plug-in (docs/plugins.md):
// events are built only when a collector is configured, and handed to it
// without waiting (events.Collector's contract), some with a connection's
// lock held.

// emit stamps e and hands it to the collector, if any.
func (s *Server) emit(e events.Event) {
	if s.cfg.Events == nil {
		return
	}
	e.Time = time.Now()
	s.cfg.Events.Collect(e)
}

// emit reports an event of this connection's client.
func (c *conn) emit(typ events.Type, topic string, qos byte, reason string) {
	if c.s.cfg.Events == nil {
		return
	}
	e := events.Event{Type: typ, Tenant: c.id.Tenant, ClientID: c.key.clientID, User: c.id.Username, Topic: topic, QoS: qos, Reason: reason}
	if a := c.nc.RemoteAddr(); a != nil {
		e.Remote = a.String()
	}
	c.s.emit(e)
}

// inboxOverflowed reports a message a full inbox dropped (counted as
// dropped, reason inbox_full, by the caller).
func (s *Server) inboxOverflowed(tenant, inbox, topic string) {
	s.emit(events.Event{Type: events.InboxOverflow, Tenant: tenant, ClientID: inbox, Topic: topic, Reason: "inbox_full"})
}

// willPublished reports a will sent on (by its connection, or by the inbox
// scheduler through PublishWill).
func (s *Server) willPublished(tenant, clientID, topic string, qos byte) {
	s.emit(events.Event{Type: events.WillPublished, Tenant: tenant, ClientID: clientID, Topic: topic, QoS: qos})
}

// closeEvents closes the collector, when it has a Close.
func (s *Server) closeEvents() error {
	if cl, ok := s.cfg.Events.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// drop counts n messages dropped for reason (the label of
// bifrost_mqtt_messages_dropped_total) and reports them; clientID is ""
// when they were no one client's.
func (s *Server) drop(tenant, clientID, topic, reason string, n int) {
	s.m.dropped.WithLabelValues(reason).Add(float64(n))
	if s.cfg.Events != nil {
		s.emit(events.Event{Type: events.MessageDropped, Tenant: tenant, ClientID: clientID, Topic: topic, Reason: reason, Count: n})
	}
}

// drop counts and reports n messages this connection's client lost.
func (c *conn) drop(topic, reason string, n int) {
	c.s.drop(c.id.Tenant, c.key.clientID, topic, reason, n)
}

// emitEnd reports the end of a connected client's connection, whose read
// loop ended with err: kicked (closed from elsewhere, with the reason
// code), then disconnected. On the connection's own goroutine, which owns
// its identity.
func (c *conn) emitEnd(err error) {
	if c.s.cfg.Events == nil {
		return
	}
	c.mu.Lock()
	kicked, code := c.kicked, c.kickCode
	c.mu.Unlock()
	if kicked {
		c.emit(events.Kicked, "", 0, code.String())
	}
	c.emit(events.Disconnect, "", 0, disconnectReason(err, kicked, c.clientDisconnected))
}

// disconnectReason says how a connected client's read loop ended with err.
func disconnectReason(err error, kicked, clientDisconnected bool) string {
	var de *disconnectError
	var ne net.Error
	switch {
	case kicked:
		return "kicked"
	case errors.As(err, &de):
		return de.code.String() + ": " + de.reason
	case errors.Is(err, io.EOF) && clientDisconnected:
		return "client_disconnect"
	case errors.Is(err, io.EOF):
		return "connection_closed"
	case errors.Is(err, errClose) || errors.Is(err, net.ErrClosed):
		return "closed_by_server"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "connection_lost"
}
