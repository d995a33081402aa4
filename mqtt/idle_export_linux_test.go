package mqtt

// ParkedConns counts s's connections that are parked, and all of them.
func ParkedConns(s *Server) (np, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.idle.state.Load() == parked {
			np++
		}
	}
	return np, len(s.conns)
}
