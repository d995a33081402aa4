package mqtt_test

import (
	"bufio"
	"net"
	"testing"

	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
	"github.com/bifrost-mq/bifrost/mqtt/settings"
)

// BenchmarkPublishPath is one client's QoS 1 publishes through a broker
// (64 in flight, no subscriber: decode, checks, dist match, PUBACK), with
// no setting provider and with one whose every per-message limit is set
// and never reached: what a tenant's settings cost on the publish path.
func BenchmarkPublishPath(b *testing.B) {
	limited := mqtt.BenchSettings()
	for _, bc := range []struct {
		name     string
		provider settings.Provider
	}{{"no-settings", nil}, {"settings", &settings.Static{Defaults: limited}}} {
		e := startEnv(b, 1, func(c *mqtt.Config) { c.Settings, c.SysInterval = bc.provider, -1 })
		addr := e.addr(0)
		b.Run(bc.name, func(b *testing.B) {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			r := packet.NewReader(bufio.NewReader(nc), 0)
			buf, _ := packet.Append(nil, &packet.Connect{ProtocolName: "MQTT", Version: packet.V5, ClientID: "bench-" + bc.name, CleanStart: true, KeepAlive: 600}, packet.V5)
			if _, err := nc.Write(buf); err != nil {
				b.Fatal(err)
			}
			if p, err := r.ReadPacket(packet.V5); err != nil || p.(*packet.Connack).ReasonCode != 0 {
				b.Fatalf("CONNACK %v %v", p, err)
			}
			const window = 64
			var ends [window + 1]int
			var pubs []byte
			for i := range window {
				pubs, _ = packet.Append(pubs, &packet.Publish{Topic: "bench/sensors/17", QoS: 1, PacketID: uint16(i + 1), Payload: make([]byte, 64)}, packet.V5)
				ends[i+1] = len(pubs)
			}
			b.ResetTimer()
			for done := 0; done < b.N; {
				k := min(window, b.N-done)
				if _, err := nc.Write(pubs[:ends[k]]); err != nil {
					b.Fatal(err)
				}
				for range k {
					p, err := r.ReadPacket(packet.V5)
					if err != nil {
						b.Fatal(err)
					}
					if a, ok := p.(*packet.Puback); !ok || a.ReasonCode.IsError() {
						b.Fatalf("got %+v", p)
					}
				}
				done += k
			}
		})
	}
}
