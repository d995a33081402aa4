package mqtt

import (
	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/mqtt/mqttpb"
)

// The byte budget of a connection (issue 14): a subscriber that never
// reads, sent 1,100 QoS 1 messages of 1 MB, pinned 1.4 GB of the broker in
// 5 s, because the window and the queue bounded messages, not bytes.
//
// What the frontend holds for one connection is the encoded packets its
// socket has not taken (the writer's buffer included) and the QoS 1/2
// messages queued behind a full in-flight window. An in-flight message
// holds nothing more once encoded: it is never resent from memory (a clean
// session's end drops it, a persistent session's resend comes from its
// inbox), so sendPublishLocked lets go of it.
//
// A message is taken while the connection holds less than
// Config.MaxQueuedBytes, as mosquitto's max_queued_bytes does: what is
// held stays under the budget plus one message, and a message larger than
// the budget is delivered when it comes to a connection that holds less.
// Past the budget, a message to a clean session (or one sent straight to
// the connection, a retained message at SUBSCRIBE) is dropped and counted
// (bifrost_mqtt_messages_dropped_total{reason="queue_bytes"}); a
// persistent session's message stays in its inbox: the session fetches no
// more than the budget has room for (FetchRequest.max_bytes) and waits for
// the writer to make room (bifrost_mqtt_budget_waits_total).
//
// The replies to a client's own packets count in what is held too, but are
// never dropped: the reader stops reading while they wait (waitBacklog).

// heldLocked is what the frontend holds for the connection, in bytes.
func (c *conn) heldLocked() int {
	return len(c.out) + c.writingBytes + c.queuedBytes
}

// roomLocked says whether the connection may take another message.
func (c *conn) roomLocked() bool {
	return c.heldLocked() < c.s.cfg.MaxQueuedBytes
}

// waitRoomLocked has the writer call wake once the connection has room
// again: a persistent session's loop that found none.
func (c *conn) waitRoomLocked(wake func()) {
	if c.onRoom == nil {
		c.s.m.budgetWaits.Inc()
	}
	c.onRoom = wake
}

// roomMadeLocked is called by the writer after a write: the func to call
// (after unlocking) if a session waits for room and there is some now.
func (c *conn) roomMadeLocked() func() {
	wake := c.onRoom
	if wake == nil || !c.roomLocked() {
		return nil
	}
	c.onRoom = nil
	return wake
}

// queuedSize is what a message waiting in the queue costs the budget: its
// payload and the strings it carries (the rest is small and fixed).
func queuedSize(m *mqttpb.Message) int {
	n := len(m.Topic) + len(m.Payload) + len(m.ResponseTopic) + len(m.CorrelationData) + len(m.ContentType)
	for _, up := range m.UserProperties {
		n += len(up.Key) + len(up.Value)
	}
	return n
}

// offeredSize is what an offered inbox message costs (session.offer).
func offeredSize(m *inboxpb.Message) int {
	return len(m.Topic) + len(m.Payload)
}

// room says whether the session's connection may take another message; if
// not, the loop is woken once it may.
func (s *session) room() bool {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.roomLocked() {
		return true
	}
	c.waitRoomLocked(s.wakeUp)
	return false
}
