package mqtt

import (
	"context"

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
	return s.onClaims(context.Background(), []*mqttpb.Claim{{Tenant: tenant, ClientId: clientID, Stamp: stamp, By: "test"}})
}
