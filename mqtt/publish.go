package mqtt

import (
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/events"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// The inbound side of PUBLISH. A publish that matched persistent sessions
// is acknowledged only once their inboxes committed it (on a quorum of the
// inbox range's replicas), which takes a Raft round. So that a publisher
// with many messages in flight is not held to one round per message, the
// reader does not wait for it: it hands the message on (transient receivers
// get it at once, the inboxes through the insert batcher, which keeps the
// order of one connection's messages) and reads the next packet, up to
// Config.PublishPipeline publishes waiting. The acknowledgements go out in
// the order the publishes came (MQTT-4.6.0-2, -3), each only after its own
// message is committed.

// pubAck is one inbound publish waiting for its acknowledgement.
type pubAck struct {
	qos    byte
	id     uint16
	done   bool
	code   packet.ReasonCode
	reason string
	// fail: the message was not taken and the connection (3.x, which has
	// no negative acknowledgement) is closed instead, so that the client
	// sends it again on its next connection.
	fail bool
	// of is the first copy of a QoS 2 PUBLISH that the client sent again
	// while that one was still in the pipeline: the copy is answered as
	// the first is (MQTT-4.3.3-10: delivered once).
	of *pubAck
}

// pubPipeline holds a connection's publishes whose acknowledgements are not
// sent yet, in the order they came. The reader pushes; completions come
// from the insert batcher's goroutine.
type pubPipeline struct {
	mu      sync.Mutex
	acks    []*pubAck
	pending int // pushed, not yet completed
	closed  bool
	// signal is closed (and dropped) when an acknowledgement leaves or the
	// pipeline closes, for a reader waiting for room or for the drain.
	signal chan struct{}
	// rel is the QoS 2 publishes in the pipeline, by packet ID.
	rel map[uint16]*pubAck
	// relUndo is QoS 2 packet IDs whose publish failed (an error PUBREC
	// ends the exchange): the reader takes them out of awaitingRel.
	relUndo    []uint16
	hasRelUndo atomic.Bool
}

func (p *pubPipeline) waitLocked() <-chan struct{} {
	if p.signal == nil {
		p.signal = make(chan struct{})
	}
	return p.signal
}

func (p *pubPipeline) broadcastLocked() {
	if p.signal != nil {
		close(p.signal)
		p.signal = nil
	}
}

// push appends a publish, waiting while limit are already waiting; nil when
// the connection is closing.
func (p *pubPipeline) push(a *pubAck, limit int) *pubAck {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil
		}
		if len(p.acks) < max(limit, 1) {
			p.acks = append(p.acks, a)
			if !a.done {
				p.pending++
			}
			if a.qos == 2 && !a.done {
				if p.rel == nil {
					p.rel = map[uint16]*pubAck{}
				}
				p.rel[a.id] = a
			}
			p.mu.Unlock()
			return a
		}
		ch := p.waitLocked()
		p.mu.Unlock()
		<-ch
	}
}

// close wakes a reader waiting for room; what is still in flight completes
// and is dropped.
func (p *pubPipeline) close() {
	p.mu.Lock()
	p.closed = true
	p.broadcastLocked()
	p.mu.Unlock()
}

// drain waits until every pushed publish completed, or timeout.
func (p *pubPipeline) drain(timeout time.Duration) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		p.mu.Lock()
		if p.pending == 0 {
			p.mu.Unlock()
			return
		}
		ch := p.waitLocked()
		p.mu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			return
		}
	}
}

// takeRelUndo returns the QoS 2 packet IDs to forget; reader only.
func (p *pubPipeline) takeRelUndo() []uint16 {
	if !p.hasRelUndo.Load() {
		return nil
	}
	p.mu.Lock()
	ids := p.relUndo
	p.relUndo = nil
	p.hasRelUndo.Store(false)
	p.mu.Unlock()
	return ids
}

// pendingRel is the QoS 2 publish with this packet ID still in the
// pipeline, if any.
func (p *pubPipeline) pendingRel(id uint16) *pubAck {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rel[id]
}

// complete records a publish's outcome and sends the acknowledgements that
// are now due, in order.
func (c *conn) complete(a *pubAck, code packet.ReasonCode, reason string, fail bool) {
	p := &c.pubs
	p.mu.Lock()
	a.done, a.code, a.reason, a.fail = true, code, reason, fail
	p.pending--
	c.flushAcksLocked()
	p.broadcastLocked()
	p.mu.Unlock()
}

// answer acknowledges a publish that was decided at once, behind the ones
// still waiting.
func (c *conn) answer(qos byte, id uint16, code packet.ReasonCode, reason string) bool {
	return c.answerWith(&pubAck{qos: qos, id: id, done: true, code: code, reason: reason})
}

// answerWith queues a decided acknowledgement (a.done) behind the ones
// still waiting and sends what is due; false when the connection is closing.
func (c *conn) answerWith(a *pubAck) bool {
	if c.pubs.push(a, c.s.cfg.PublishPipeline) == nil {
		return false
	}
	c.pubs.mu.Lock()
	c.flushAcksLocked()
	c.pubs.mu.Unlock()
	return true
}

func (c *conn) flushAcksLocked() {
	p := &c.pubs
	n := 0
	for _, a := range p.acks {
		if !a.done {
			break
		}
		n++
		if a.of != nil {
			a.code, a.reason, a.fail = a.of.code, a.of.reason, a.of.fail
		}
		if a.qos == 2 && p.rel[a.id] == a {
			delete(p.rel, a.id)
		}
		if a.fail {
			// Nothing after it is acknowledged: the connection closes and
			// the client sends them again.
			p.closed = true
			n = len(p.acks)
			go c.kick(packet.UnspecifiedError)
			break
		}
		if a.qos == 2 && a.code.IsError() {
			p.relUndo = append(p.relUndo, a.id)
			p.hasRelUndo.Store(true)
		}
		c.ack(a.qos, a.id, a.code, a.reason)
	}
	if n > 0 {
		clear(p.acks[:n])
		p.acks = p.acks[n:]
		if len(p.acks) == 0 {
			p.acks = nil
		}
		p.broadcastLocked()
	}
}

func (c *conn) ack(qos byte, id uint16, code packet.ReasonCode, reason string) {
	if c.version != packet.V5 {
		// 3.x has no negative acknowledgement: the message is dropped.
		code, reason = packet.Success, ""
	}
	if c.noProblemInfo {
		reason = "" // MQTT-3.1.2-29
	}
	switch qos {
	case 1:
		a := &packet.Puback{PacketID: id, ReasonCode: code}
		a.Properties.ReasonString = reason
		c.send(a)
	case 2:
		a := &packet.Pubrec{PacketID: id, ReasonCode: code}
		a.Properties.ReasonString = reason
		c.send(a)
	}
}

func (c *conn) onPublish(p *packet.Publish) error {
	v5 := c.version == packet.V5
	topic := p.Topic
	if v5 && p.Properties.HasTopicAlias {
		a := p.Properties.TopicAlias
		if a == 0 || a > c.s.cfg.TopicAliasMaximum {
			return &disconnectError{code: packet.TopicAliasInvalid, reason: "MQTT-3.3.2-9: topic alias out of range"}
		}
		if topic == "" {
			t, ok := c.aliasesIn[a]
			if !ok {
				return c.protocolError("MQTT-3.3.2-8: unknown topic alias %d", a)
			}
			topic = t
		} else {
			if c.aliasesIn == nil {
				c.aliasesIn = map[uint16]string{}
			}
			c.aliasesIn[a] = topic
		}
	}
	if err := dist.ValidateTopicName(topic); err != nil {
		if v5 {
			return &disconnectError{code: packet.TopicNameInvalid, reason: err.Error()}
		}
		return errClose // MQTT-3.3.2-2
	}
	switch setting := c.publishOverQuota(topic, p.QoS); setting {
	case "":
	case "publish-rate", "max-qos":
		c.overQuota(setting, topic)
		if !v5 {
			return errClose
		}
		if setting == "max-qos" {
			return &disconnectError{code: packet.QoSNotSupported, reason: "MQTT-3.2.2-11: QoS over the maximum"}
		}
		return &disconnectError{code: packet.MessageRateTooHigh, reason: "publish rate of the tenant's setting exceeded"}
	default: // topic length or levels
		c.s.m.dropped.WithLabelValues("quota_exceeded").Inc()
		c.overQuota(setting, topic)
		if p.QoS == 2 && !v5 {
			c.awaitRel(p.PacketID)
		}
		if !c.answer(p.QoS, p.PacketID, packet.QuotaExceeded, setting+" exceeded") {
			return errClose
		}
		return nil
	}
	if v5 && p.Properties.ResponseTopic != "" && dist.ValidateTopicName(p.Properties.ResponseTopic) != nil {
		return c.protocolError("MQTT-3.3.2-14: the response topic %q is not a topic name", p.Properties.ResponseTopic)
	}
	if v5 && len(p.Properties.SubscriptionIdentifier) > 0 {
		return c.protocolError("MQTT-3.3.4-6: a client sent a subscription identifier")
	}
	for _, id := range c.pubs.takeRelUndo() {
		delete(c.awaitingRel, id)
	}
	var redispatch *inboxpb.RelKey
	if p.QoS == 2 {
		_, dup := c.awaitingRel[p.PacketID]
		if dup && c.sess != nil {
			// Written with a key by a connection before this one, which
			// may not have routed it: routed again under that key (qos2.go).
			redispatch = c.sess.takeRedispatch(p.PacketID)
		}
		if dup && redispatch == nil {
			// Already accepted: acknowledge again, deliver once
			// (MQTT-4.3.3-10); while the first copy is still in the
			// pipeline, as it will be.
			if !c.answerWith(&pubAck{qos: 2, id: p.PacketID, done: true, of: c.pubs.pendingRel(p.PacketID)}) {
				return errClose
			}
			return nil
		}
		// Receive Maximum is 5.0's; a 3.x client's unreleased IDs are
		// bounded by the packet ID space.
		if v5 && redispatch == nil && len(c.awaitingRel) >= int(c.s.cfg.ReceiveMaximum) {
			return &disconnectError{code: packet.ReceiveMaximumExceeded, reason: "MQTT-3.3.4-9: receive maximum exceeded"}
		}
	}
	if reservedTopic(topic) || !auth.Allowed(c.s.ctx, c.s.cfg.Auth, c.id, auth.Request{Action: auth.Publish, Topic: topic, QoS: p.QoS, Retain: p.Retain}) {
		c.s.m.dropped.WithLabelValues("not_authorized").Inc()
		c.emit(events.PublishDenied, topic, p.QoS, "not_authorized")
		if p.QoS == 2 && c.version != packet.V5 {
			c.awaitRel(p.PacketID)
		}
		if !c.answer(p.QoS, p.PacketID, packet.NotAuthorized, "not authorized") {
			return errClose
		}
		return nil
	}
	if v5 && p.Properties.HasPayloadFormatIndicator && p.Properties.PayloadFormatIndicator == 1 && !utf8.Valid(p.Payload) {
		// MQTT-3.3.2-4 allows the check.
		if !c.answer(p.QoS, p.PacketID, packet.PayloadFormatInvalid, "payload is not UTF-8") {
			return errClose
		}
		return nil
	}
	m := messageOf(topic, p, c.key.clientID, time.Now())
	c.s.m.published.WithLabelValues(strconv.Itoa(int(p.QoS))).Inc()
	ctx := c.s.ctx
	if p.Retain {
		if err := c.s.retain(ctx, c.id.Tenant, m); err != nil {
			var refused *retainRefusedError
			isRefused := errors.As(err, &refused)
			result, code := "error", packet.UnspecifiedError
			if isRefused {
				result, code = "refused", refused.code()
				if refused.result == retainpb.Result_RESULT_LIMIT {
					c.overQuota("max-retained", topic)
				}
			}
			c.s.m.retainFailures.WithLabelValues(result).Inc()
			c.s.log.Warn("storing a retained message failed", "tenant", c.id.Tenant, "client", c.key.clientID, "topic", clipped(topic), "err", err)
			switch {
			case v5 && p.QoS == 0:
				// No acknowledgement to carry the failure: the
				// DISCONNECT does.
				return &disconnectError{code: code, reason: "retained message not stored"}
			case v5:
				if !c.answer(p.QoS, p.PacketID, code, "retained message not stored") {
					return errClose
				}
				return nil
			case !isRefused && p.QoS > 0:
				// 3.x has no negative acknowledgement: the client sends
				// it again on its next connection, when the store may
				// answer.
				return errClose
			}
			// A 3.x client sent again what the store refused would be
			// refused again, forever, and a QoS 0 message is not sent
			// again: it goes to the subscribers unretained, and is
			// acknowledged.
		}
	}
	a := c.pubs.push(&pubAck{qos: p.QoS, id: p.PacketID}, c.s.cfg.PublishPipeline)
	if a == nil {
		return errClose
	}
	if p.QoS == 2 {
		// Held from now: a copy sent again before the PUBREC is answered
		// as this one is; taken out again if this one fails.
		c.awaitRel(p.PacketID)
	}
	qos := p.QoS
	routed := func(n int, err error) {
		if err != nil {
			c.s.log.Warn("routing a message failed", "tenant", c.id.Tenant, "client", c.key.clientID, "err", err)
			switch {
			case qos == 0:
				c.drop(topic, "route_error", 1)
				c.complete(a, packet.Success, "", false)
			case !v5:
				c.complete(a, packet.Success, "", true)
			case qos == 2 && c.sess != nil:
				// An error PUBREC ends the exchange and frees the ID:
				// out of the record first, or the client's next message
				// with it would take this one's key (qos2.go).
				c.sess.recordRel(a.id, relRemove, func(_ *inboxpb.RelKey, err error) {
					c.complete(a, packet.UnspecifiedError, "routing failed", err != nil)
				})
			default:
				c.complete(a, packet.UnspecifiedError, "routing failed", false)
			}
			return
		}
		code := packet.Success
		if n == 0 && v5 {
			code = packet.NoMatchingSubscribers
		}
		if qos == 2 && c.sess != nil {
			// Marked routed before the PUBREC: a resend is answered,
			// not routed again (qos2.go). If the mark fails, the
			// connection closes without the PUBREC.
			c.sess.recordRel(a.id, relRouted, func(_ *inboxpb.RelKey, err error) {
				if err != nil {
					c.s.log.Warn("marking a QoS 2 message routed failed", "tenant", c.id.Tenant, "client", c.key.clientID, "err", err)
				}
				c.complete(a, code, "", err != nil)
			})
			return
		}
		c.complete(a, code, "", false)
	}
	if qos != 2 || c.sess == nil {
		c.s.dispatchAsync(ctx, c.id.Tenant, m, routed)
		return nil
	}
	// A persistent session's QoS 2 message: its packet ID is in the
	// session's record, with a key, before it is routed under that key
	// (qos2.go). If the ID cannot be written, nothing is routed and the
	// connection closes without the PUBREC: the client's resend routes it.
	s := c.sess
	route := func(k *inboxpb.RelKey) {
		m.Dedupe = s.dedupeOf(k)
		s.routeInOrder(func() { c.s.dispatchAsync(ctx, c.id.Tenant, m, routed) })
	}
	if redispatch != nil {
		route(redispatch)
		return nil
	}
	s.recordRel(a.id, relAdd, func(k *inboxpb.RelKey, err error) {
		if err != nil {
			c.s.log.Warn("recording a QoS 2 packet ID failed", "tenant", c.id.Tenant, "client", c.key.clientID, "err", err)
			c.complete(a, packet.UnspecifiedError, "", true)
			return
		}
		route(k)
	})
	return nil
}
