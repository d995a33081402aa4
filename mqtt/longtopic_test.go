package mqtt_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/internal/topictest"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// TestLongTopics: topics and filters may be up to 65,535 bytes (MQTT-4.7.3-3
// only bounds them there), four times the store's 4 KiB key limit, which a
// route or a retained message keyed by the whole topic hit: SUBSCRIBE got a
// bare 0x80, a 3.1.1 retained publish closed the connection without its
// PUBACK, so that the client sent it again forever.
func TestLongTopics(t *testing.T) {
	e := startEnv(t, 1, nil)
	addr := e.addr(0)
	topic := topictest.Long("long", 60000)
	wild := topic[:strings.LastIndexByte(topic, '/')] + "/+" // a filter of 59,9xx bytes

	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			sub := connectRaw(t, addr, v, "long-sub")
			// The exact topic as a filter, and a wildcard of the same length.
			sa := sub.subscribe(1, packet.Subscription{Filter: topic, QoS: 1}, packet.Subscription{Filter: wild, QoS: 1})
			for i, code := range sa.ReasonCodes {
				if code != 1 {
					t.Fatalf("SUBACK %d: %s, want granted QoS 1", i, code)
				}
			}
			pub := connectRaw(t, addr, v, "long-pub")
			for _, retain := range []bool{false, true} {
				payload := "live"
				if retain {
					payload = "retained"
				}
				if code := pub.publish(&packet.Publish{Topic: topic, QoS: 1, PacketID: 1, Retain: retain, Payload: []byte(payload)}); code != 0 {
					t.Fatalf("PUBACK %s", code)
				}
				// One copy for the two matching subscriptions.
				if p := sub.nextPublish(); p.Topic != topic || string(p.Payload) != payload {
					t.Fatalf("got %d bytes on a topic of %d bytes, want %q", len(p.Payload), len(p.Topic), payload)
				}
			}
			// The retained message comes to a new subscriber of the long topic.
			late := connectRaw(t, addr, v, "long-late")
			late.subscribe(1, packet.Subscription{Filter: wild, QoS: 1})
			if p := late.nextPublish(); p.Topic != topic || string(p.Payload) != "retained" || !p.Retain {
				t.Fatalf("retained at SUBSCRIBE: %d bytes on a topic of %d bytes, retain %v", len(p.Payload), len(p.Topic), p.Retain)
			}
			// Clear it for the next version's run.
			pub.publish(&packet.Publish{Topic: topic, QoS: 1, PacketID: 2, Retain: true})
			sub.nextPublish()
			late.nextPublish()
			sub.disconnect()
			pub.disconnect()
			late.disconnect()
		})
	}

	t.Run("PersistentSession", func(t *testing.T) {
		sub := dialRaw(t, addr, packet.V311)
		sub.persistent("long-persistent", 0, nil)
		if sa := sub.subscribe(1, packet.Subscription{Filter: wild, QoS: 1}); sa.ReasonCodes[0] != 1 {
			t.Fatalf("SUBACK %s", sa.ReasonCodes[0])
		}
		sub.disconnect()
		pub := connectRaw(t, addr, packet.V311, "long-pub2")
		pub.publish(&packet.Publish{Topic: topic, QoS: 1, PacketID: 1, Payload: []byte("queued")})
		sub = dialRaw(t, addr, packet.V311)
		if !sub.persistent("long-persistent", 0, nil) {
			t.Fatal("session lost")
		}
		if p := sub.nextPublish(); p.Topic != topic || string(p.Payload) != "queued" {
			t.Fatalf("queued: %d bytes on a topic of %d bytes", len(p.Payload), len(p.Topic))
		}
		// Unsubscribing removes the long route: nothing more comes.
		sub.send(&packet.Unsubscribe{PacketID: 2, Filters: []string{wild}})
		if ua, ok := sub.nextPacket().(*packet.Unsuback); !ok || ua.PacketID != 2 {
			t.Fatal("no UNSUBACK")
		}
		pub.publish(&packet.Publish{Topic: topic, QoS: 1, PacketID: 2, Payload: []byte("after")})
		sub.expectNone(300 * time.Millisecond)
	})
}

// refusingRetain refuses every retained message as over the tenant's limit.
type refusingRetain struct{ mqtt.Retain }

func (refusingRetain) Set(context.Context, *retainpb.SetRequest) (*retainpb.SetResponse, error) {
	return &retainpb.SetResponse{Result: retainpb.Result_RESULT_LIMIT, Reason: "test"}, nil
}

// TestRetainRefusedIsAnswered: a retained message the store refuses (a
// retry would be refused too) gets a 5.0 client PUBACK or DISCONNECT 0x97,
// and a 3.1.1 client its PUBACK, the message going to the subscribers
// unretained: the 3.1.1 connection was closed without the PUBACK, so that
// the client sent the message again on every connection, forever. A store
// that does not answer still closes the 3.1.1 connection (the client's
// resend may find it back).
func TestRetainRefusedIsAnswered(t *testing.T) {
	e := startEnv(t, 1, func(c *mqtt.Config) { c.Retain = refusingRetain{c.Retain} })
	addr := e.addr(0)
	topic := topictest.Long("refused", 60000)
	sub := connectRaw(t, addr, packet.V311, "refused-sub")
	sub.subscribe(1, packet.Subscription{Filter: "refused/#", QoS: 1})

	c3 := connectRaw(t, addr, packet.V311, "refused-311")
	for _, qos := range []byte{1, 0} {
		if code := c3.publish(&packet.Publish{Topic: topic, QoS: qos, PacketID: 1, Retain: true, Payload: []byte{qos}}); code != 0 {
			t.Fatalf("3.1.1 QoS %d: PUBACK %s", qos, code)
		}
		if p := sub.nextPublish(); p.Topic != topic || p.Payload[0] != qos || p.Retain {
			t.Fatalf("3.1.1 QoS %d: the subscriber got %v retain %v", qos, p.Payload, p.Retain)
		}
	}
	c3.send(&packet.Pingreq{})
	if _, ok := c3.nextPacket().(*packet.Pingresp); !ok {
		t.Fatal("3.1.1: no PINGRESP after the refused retained messages")
	}

	c5 := connectRaw(t, addr, packet.V5, "refused-5")
	if code := c5.publish(&packet.Publish{Topic: topic, QoS: 1, PacketID: 1, Retain: true, Payload: []byte("x")}); code != packet.QuotaExceeded {
		t.Fatalf("5.0 QoS 1: PUBACK %s, want quota exceeded", code)
	}
	c5.send(&packet.Publish{Topic: topic, Retain: true, Payload: []byte("x")})
	if d := c5.closed(); d == nil || d.ReasonCode != packet.QuotaExceeded {
		t.Fatalf("5.0 QoS 0: got %+v, want DISCONNECT 0x97", d)
	}
	sub.expectNone(200 * time.Millisecond) // neither 5.0 message was taken

	t.Run("NoAnswer", func(t *testing.T) {
		e := startEnv(t, 1, func(c *mqtt.Config) { c.Retain = failingRetain{c.Retain} })
		c := connectRaw(t, e.addr(0), packet.V311, "no-answer")
		c.send(&packet.Publish{Topic: "r/t", QoS: 1, PacketID: 1, Retain: true, Payload: []byte("x")})
		c.closedWithoutPacket()
	})
}
