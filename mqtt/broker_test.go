package mqtt_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// TestBroker runs the protocol's rules against one store with a frontend,
// the shape of `bifrost standalone`. Each subtest names the normative
// statements it checks.
func TestBroker(t *testing.T) {
	e := startEnv(t, 1, nil)
	addr := e.addr(0)

	t.Run("QoS012InOrder", func(t *testing.T) {
		// MQTT-4.6.0-5: one publisher's messages arrive in order; each QoS
		// both ways, delivered at min(published, granted) (MQTT-3.8.4-8).
		for _, v := range []packet.Version{packet.V31, packet.V311, packet.V5} {
			sub := connectRaw(t, addr, v, fmt.Sprintf("qsub-%d", v))
			if sa := sub.subscribe(1, packet.Subscription{Filter: fmt.Sprintf("q/%d/+", v), QoS: 2}); sa.ReasonCodes[0] != 2 {
				t.Fatalf("%s: granted %v", v, sa.ReasonCodes)
			}
			pub := connectRaw(t, addr, v, fmt.Sprintf("qpub-%d", v))
			for i := 0; i < 30; i++ {
				qos := byte(i % 3)
				var id uint16
				if qos > 0 {
					id = uint16(i + 1)
				}
				pub.publish(&packet.Publish{Topic: fmt.Sprintf("q/%d/t", v), QoS: qos, PacketID: id, Payload: []byte{byte(i)}})
			}
			for i := 0; i < 30; i++ {
				p := sub.nextPublish()
				if p.Payload[0] != byte(i) || p.QoS != byte(i%3) || p.Retain {
					t.Fatalf("%s: message %d: got payload %v qos %d retain %v", v, i, p.Payload, p.QoS, p.Retain)
				}
			}
		}
	})

	t.Run("GrantedQoSCapsDelivery", func(t *testing.T) {
		sub := connectRaw(t, addr, packet.V311, "cap-sub")
		sub.subscribe(1, packet.Subscription{Filter: "cap/t", QoS: 1})
		pub := connectRaw(t, addr, packet.V311, "cap-pub")
		pub.publish(&packet.Publish{Topic: "cap/t", QoS: 2, PacketID: 7, Payload: []byte("x")})
		if p := sub.nextPublish(); p.QoS != 1 {
			t.Fatalf("delivered at QoS %d, want 1 (MQTT-3.8.4-8)", p.QoS)
		}
	})

	t.Run("OverlappingSubscriptionsOnce", func(t *testing.T) {
		// MQTT-3.3.4-2 (5.0): one copy at the highest QoS, with every
		// subscription identifier (MQTT-3.3.4-3).
		sub := connectRaw(t, addr, packet.V5, "ov-sub")
		s1 := &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "ov/#", QoS: 0}}}
		s1.Properties.SubscriptionIdentifier = []uint32{11}
		sub.send(s1)
		sub.next()
		s2 := &packet.Subscribe{PacketID: 2, Subscriptions: []packet.Subscription{{Filter: "ov/+/x", QoS: 1}}}
		s2.Properties.SubscriptionIdentifier = []uint32{22}
		sub.send(s2)
		sub.next()
		pub := connectRaw(t, addr, packet.V5, "ov-pub")
		pub.publish(&packet.Publish{Topic: "ov/a/x", QoS: 1, PacketID: 1, Payload: []byte("m")})
		p := sub.nextPublish()
		if p.QoS != 1 || !slices.Equal(p.Properties.SubscriptionIdentifier, []uint32{11, 22}) {
			t.Fatalf("got qos %d ids %v", p.QoS, p.Properties.SubscriptionIdentifier)
		}
		sub.expectNone(300 * time.Millisecond)
	})

	t.Run("Retained", func(t *testing.T) {
		pub := connectRaw(t, addr, packet.V5, "ret-pub")
		pub.publish(&packet.Publish{Topic: "ret/a", QoS: 1, PacketID: 1, Retain: true, Payload: []byte("A")})
		pub.publish(&packet.Publish{Topic: "ret/b", QoS: 1, PacketID: 2, Retain: true, Payload: []byte("B")})
		// MQTT-3.3.1-6/-7: an empty retained payload deletes.
		pub.publish(&packet.Publish{Topic: "ret/b", QoS: 1, PacketID: 3, Retain: true})
		sub := connectRaw(t, addr, packet.V5, "ret-sub")
		sub.subscribe(1, packet.Subscription{Filter: "ret/+", QoS: 1})
		p := sub.nextPublish()
		if p.Topic != "ret/a" || string(p.Payload) != "A" || !p.Retain { // MQTT-3.3.1-9
			t.Fatalf("retained: %+v", p)
		}
		sub.expectNone(300 * time.Millisecond)
		// Retain handling 1: only for a new subscription (MQTT-3.3.1-10);
		// 2: never (MQTT-3.3.1-11).
		sub.subscribe(2, packet.Subscription{Filter: "ret/+", QoS: 1, RetainHandling: 1})
		sub.expectNone(300 * time.Millisecond)
		sub.subscribe(3, packet.Subscription{Filter: "ret/a", QoS: 1, RetainHandling: 2})
		sub.expectNone(300 * time.Millisecond)
		// A live message has RETAIN 0 unless retain-as-published
		// (MQTT-3.3.1-12, -13).
		rap := connectRaw(t, addr, packet.V5, "ret-rap")
		rap.subscribe(1, packet.Subscription{Filter: "ret/live", QoS: 0, RetainAsPublished: true})
		pub.publish(&packet.Publish{Topic: "ret/live", QoS: 0, Retain: true, Payload: []byte("L")})
		if p := rap.nextPublish(); !p.Retain {
			t.Fatal("retain as published: RETAIN cleared")
		}
		if p := sub.nextPublish(); p.Retain || p.Topic != "ret/live" {
			t.Fatalf("plain subscriber got %+v", p)
		}
	})

	t.Run("WillOnAbnormalCloseOnly", func(t *testing.T) {
		sub := connectRaw(t, addr, packet.V311, "will-sub")
		sub.subscribe(1, packet.Subscription{Filter: "will/#", QoS: 1})
		for _, normal := range []bool{true, false} {
			c := dialRaw(t, addr, packet.V311)
			c.connect(&packet.Connect{ClientID: fmt.Sprintf("will-%v", normal), CleanStart: true, KeepAlive: 60,
				Will: &packet.Will{Topic: "will/" + fmt.Sprint(normal), QoS: 1, Payload: []byte("gone")}})
			if normal {
				c.send(&packet.Disconnect{}) // MQTT-3.14.4-3: the will is discarded
			}
			c.nc.Close()
		}
		p := sub.nextPublish()
		if p.Topic != "will/false" || string(p.Payload) != "gone" {
			t.Fatalf("will: %+v", p)
		}
		sub.expectNone(500 * time.Millisecond)
	})

	t.Run("QoS2DuplicateDeliveredOnce", func(t *testing.T) {
		sub := connectRaw(t, addr, packet.V311, "dup-sub")
		sub.subscribe(1, packet.Subscription{Filter: "dup", QoS: 2})
		pub := connectRaw(t, addr, packet.V311, "dup-pub")
		pub.send(&packet.Publish{Topic: "dup", QoS: 2, PacketID: 9, Payload: []byte("1")})
		pub.next() // PUBREC
		pub.send(&packet.Publish{Topic: "dup", QoS: 2, PacketID: 9, Dup: true, Payload: []byte("1")})
		if rec, ok := pub.next().(*packet.Pubrec); !ok || rec.PacketID != 9 {
			t.Fatal("no second PUBREC")
		}
		pub.send(&packet.Pubrel{PacketID: 9})
		pub.next() // PUBCOMP
		sub.nextPublish()
		sub.expectNone(300 * time.Millisecond) // MQTT-4.3.3-10
	})

	t.Run("NoLocal", func(t *testing.T) {
		c := connectRaw(t, addr, packet.V5, "nolocal")
		c.subscribe(1, packet.Subscription{Filter: "nl/t", QoS: 0, NoLocal: true})
		c.publish(&packet.Publish{Topic: "nl/t", QoS: 0, Payload: []byte("x")})
		c.expectNone(300 * time.Millisecond) // MQTT-3.8.3-3
		other := connectRaw(t, addr, packet.V5, "nolocal-other")
		other.publish(&packet.Publish{Topic: "nl/t", QoS: 0, Payload: []byte("y")})
		if p := c.nextPublish(); string(p.Payload) != "y" {
			t.Fatalf("got %q", p.Payload)
		}
	})

	t.Run("PropertiesForwarded", func(t *testing.T) {
		// MQTT-3.3.2-15..-20 and MQTT-3.3.2-4: request/response and user
		// properties reach the subscriber unchanged.
		sub := connectRaw(t, addr, packet.V5, "props-sub")
		sub.subscribe(1, packet.Subscription{Filter: "props", QoS: 1})
		pub := connectRaw(t, addr, packet.V5, "props-pub")
		p := &packet.Publish{Topic: "props", QoS: 1, PacketID: 1, Payload: []byte("{}")}
		p.Properties.ResponseTopic = "props/reply"
		p.Properties.CorrelationData = []byte{1, 2, 3}
		p.Properties.ContentType = "application/json"
		p.Properties.PayloadFormatIndicator, p.Properties.HasPayloadFormatIndicator = 1, true
		p.Properties.UserProperties = []packet.UserProperty{{Key: "a", Value: "1"}, {Key: "a", Value: "2"}}
		p.Properties.MessageExpiryInterval, p.Properties.HasMessageExpiryInterval = 100, true
		pub.publish(p)
		got := sub.nextPublish().Properties
		if got.ResponseTopic != "props/reply" || !bytes.Equal(got.CorrelationData, []byte{1, 2, 3}) ||
			got.ContentType != "application/json" || got.PayloadFormatIndicator != 1 ||
			!slices.Equal(got.UserProperties, p.Properties.UserProperties) ||
			!got.HasMessageExpiryInterval || got.MessageExpiryInterval > 100 || got.MessageExpiryInterval < 99 {
			t.Fatalf("properties: %+v", got)
		}
	})

	t.Run("MessageExpiry", func(t *testing.T) {
		// MQTT-3.3.2-5: an expired message is not delivered. The
		// subscriber's window is 1, so the second message waits in the
		// queue past its expiry.
		sub := dialRaw(t, addr, packet.V5)
		cp := &packet.Connect{ClientID: "exp-sub", CleanStart: true}
		cp.Properties.ReceiveMaximum, cp.Properties.HasReceiveMaximum = 1, true
		sub.connect(cp)
		sub.subscribe(1, packet.Subscription{Filter: "exp", QoS: 1})
		pub := connectRaw(t, addr, packet.V5, "exp-pub")
		pub.publish(&packet.Publish{Topic: "exp", QoS: 1, PacketID: 1, Payload: []byte("first")})
		p2 := &packet.Publish{Topic: "exp", QoS: 1, PacketID: 2, Payload: []byte("expires")}
		p2.Properties.MessageExpiryInterval, p2.Properties.HasMessageExpiryInterval = 1, true
		pub.publish(p2)
		pub.publish(&packet.Publish{Topic: "exp", QoS: 1, PacketID: 3, Payload: []byte("third")})
		first, ok := sub.next().(*packet.Publish)
		if !ok || string(first.Payload) != "first" {
			t.Fatalf("first: %+v", first)
		}
		sub.expectNone(1500 * time.Millisecond) // receive maximum 1 holds the rest (MQTT-3.3.4-7)
		sub.send(&packet.Puback{PacketID: first.PacketID})
		if p := sub.nextPublish(); string(p.Payload) != "third" {
			t.Fatalf("after expiry got %q", p.Payload)
		}
	})

	t.Run("TopicAliasBothWays", func(t *testing.T) {
		sub := dialRaw(t, addr, packet.V5)
		cp := &packet.Connect{ClientID: "alias-sub", CleanStart: true}
		cp.Properties.TopicAliasMaximum, cp.Properties.HasTopicAliasMaximum = 5, true
		sub.connect(cp)
		sub.subscribe(1, packet.Subscription{Filter: "alias/#", QoS: 0})
		pub := connectRaw(t, addr, packet.V5, "alias-pub")
		p := &packet.Publish{Topic: "alias/long/topic", Payload: []byte("1")}
		p.Properties.TopicAlias, p.Properties.HasTopicAlias = 3, true
		pub.publish(p)
		p2 := &packet.Publish{Payload: []byte("2")} // MQTT-3.3.2-12: alias only
		p2.Properties.TopicAlias, p2.Properties.HasTopicAlias = 3, true
		pub.publish(p2)
		a := sub.nextPublish()
		b := sub.nextPublish()
		if a.Topic != "alias/long/topic" || !a.Properties.HasTopicAlias {
			t.Fatalf("first: %+v", a)
		}
		if b.Topic != "" || b.Properties.TopicAlias != a.Properties.TopicAlias || string(b.Payload) != "2" {
			t.Fatalf("second: topic %q alias %d", b.Topic, b.Properties.TopicAlias)
		}
		// An alias over the maximum: DISCONNECT 0x94 (MQTT-3.3.2-9).
		bad := &packet.Publish{Topic: "alias/x"}
		bad.Properties.TopicAlias, bad.Properties.HasTopicAlias = 1000, true
		pub.send(bad)
		if d := pub.closed(); d == nil || d.ReasonCode != packet.TopicAliasInvalid {
			t.Fatalf("disconnect: %+v", d)
		}
	})

	t.Run("BadInput", func(t *testing.T) {
		// A malformed packet: 5.0 gets DISCONNECT 0x81 (MQTT-4.13.1-1),
		// 3.1.1 a closed connection.
		c5 := connectRaw(t, addr, packet.V5, "bad5")
		c5.sendBytes([]byte{0x30, 0x03, 0x00, 0x05, 'a'}) // topic length past the packet
		if d := c5.closed(); d == nil || d.ReasonCode != packet.MalformedPacket {
			t.Fatalf("v5 malformed: %+v", d)
		}
		c3 := connectRaw(t, addr, packet.V311, "bad3")
		c3.sendBytes([]byte{0x62, 0x02, 0x00, 0x00}) // PUBREL with packet ID 0
		if d := c3.closed(); d != nil {
			t.Fatalf("3.1.1 got a DISCONNECT: %+v", d)
		}
		// An unknown protocol level: CONNACK 0x01 (MQTT-3.1.2-2).
		u := dialRaw(t, addr, packet.V311)
		u.sendBytes([]byte{0x10, 0x0d, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x09, 0x02, 0x00, 0x3c, 0x00, 0x01, 'x'})
		if ack, ok := u.next().(*packet.Connack); !ok || ack.ReasonCode != packet.ConnRefusedProtocolVersion {
			t.Fatalf("unsupported version: %+v", ack)
		}
		// A PUBLISH to a wildcard topic (MQTT-3.3.2-2).
		w := connectRaw(t, addr, packet.V5, "wild")
		w.send(&packet.Publish{Topic: "a/+", Payload: []byte("x")})
		if d := w.closed(); d == nil || d.ReasonCode != packet.TopicNameInvalid {
			t.Fatalf("wildcard topic: %+v", d)
		}
		// A bad filter is refused in SUBACK, the rest granted (MQTT-3.8.4-?).
		f := connectRaw(t, addr, packet.V5, "badfilter")
		sa := f.subscribe(1, packet.Subscription{Filter: "a/#/b"}, packet.Subscription{Filter: "ok/+", QoS: 1})
		if !slices.Equal(sa.ReasonCodes, []packet.ReasonCode{packet.TopicFilterInvalid, 1}) {
			t.Fatalf("suback %v", sa.ReasonCodes)
		}
		// A first packet other than CONNECT: closed (MQTT-3.1.0-1).
		n := dialRaw(t, addr, packet.V311)
		n.sendBytes([]byte{0xc0, 0x00})
		if d := n.closed(); d != nil {
			t.Fatal("got a DISCONNECT before CONNECT")
		}
		// 3.1.1 empty client ID with clean session 0: 0x02 (MQTT-3.1.3-8).
		e := dialRaw(t, addr, packet.V311)
		if ack := e.connect(&packet.Connect{CleanStart: false}); ack.ReasonCode != packet.ConnRefusedIdentifierRejected {
			t.Fatalf("empty id: %s", ack.ReasonCode)
		}
		// 5.0 empty client ID: assigned (MQTT-3.2.2-16).
		a := dialRaw(t, addr, packet.V5)
		if ack := a.connect(&packet.Connect{CleanStart: true}); ack.ReasonCode != 0 || ack.Properties.AssignedClientIdentifier == "" {
			t.Fatalf("assigned id: %+v", ack)
		}
	})

	t.Run("KeepAlive", func(t *testing.T) {
		// MQTT-3.1.2-24: no packet for 1.5 x keep alive closes the connection.
		c := dialRaw(t, addr, packet.V5)
		c.connect(&packet.Connect{ClientID: "ka", CleanStart: true, KeepAlive: 1})
		start := time.Now()
		d := c.closed()
		if d == nil || d.ReasonCode != packet.KeepAliveTimeout {
			t.Fatalf("disconnect: %+v", d)
		}
		if el := time.Since(start); el < 1400*time.Millisecond {
			t.Fatalf("closed after %v, before 1.5 x keep alive", el)
		}
	})

	t.Run("Takeover", func(t *testing.T) {
		// MQTT-3.1.4-3: a second connection with the client ID closes the
		// first, with DISCONNECT 0x8E in 5.0.
		old := connectRaw(t, addr, packet.V5, "same")
		old.subscribe(1, packet.Subscription{Filter: "take/t"})
		connectRaw(t, addr, packet.V5, "same")
		if d := old.closed(); d == nil || d.ReasonCode != packet.SessionTakenOver {
			t.Fatalf("old connection: %+v", d)
		}
	})

	t.Run("ReceiveMaximumExceeded", func(t *testing.T) {
		// MQTT-3.3.4-9: more unacknowledged QoS 2 publishes than the
		// server's receive maximum: DISCONNECT 0x93.
		c := dialRaw(t, addr, packet.V5)
		ack := c.connect(&packet.Connect{ClientID: "rmax", CleanStart: true})
		max := int(ack.Properties.ReceiveMaximum)
		if max == 0 {
			t.Fatal("no receive maximum announced")
		}
		for i := 1; i <= max+1; i++ {
			c.send(&packet.Publish{Topic: "rmax", QoS: 2, PacketID: uint16(i), Payload: []byte("x")})
		}
		if d := c.closed(); d == nil || d.ReasonCode != packet.ReceiveMaximumExceeded {
			t.Fatalf("disconnect: %+v", d)
		}
	})

	t.Run("SharedSubscriptionOneMember", func(t *testing.T) {
		a := connectRaw(t, addr, packet.V5, "share-a")
		b := connectRaw(t, addr, packet.V5, "share-b")
		a.subscribe(1, packet.Subscription{Filter: "$share/g/sh/t", QoS: 1})
		b.subscribe(1, packet.Subscription{Filter: "$share/g/sh/t", QoS: 1})
		pub := connectRaw(t, addr, packet.V5, "share-pub")
		const n = 40
		for i := 0; i < n; i++ {
			pub.publish(&packet.Publish{Topic: "sh/t", QoS: 1, PacketID: uint16(i + 1), Payload: []byte{byte(i)}})
		}
		got := map[byte]int{}
		count := func(c *rawClient) int {
			k := 0
			for {
				select {
				case p := <-c.recv:
					if pub, ok := p.(*packet.Publish); ok {
						c.send(&packet.Puback{PacketID: pub.PacketID})
						got[pub.Payload[0]]++
						k++
					}
				case <-time.After(500 * time.Millisecond):
					return k
				}
			}
		}
		ka, kb := count(a), count(b)
		if ka+kb != n || len(got) != n || ka == 0 || kb == 0 {
			t.Fatalf("a got %d, b got %d, distinct %d (want %d once each, spread)", ka, kb, len(got), n)
		}
	})

	t.Run("Unsubscribe", func(t *testing.T) {
		c := connectRaw(t, addr, packet.V5, "unsub")
		c.subscribe(1, packet.Subscription{Filter: "un/t"})
		c.send(&packet.Unsubscribe{PacketID: 2, Filters: []string{"un/t", "never", "a/#/b"}})
		ua, ok := c.next().(*packet.Unsuback)
		// An invalid filter is 0x8F, not "no subscription existed".
		if !ok || !slices.Equal(ua.ReasonCodes, []packet.ReasonCode{packet.Success, packet.NoSubscriptionExisted, packet.TopicFilterInvalid}) {
			t.Fatalf("unsuback %+v", ua)
		}
		pub := connectRaw(t, addr, packet.V5, "unsub-pub")
		if code := pub.publish(&packet.Publish{Topic: "un/t", QoS: 1, PacketID: 1}); code != packet.NoMatchingSubscribers {
			t.Fatalf("puback %s, want no matching subscribers", code)
		}
		c.expectNone(300 * time.Millisecond)
	})
}

// TestAcrossFrontends: a client on frontend A reaches a subscriber on
// frontend B, through dist and the Frontend service.
func TestAcrossFrontends(t *testing.T) {
	e := startEnv(t, 2, nil)
	sub := connectRaw(t, e.addr(1), packet.V5, "far-sub")
	sub.subscribe(1, packet.Subscription{Filter: "far/#", QoS: 1})
	pub := connectRaw(t, e.addr(0), packet.V5, "far-pub")
	// Warm frontend A's match cache with "no subscriber" first: the
	// invalidation broadcast must clear it when B subscribes.
	pub.publish(&packet.Publish{Topic: "far/late", QoS: 1, PacketID: 1})
	late := connectRaw(t, e.addr(1), packet.V5, "far-late")
	late.subscribe(1, packet.Subscription{Filter: "far/late", QoS: 1})
	for i := 0; i < 20; i++ {
		pub.publish(&packet.Publish{Topic: "far/late", QoS: 1, PacketID: uint16(i + 2), Payload: []byte{byte(i)}})
	}
	sub.nextPublish() // the warm-up message
	for i := 0; i < 20; i++ {
		if p := sub.nextPublish(); p.Payload[0] != byte(i) {
			t.Fatalf("sub: message %d got %v", i, p.Payload)
		}
		if p := late.nextPublish(); p.Payload[0] != byte(i) {
			t.Fatalf("late: message %d got %v", i, p.Payload)
		}
	}
}
