package mqtt

// MarkPeerDown makes s treat the frontend peer as having failed just now,
// as a failed notification does.
func MarkPeerDown(s, peer *Server) {
	addr, _ := receiverAddr(peer.cfg.ReceiverID)
	s.peers.failed(addr)
}

// ReceiverIDOf is s's receiver ID, the prefix of its inbox owners.
func ReceiverIDOf(s *Server) string { return s.cfg.ReceiverID }
