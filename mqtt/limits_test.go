package mqtt_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// TestLimitsBothWays: the server's announced keep-alive cap and maximum
// packet size, and the client's maximum packet size on the way out.
func TestLimitsBothWays(t *testing.T) {
	e := startEnv(t, 1, func(c *mqtt.Config) {
		c.MaxKeepAlive = 5
		c.MaxPacketSize = 1024
	})
	addr := e.addr(0)

	t.Run("ServerKeepAlive", func(t *testing.T) {
		// MQTT-3.2.2-21: the server's keep alive replaces the client's.
		c := dialRaw(t, addr, packet.V5)
		ack := c.connect(&packet.Connect{ClientID: "ka-cap", CleanStart: true, KeepAlive: 600})
		if !ack.Properties.HasServerKeepAlive || ack.Properties.ServerKeepAlive != 5 {
			t.Fatalf("CONNACK server keep alive: %+v", ack.Properties)
		}
		if ack.Properties.MaximumPacketSize != 1024 {
			t.Fatalf("maximum packet size %d, want 1024", ack.Properties.MaximumPacketSize)
		}
	})

	t.Run("KeepAliveCap311", func(t *testing.T) {
		// A 3.1.1 client cannot be told the cap: one asking for more, or
		// for none (which held a half-sent packet forever), is refused
		// with CONNACK 2, as mosquitto refuses it; one within is served.
		for _, ka := range []uint16{0, 600} {
			c := dialRaw(t, addr, packet.V311)
			if ack := c.connect(&packet.Connect{ClientID: "ka311", CleanStart: true, KeepAlive: ka}); ack.ReasonCode != packet.ConnRefusedIdentifierRejected {
				t.Fatalf("3.1.1 keep-alive %d: CONNACK %d, want 2", ka, ack.ReasonCode)
			}
		}
		if ack := dialRaw(t, addr, packet.V311).connect(&packet.Connect{ClientID: "ka311", CleanStart: true, KeepAlive: 5}); ack.ReasonCode != 0 {
			t.Fatalf("3.1.1 keep-alive 5: CONNACK %d", ack.ReasonCode)
		}
	})

	t.Run("InboundTooLarge", func(t *testing.T) {
		// MQTT-3.2.2-15 / 4.13: a packet over the announced maximum gets
		// DISCONNECT 0x95.
		c := connectRaw(t, addr, packet.V5, "too-large")
		c.send(&packet.Publish{Topic: "big", Payload: bytes.Repeat([]byte("x"), 2000)})
		if d := c.closed(); d == nil || d.ReasonCode != packet.PacketTooLarge {
			t.Fatalf("disconnect: %+v", d)
		}
	})

	t.Run("OutboundOverClientMaximum", func(t *testing.T) {
		// MQTT-3.1.2-25: a message over the client's maximum packet size is
		// not sent to it; later ones that fit are.
		sub := dialRaw(t, addr, packet.V5)
		cp := &packet.Connect{ClientID: "small-client", CleanStart: true}
		cp.Properties.MaximumPacketSize, cp.Properties.HasMaximumPacketSize = 100, true
		sub.connect(cp)
		sub.subscribe(1, packet.Subscription{Filter: "sz/#", QoS: 1})
		pub := connectRaw(t, addr, packet.V5, "sz-pub")
		pub.publish(&packet.Publish{Topic: "sz/big", QoS: 1, PacketID: 1, Payload: bytes.Repeat([]byte("y"), 500)})
		pub.publish(&packet.Publish{Topic: "sz/small", QoS: 1, PacketID: 2, Payload: []byte("fits")})
		if p := sub.nextPublish(); string(p.Payload) != "fits" {
			t.Fatalf("got %d bytes on %q", len(p.Payload), p.Topic)
		}
		sub.expectNone(300 * time.Millisecond)
	})
}
