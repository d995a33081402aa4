package mqtt

import (
	"context"
	"sync"

	"github.com/bifrost-mq/bifrost/mqtt/mqttpb"
)

// MarkPeerDown makes s treat the frontend peer as having failed just now,
// as a failed notification does.
func MarkPeerDown(s, peer *Server) {
	addr, _ := receiverAddr(peer.cfg.ReceiverID)
	s.peers.failed(addr)
}

// ReceiverIDOf is s's receiver ID, the prefix of its inbox owners.
func ReceiverIDOf(s *Server) string { return s.cfg.ReceiverID }

// DeliverClaim hands s a claim of another frontend ("test") on the client
// ID, as the Claim RPC does; it returns how many connections it closed.
func DeliverClaim(s *Server, tenant, clientID string, stamp int64) int {
	closed, _ := DeliverClaimOf(s, tenant, clientID, "", stamp)
	return closed
}

// DeliverClaimOf is DeliverClaim for a connection of user; refused: s
// refused the claim.
func DeliverClaimOf(s *Server, tenant, clientID, user string, stamp int64) (closed int, refused bool) {
	closed, r := s.onClaims(context.Background(), []*mqttpb.Claim{{Tenant: tenant, ClientId: clientID, Stamp: stamp, By: "test", User: user}})
	return closed, len(r) > 0
}

// HoldRouting makes s hold the routing of every message published from
// now on (after what precedes routing, a QoS 2 packet ID's write included)
// until release, as a frontend cut off from the stores holds it.
func HoldRouting(s *Server) (release func()) {
	g := make(chan struct{})
	s.routeGate.Store(&g)
	var once sync.Once
	return func() { once.Do(func() { s.routeGate.Store(nil); close(g) }) }
}

// HoldWindow puts n placeholder messages into the in-flight window of the
// client's connection on s (packet IDs from 60000, which sessions do not
// use), as retained messages sent at SUBSCRIBE would; it returns a func
// that takes them out and wakes the session.
func HoldWindow(s *Server, tenant, clientID string, n int) (release func()) {
	c := s.session(tenant, clientID)
	c.mu.Lock()
	for i := 0; i < n; i++ {
		c.inflight[uint16(60000+i)] = &outMessage{m: &mqttpb.Message{Topic: "held"}, qos: 1}
	}
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		for i := 0; i < n; i++ {
			delete(c.inflight, uint16(60000+i))
		}
		c.mu.Unlock()
		if c.sess != nil {
			c.sess.notified.Store(true)
			c.sess.wakeUp()
		}
	}
}

// BacklogOf is how many encoded bytes wait for the client's socket on s
// (-1: no such connection).
func BacklogOf(s *Server, tenant, clientID string) int {
	c := s.session(tenant, clientID)
	if c == nil {
		return -1
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.out)
}

// ReplyBacklog is the backlog past which a reader stops reading.
const ReplyBacklog = replyBacklog

// HeldOf is what s holds for the client's connection against its byte
// budget (-1: no such connection).
func HeldOf(s *Server, tenant, clientID string) int {
	c := s.session(tenant, clientID)
	if c == nil {
		return -1
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.heldLocked()
}

// SentUpto is one past the newest inbox message the client's persistent
// session handed its connection (-1: no such session).
func SentUpto(s *Server, tenant, clientID string) int64 {
	c := s.session(tenant, clientID)
	if c == nil || c.sess == nil {
		return -1
	}
	c.sess.mu.Lock()
	defer c.sess.mu.Unlock()
	return int64(c.sess.sentUpto)
}

// PeerIsDown says whether s treats the frontend peer as having failed.
func PeerIsDown(s, peer *Server) bool {
	addr, _ := receiverAddr(peer.cfg.ReceiverID)
	return s.peers.isDown(addr)
}
