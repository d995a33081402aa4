package mqtt_test

import (
	"slices"
	"testing"
	"time"

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
