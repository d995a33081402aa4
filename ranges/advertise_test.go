package ranges

import "testing"

// TestGossipAdvertise: memberlist takes only an IP to advertise. A host
// name (a container's service name) is resolved; an unspecified bind
// address with no --advertise leaves the choice to memberlist (this host's
// private address): advertising 0.0.0.0 sent every peer's gossip to itself
// (seen with --gossip 0.0.0.0:7946 in deploy/compose.yaml).
func TestGossipAdvertise(t *testing.T) {
	for _, c := range []struct {
		bind, adv string
		ip        string
		port      int
		bad       bool
	}{
		{bind: "127.0.0.1:7946", ip: "127.0.0.1", port: 7946},
		{bind: "0.0.0.0:7946", adv: "10.1.2.3:7000", ip: "10.1.2.3", port: 7000},
		{bind: "0.0.0.0:7946", ip: "", port: 7946},
		{bind: "[::]:7946", ip: "", port: 7946},
		{bind: "0.0.0.0:7946", adv: "localhost:7000", ip: "127.0.0.1", port: 7000},
		{bind: "0.0.0.0:7946", adv: "no-such-host.invalid:7000", bad: true},
		{bind: "0.0.0.0:7946", adv: "10.1.2.3", bad: true},
		{bind: "0.0.0.0:7946", adv: "10.1.2.3:port", bad: true},
	} {
		ip, port, err := gossipAdvertise(c.bind, c.adv)
		if c.bad {
			if err == nil {
				t.Errorf("bind %q advertise %q: no error", c.bind, c.adv)
			}
			continue
		}
		if err != nil || ip != c.ip || port != c.port {
			t.Errorf("bind %q advertise %q: %q %d %v, want %q %d", c.bind, c.adv, ip, port, err, c.ip, c.port)
		}
	}
}
