package mqtt_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// TestAllRetainedAtSubscribe: MQTT-3.3.1-9, every retained message that
// matches a new subscription is sent, not the first 1,000; and they are
// sent as the client's flow control allows rather than queued at once, so
// that a client with a small Receive Maximum, behind a small queue, gets
// them all (a frontend that handed them over at once dropped those past
// its queue). 2,500 retained messages, one wildcard subscription: each
// arrives once, at QoS 1 to a 5.0 client with Receive Maximum 10, at QoS 0
// to a 3.1.1 one.
func TestAllRetainedAtSubscribe(t *testing.T) {
	e := startEnv(t, 1, func(c *mqtt.Config) { c.MaxQueued = 5 })
	addr := e.addr(0)
	const n = 2500
	store := retain.NewClient(e.cluster.Nodes[0].Router())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	slots := make(chan struct{}, 16)
	for i := 0; i < n; i++ {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			m := &retainpb.Message{Topic: fmt.Sprintf("fleet/%04d/state", i), Payload: []byte(fmt.Sprint(i)), Qos: 1}
			if r, err := store.Set(ctx, &retainpb.SetRequest{Tenant: auth.DefaultTenant, Message: m}); err != nil || r.Result != retainpb.Result_RESULT_OK {
				errs <- fmt.Errorf("retain %d: %v %v", i, r, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	receiveAll := func(t *testing.T, c *rawClient, qos byte) {
		t.Helper()
		seen := map[string]bool{}
		for len(seen) < n {
			p := c.nextPublish()
			if !p.Retain || p.QoS != qos {
				t.Fatalf("%q: retain %v QoS %d, want retained at QoS %d", p.Topic, p.Retain, p.QoS, qos)
			}
			if seen[p.Topic] {
				t.Fatalf("%q twice", p.Topic)
			}
			seen[p.Topic] = true
		}
		c.expectNone(300 * time.Millisecond)
	}
	t.Run("QoS1ReceiveMaximum10", func(t *testing.T) {
		c := dialRaw(t, addr, packet.V5)
		cp := &packet.Connect{ClientID: "all-retained-5", CleanStart: true, KeepAlive: 60}
		cp.Properties.ReceiveMaximum, cp.Properties.HasReceiveMaximum = 10, true
		if ack := c.connect(cp); ack.ReasonCode != 0 {
			t.Fatalf("CONNACK %s", ack.ReasonCode)
		}
		c.subscribe(1, packet.Subscription{Filter: "fleet/+/state", QoS: 1})
		receiveAll(t, c, 1)
	})
	t.Run("QoS0", func(t *testing.T) {
		c := connectRaw(t, addr, packet.V311, "all-retained-311")
		c.subscribe(1, packet.Subscription{Filter: "fleet/#", QoS: 0})
		receiveAll(t, c, 0)
	})
}

// TestRetainedWaitForTheWindow: the retained messages of a subscription go
// out as the client acknowledges them: with Receive Maximum 2, two are in
// flight until a PUBACK frees a slot (MQTT-3.3.4-9), and an UNSUBSCRIBE
// stops the rest (MQTT-3.10.4-2).
func TestRetainedWaitForTheWindow(t *testing.T) {
	e := startEnv(t, 1, nil)
	addr := e.addr(0)
	pub := connectRaw(t, addr, packet.V5, "window-pub")
	for i := 0; i < 20; i++ {
		pub.publish(&packet.Publish{Topic: fmt.Sprintf("w/%02d", i), QoS: 1, PacketID: uint16(i + 1), Retain: true, Payload: []byte{byte(i)}})
	}
	c := dialRaw(t, addr, packet.V5)
	cp := &packet.Connect{ClientID: "window-sub", CleanStart: true, KeepAlive: 60}
	cp.Properties.ReceiveMaximum, cp.Properties.HasReceiveMaximum = 2, true
	c.connect(cp)
	c.subscribe(1, packet.Subscription{Filter: "w/+", QoS: 1})
	var held []*packet.Publish
	for i := 0; i < 2; i++ {
		p, ok := c.nextPacket().(*packet.Publish)
		if !ok || p.Payload[0] != byte(i) {
			t.Fatalf("message %d: %+v", i, p)
		}
		held = append(held, p)
	}
	c.expectNone(300 * time.Millisecond) // the window is full
	c.send(&packet.Puback{PacketID: held[0].PacketID})
	if p, ok := c.nextPacket().(*packet.Publish); !ok || p.Payload[0] != 2 {
		t.Fatalf("after a PUBACK: %+v", p)
	}
	c.send(&packet.Unsubscribe{PacketID: 2, Filters: []string{"w/+"}})
	if ua, ok := c.nextPacket().(*packet.Unsuback); !ok || ua.PacketID != 2 {
		t.Fatal("no UNSUBACK")
	}
	c.send(&packet.Puback{PacketID: held[1].PacketID})
	c.expectNone(300 * time.Millisecond) // unsubscribed: no more
}

// TestRetainedBeforeTheNextReply: the retained messages a SUBSCRIBE
// matches, as far as the client has room for them, are sent before the
// answer to the client's next packet, as when all were sent at once: a
// client that sends PINGREQ after SUBSCRIBE has them when its PINGRESP
// comes, so the match is a read between its SUBSCRIBE and the PINGRESP.
// With every retained message sent by a goroutine after the SUBACK, the
// PINGRESP came first, and the jepsen mqtt-retained reader (a PINGRESP
// without a retained message is a read of "none") saw an empty register
// that had a value: not linearizable (make test's jepsen-ci,
// mqtt-retained × partition-one+kill-frontend+partition-frontend).
func TestRetainedBeforeTheNextReply(t *testing.T) {
	e := startEnv(t, 1, nil)
	addr := e.addr(0)
	pub := connectRaw(t, addr, packet.V311, "rbr-pub")
	for i := 0; i < 3; i++ {
		pub.publish(&packet.Publish{Topic: fmt.Sprintf("rbr/%d", i), QoS: 1, PacketID: uint16(i + 1), Retain: true, Payload: []byte("v")})
	}
	for round := 0; round < 5; round++ {
		for _, v := range []packet.Version{packet.V311, packet.V5} {
			c := connectRaw(t, addr, v, fmt.Sprintf("rbr-%d-%s", round, v))
			c.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "rbr/#", QoS: 1}}})
			c.send(&packet.Pingreq{})
			var order []packet.Type
			for len(order) == 0 || order[len(order)-1] != packet.PINGRESP {
				p := c.next()
				if p == nil {
					t.Fatal("closed")
				}
				order = append(order, p.Type())
			}
			if want := []packet.Type{packet.SUBACK, packet.PUBLISH, packet.PUBLISH, packet.PUBLISH, packet.PINGRESP}; !slices.Equal(order, want) {
				t.Fatalf("%s, round %d: packets %v, want %v", v, round, order, want)
			}
			c.disconnect()
		}
	}
}
