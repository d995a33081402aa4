package mqtt_test

import (
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// TestGarbageLeavesNoGoroutine throws random bytes, truncated packets and
// valid-but-wrong sequences at the frontend: none may crash it (a panic
// would end this test binary), and once the clients are gone no goroutine
// of theirs may remain.
func TestGarbageLeavesNoGoroutine(t *testing.T) {
	e := startEnv(t, 1, nil)
	addr := e.addr(0)
	// A first session so that the frontend's lazily started parts exist.
	warm := connectRaw(t, addr, packet.V5, "warm")
	warm.subscribe(1, packet.Subscription{Filter: "g/#", QoS: 1})
	time.Sleep(200 * time.Millisecond)
	ignore := goleak.IgnoreCurrent()
	start := time.Now()
	defer func() { t.Logf("took %v", time.Since(start)) }()

	connect := func(v packet.Version, id string) []byte {
		b, _ := packet.Append(nil, &packet.Connect{ProtocolName: v.ProtocolName(), Version: v, ClientID: id, CleanStart: true, KeepAlive: 30}, v)
		return b
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 300; i++ {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		var msg []byte
		switch i % 4 {
		case 0: // pure garbage
			msg = make([]byte, 1+rng.IntN(200))
			for j := range msg {
				msg[j] = byte(rng.IntN(256))
			}
		case 1: // a valid CONNECT, then garbage
			msg = connect(packet.Version(3+i%3), "garbage")
			for j := 0; j < 1+rng.IntN(100); j++ {
				msg = append(msg, byte(rng.IntN(256)))
			}
		case 2: // a CONNECT cut short
			c := connect(packet.V5, "cut")
			msg = c[:rng.IntN(len(c))]
		case 3: // a valid session that publishes with bit flips
			msg = connect(packet.V311, "flips")
			p, _ := packet.Append(nil, &packet.Publish{Topic: "g/x", QoS: 1, PacketID: 1, Payload: []byte("payload")}, packet.V311)
			p[rng.IntN(len(p))] ^= byte(1 << rng.IntN(8))
			msg = append(msg, p...)
		}
		nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
		nc.Write(msg)
		if i%2 == 0 {
			nc.Close() // hang up at once
			continue
		}
		// Or read until the server hangs up or goes quiet (it may be
		// waiting for the rest of a packet the garbage announced).
		nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		buf := make([]byte, 512)
		for {
			if _, err := nc.Read(buf); err != nil {
				break
			}
		}
		nc.Close()
	}
	// The frontend still serves.
	sub := connectRaw(t, addr, packet.V5, "after-sub")
	sub.subscribe(1, packet.Subscription{Filter: "g/#", QoS: 1})
	pub := connectRaw(t, addr, packet.V5, "after")
	pub.publish(&packet.Publish{Topic: "g/ok", QoS: 1, PacketID: 1, Payload: []byte("ok")})
	for {
		if p := sub.nextPublish(); string(p.Payload) == "ok" {
			break
		}
	}
	pub.nc.Close()
	sub.nc.Close()
	warm.nc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := goleak.Find(ignore)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left behind: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
