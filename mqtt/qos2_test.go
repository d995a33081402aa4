package mqtt_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// TestQoS2IDsDurableBeforePubrec: a persistent session's unreleased QoS 2
// packet ID is in its inbox record before the PUBREC, so that a PUBLISH the
// client sends again on another frontend (its PUBREC lost with the first
// frontend, or, as here, the session taken over before the first connection
// wrote anything) is acknowledged and not delivered a second time; it is out
// of the record before the PUBCOMP, so that the ID, reused, carries a new
// message. Before, the IDs were written at detach only.
func TestQoS2IDsDurableBeforePubrec(t *testing.T) {
	e := startEnv(t, 2, nil)
	sub := dialRaw(t, e.addr(1), packet.V5)
	sub.persistent("q2-sub", 600, nil)
	if sa := sub.subscribe(1, packet.Subscription{Filter: "q2/t", QoS: 1}); sa.ReasonCodes[0] != 1 {
		t.Fatalf("SUBACK %v", sa.ReasonCodes)
	}
	pub := dialRaw(t, e.addr(0), packet.V5)
	pub.persistent("q2-pub", 600, nil)
	pub.send(&packet.Publish{Topic: "q2/t", QoS: 2, PacketID: 7, Payload: []byte("once")})
	if rec, ok := pub.nextPacket().(*packet.Pubrec); !ok || rec.PacketID != 7 || rec.ReasonCode.IsError() {
		t.Fatalf("want PUBREC 7, got %+v", rec)
	}
	if rel := e.inboxMeta(0, "q2-pub").GetAwaitingRel(); !slices.Contains(rel, 7) {
		t.Fatalf("PUBREC sent, but the session's record has unreleased IDs %v", rel)
	}
	if p := sub.nextPublish(); string(p.Payload) != "once" {
		t.Fatalf("received %q", p.Payload)
	}

	// The session moves to the other frontend; the client, which never
	// saw its PUBREC, sends the PUBLISH again.
	pub2 := dialRaw(t, e.addr(1), packet.V5)
	if !pub2.persistent("q2-pub", 600, nil) {
		t.Fatal("the session was not resumed")
	}
	pub.takenOverWithin(5 * time.Second)
	pub2.send(&packet.Publish{Topic: "q2/t", QoS: 2, PacketID: 7, Dup: true, Payload: []byte("once")})
	if rec, ok := pub2.nextPacket().(*packet.Pubrec); !ok || rec.PacketID != 7 || rec.ReasonCode.IsError() {
		t.Fatalf("resend: want PUBREC 7, got %+v", rec)
	}
	sub.expectNone(time.Second) // MQTT-4.3.3-10: not delivered twice
	pub2.send(&packet.Pubrel{PacketID: 7})
	if comp, ok := pub2.nextPacket().(*packet.Pubcomp); !ok || comp.PacketID != 7 || comp.ReasonCode != 0 {
		t.Fatalf("want PUBCOMP 7, got %+v", comp)
	}
	if rel := e.inboxMeta(0, "q2-pub").GetAwaitingRel(); len(rel) != 0 {
		t.Fatalf("PUBCOMP sent, but the session's record still has unreleased IDs %v", rel)
	}
	// The ID, used again, is a new message.
	if code := pub2.publish(&packet.Publish{Topic: "q2/t", QoS: 2, PacketID: 7, Payload: []byte("again")}); code.IsError() {
		t.Fatalf("publish again: %s", code)
	}
	if p := sub.nextPublish(); string(p.Payload) != "again" {
		t.Fatalf("received %q", p.Payload)
	}
}

// TestQoS2RoutedOnceAcrossFrontends: a persistent session's QoS 2 message
// whose routing is still in flight on a frontend the session has left (the
// frontend cut off from the stores, as the jepsen mqtt-queue-resend ×
// partition-frontend run found) and that the client sends again through
// another frontend lands once in the subscriber's inbox: the packet ID is
// written with a key before the message is routed, the second frontend
// routes the resend under that key, and the inbox drops the copy that
// comes second. Before, the first frontend routed before it wrote the ID,
// the resend found no ID and was routed again, and both copies landed.
func TestQoS2RoutedOnceAcrossFrontends(t *testing.T) {
	var mu sync.Mutex
	regs := map[string]*prometheus.Registry{}
	e := startEnv(t, 2, func(c *mqtt.Config) {
		reg := prometheus.NewRegistry()
		c.Registerer = reg
		mu.Lock()
		regs[c.ReceiverID] = reg
		mu.Unlock()
	})
	e.mu.Lock()
	f0 := e.fronts[0]
	e.mu.Unlock()
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			topic, pubID := "q2x/"+v.String(), "q2x-pub-"+v.String()
			sub := dialRaw(t, e.addr(1), packet.V5)
			sub.persistent("q2x-sub-"+v.String(), 600, nil)
			if sa := sub.subscribe(1, packet.Subscription{Filter: topic, QoS: 2}); sa.ReasonCodes[0] != 2 {
				t.Fatalf("SUBACK %v", sa.ReasonCodes)
			}
			pub := dialRaw(t, e.addr(0), v)
			pub.persistent(pubID, 600, nil)
			release := mqtt.HoldRouting(f0)
			defer release()
			pub.send(&packet.Publish{Topic: topic, QoS: 2, PacketID: 9, Payload: []byte("once")})
			// The ID is written (with its key) before the message is routed.
			deadline := time.Now().Add(5 * time.Second)
			for !slices.Contains(e.inboxMeta(0, pubID).GetAwaitingRel(), 9) {
				if time.Now().After(deadline) {
					t.Fatal("the packet ID is not in the session's record while its message is routed")
				}
				time.Sleep(20 * time.Millisecond)
			}
			// The client gives up on frontend 0 and sends again through 1.
			pub2 := dialRaw(t, e.addr(1), v)
			if !pub2.persistent(pubID, 600, nil) {
				t.Fatal("the session was not resumed")
			}
			pub2.send(&packet.Publish{Topic: topic, QoS: 2, PacketID: 9, Dup: true, Payload: []byte("once")})
			if rec, ok := pub2.nextPacket().(*packet.Pubrec); !ok || rec.PacketID != 9 || rec.ReasonCode.IsError() {
				t.Fatalf("resend: want PUBREC 9, got %+v", rec)
			}
			if p := sub.nextPublish(); string(p.Payload) != "once" {
				t.Fatalf("received %q", p.Payload)
			}
			pub2.send(&packet.Pubrel{PacketID: 9})
			if comp, ok := pub2.nextPacket().(*packet.Pubcomp); !ok || comp.PacketID != 9 {
				t.Fatalf("want PUBCOMP 9, got %+v", comp)
			}
			// Frontend 0's copy goes on now, and is dropped by the inbox.
			dups := counterValue(t, regs[mqtt.ReceiverIDOf(f0)], "bifrost_mqtt_inbox_duplicates_total", "")
			release()
			for counterValue(t, regs[mqtt.ReceiverIDOf(f0)], "bifrost_mqtt_inbox_duplicates_total", "") == dups {
				if time.Now().After(deadline.Add(10 * time.Second)) {
					t.Fatal("frontend 0's held copy was not routed")
				}
				time.Sleep(20 * time.Millisecond)
			}
			sub.expectNone(500 * time.Millisecond)
			pub2.disconnect()
			sub.disconnect()
		})
	}
}
