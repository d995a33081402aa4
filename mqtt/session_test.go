package mqtt_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/bifrost-mq/bifrost/coprocessors/inbox"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// persistent connects with clean start/session 0 and, for MQTT 5, a session
// expiry; it fails the test unless accepted and returns session present.
func (c *rawClient) persistent(clientID string, expiry uint32, will *packet.Will) bool {
	c.t.Helper()
	cp := &packet.Connect{ClientID: clientID, KeepAlive: 60, Will: will}
	if c.v == packet.V5 {
		cp.Properties.SessionExpiryInterval, cp.Properties.HasSessionExpiryInterval = expiry, true
	}
	ack := c.connect(cp)
	if ack.ReasonCode != 0 {
		c.t.Fatalf("CONNACK %s", ack.ReasonCode)
	}
	return ack.SessionPresent
}

// takenOverWithin checks that the server closes the connection with
// DISCONNECT 0x8E (MQTT-3.1.4-3) within d: another connection took its
// session over.
func (c *rawClient) takenOverWithin(d time.Duration) {
	c.t.Helper()
	start := time.Now()
	if dp := c.closed(); dp == nil || dp.ReasonCode != packet.SessionTakenOver {
		c.t.Fatalf("old connection got %+v, want DISCONNECT 0x8E", dp)
	}
	if took := time.Since(start); took > d {
		c.t.Fatalf("the old connection closed %v after the new one's CONNACK", took)
	}
}

// disconnect ends the connection normally and waits for the server to close it.
func (c *rawClient) disconnect() {
	c.t.Helper()
	c.send(&packet.Disconnect{})
	c.closed()
}

// nextPacket returns the next packet that is not a PINGRESP, failing on close.
func (c *rawClient) nextPacket() packet.Packet {
	c.t.Helper()
	p := c.next()
	if p == nil {
		c.t.Fatal("connection closed")
	}
	return p
}

// TestPersistentSession311: MQTT-3.1.2-4 (clean session 0 resumes the
// session), MQTT-3.2.2-2 (CONNACK session present 1 when it does), and
// MQTT-4.6.0-5 (order): QoS 1 messages published while the client was away
// are kept in its inbox and all delivered, in order, when it comes back.
func TestPersistentSession311(t *testing.T) {
	e := startEnv(t, 1, nil)
	addr := e.addr(0)
	sub := dialRaw(t, addr, packet.V311)
	if sub.persistent("p311", 0, nil) {
		t.Fatal("a new session said present")
	}
	sub.subscribe(1, packet.Subscription{Filter: "p311/#", QoS: 1})
	sub.disconnect()

	pub := connectRaw(t, addr, packet.V311, "p311-pub")
	for i := 0; i < 10; i++ {
		pub.publish(&packet.Publish{Topic: "p311/t", QoS: 1, PacketID: uint16(i + 1), Payload: []byte{byte(i)}})
	}
	sub = dialRaw(t, addr, packet.V311)
	if !sub.persistent("p311", 0, nil) {
		t.Fatal("MQTT-3.2.2-2: session present 0 on resuming")
	}
	for i := 0; i < 10; i++ {
		if p := sub.nextPublish(); p.Payload[0] != byte(i) || p.QoS != 1 {
			t.Fatalf("message %d: got %v at QoS %d", i, p.Payload, p.QoS)
		}
	}
	sub.expectNone(300 * time.Millisecond)
	// Live delivery to the resumed session.
	pub.publish(&packet.Publish{Topic: "p311/live", QoS: 1, PacketID: 20, Payload: []byte("live")})
	if p := sub.nextPublish(); string(p.Payload) != "live" {
		t.Fatalf("live: %q", p.Payload)
	}
	// All acknowledged: nothing is resent on the next connection.
	sub.disconnect()
	sub = dialRaw(t, addr, packet.V311)
	if !sub.persistent("p311", 0, nil) {
		t.Fatal("session lost")
	}
	sub.expectNone(500 * time.Millisecond)
	// MQTT-3.1.2-6: clean session 1 discards it.
	sub.disconnect()
	sub = dialRaw(t, addr, packet.V311)
	if ack := sub.connect(&packet.Connect{ClientID: "p311", CleanStart: true}); ack.SessionPresent {
		t.Fatal("MQTT-3.2.2-1: session present with clean session 1")
	}
	sub.disconnect()
	pub.publish(&packet.Publish{Topic: "p311/t", QoS: 1, PacketID: 21, Payload: []byte("after")})
	sub = dialRaw(t, addr, packet.V311)
	if sub.persistent("p311", 0, nil) {
		t.Fatal("the discarded session came back")
	}
	sub.expectNone(500 * time.Millisecond)
}

// TestRetransmitAfterReconnect: MQTT-4.4.0-1 — an unacknowledged QoS 1
// message is resent on reconnect with DUP 1 (MQTT-3.3.1-1) and the same
// packet ID; a QoS 2 message whose PUBREC came back gets its PUBREL resent,
// not the PUBLISH, so it reaches the client exactly once (MQTT-4.3.3).
func TestRetransmitAfterReconnect(t *testing.T) {
	e := startEnv(t, 1, nil)
	addr := e.addr(0)
	pub := connectRaw(t, addr, packet.V5, "rt-pub")

	t.Run("QoS1", func(t *testing.T) {
		sub := dialRaw(t, addr, packet.V5)
		sub.persistent("rt1", 300, nil)
		sub.subscribe(1, packet.Subscription{Filter: "rt1", QoS: 1})
		pub.publish(&packet.Publish{Topic: "rt1", QoS: 1, PacketID: 1, Payload: []byte("one")})
		first, ok := sub.nextPacket().(*packet.Publish)
		if !ok || first.Dup {
			t.Fatalf("first delivery: %+v", first)
		}
		sub.nc.Close() // no PUBACK
		sub = dialRaw(t, addr, packet.V5)
		if !sub.persistent("rt1", 300, nil) {
			t.Fatal("session present 0")
		}
		again, ok := sub.nextPacket().(*packet.Publish)
		if !ok || !again.Dup || again.PacketID != first.PacketID || string(again.Payload) != "one" {
			t.Fatalf("MQTT-4.4.0-1: resent %+v, first %+v", again, first)
		}
		sub.send(&packet.Puback{PacketID: again.PacketID})
		sub.disconnect()
		sub = dialRaw(t, addr, packet.V5)
		sub.persistent("rt1", 300, nil)
		sub.expectNone(500 * time.Millisecond)
	})

	t.Run("QoS2ToSubscriber", func(t *testing.T) {
		sub := dialRaw(t, addr, packet.V5)
		sub.keepRel.Store(true)
		sub.persistent("rt2", 300, nil)
		sub.subscribe(1, packet.Subscription{Filter: "rt2", QoS: 2})
		pub.publish(&packet.Publish{Topic: "rt2", QoS: 2, PacketID: 2, Payload: []byte("two")})
		p, ok := sub.nextPacket().(*packet.Publish)
		if !ok || p.QoS != 2 {
			t.Fatalf("delivery: %+v", p)
		}
		sub.send(&packet.Pubrec{PacketID: p.PacketID})
		if rel, ok := sub.nextPacket().(*packet.Pubrel); !ok || rel.PacketID != p.PacketID {
			t.Fatalf("PUBREL: %+v", rel)
		}
		sub.nc.Close() // no PUBCOMP

		sub = dialRaw(t, addr, packet.V5)
		sub.keepRel.Store(true)
		if !sub.persistent("rt2", 300, nil) {
			t.Fatal("session present 0")
		}
		rel, ok := sub.nextPacket().(*packet.Pubrel)
		if !ok || rel.PacketID != p.PacketID {
			t.Fatalf("MQTT-4.4.0-1: want the PUBREL resent, got %+v", rel)
		}
		sub.send(&packet.Pubcomp{PacketID: rel.PacketID})
		sub.expectNone(500 * time.Millisecond)
		sub.disconnect()
		sub = dialRaw(t, addr, packet.V5)
		sub.persistent("rt2", 300, nil)
		sub.expectNone(500 * time.Millisecond) // delivered exactly once
	})

	t.Run("QoS2FromPublisher", func(t *testing.T) {
		// The publisher's unreleased QoS 2 packet IDs survive its
		// reconnect: the resent PUBLISH is not delivered again.
		sub := connectRaw(t, addr, packet.V5, "rt3-sub")
		sub.subscribe(1, packet.Subscription{Filter: "rt3", QoS: 2})
		p := dialRaw(t, addr, packet.V5)
		p.persistent("rt3-pub", 300, nil)
		p.send(&packet.Publish{Topic: "rt3", QoS: 2, PacketID: 7, Payload: []byte("three")})
		if rec, ok := p.nextPacket().(*packet.Pubrec); !ok || rec.PacketID != 7 {
			t.Fatalf("PUBREC: %+v", rec)
		}
		p.nc.Close() // no PUBREL
		p = dialRaw(t, addr, packet.V5)
		if !p.persistent("rt3-pub", 300, nil) {
			t.Fatal("session present 0")
		}
		p.send(&packet.Publish{Topic: "rt3", QoS: 2, PacketID: 7, Dup: true, Payload: []byte("three")})
		if rec, ok := p.nextPacket().(*packet.Pubrec); !ok || rec.PacketID != 7 {
			t.Fatalf("PUBREC again: %+v", rec)
		}
		p.send(&packet.Pubrel{PacketID: 7})
		if comp, ok := p.nextPacket().(*packet.Pubcomp); !ok || comp.PacketID != 7 || comp.ReasonCode != 0 {
			t.Fatalf("PUBCOMP: %+v", comp)
		}
		if m := sub.nextPublish(); string(m.Payload) != "three" {
			t.Fatalf("got %q", m.Payload)
		}
		sub.expectNone(500 * time.Millisecond)
	})
}

// TestSessionExpiry5: MQTT-3.1.2-23 — a session ends when its expiry
// interval passed after the connection closed: its inbox and routes go
// (nothing is queued for it) and the next CONNECT gets session present 0
// (MQTT-3.2.2-3); MQTT-3.1.2-4 — clean start 1 discards a session.
func TestSessionExpiry5(t *testing.T) {
	e := startEnv(t, 1, nil)
	addr := e.addr(0)
	pub := connectRaw(t, addr, packet.V5, "exp-pub")

	t.Run("Expires", func(t *testing.T) {
		sub := dialRaw(t, addr, packet.V5)
		sub.persistent("exp1", 1, nil)
		sub.subscribe(1, packet.Subscription{Filter: "exp1/#", QoS: 1})
		sub.disconnect()
		time.Sleep(2500 * time.Millisecond) // 1 s expiry, 100 ms scheduler ticks
		if code := pub.publish(&packet.Publish{Topic: "exp1/x", QoS: 1, PacketID: 1, Payload: []byte("late")}); code != packet.NoMatchingSubscribers {
			t.Fatalf("the expired session's route is still matched: PUBACK %s", code)
		}
		sub = dialRaw(t, addr, packet.V5)
		if sub.persistent("exp1", 1, nil) {
			t.Fatal("MQTT-3.2.2-3: session present after expiry")
		}
		sub.expectNone(500 * time.Millisecond)
	})

	t.Run("KeptWithinExpiry", func(t *testing.T) {
		sub := dialRaw(t, addr, packet.V5)
		sub.persistent("exp2", 5, nil)
		sub.subscribe(1, packet.Subscription{Filter: "exp2/#", QoS: 1})
		sub.disconnect()
		pub.publish(&packet.Publish{Topic: "exp2/x", QoS: 1, PacketID: 2, Payload: []byte("kept")})
		sub = dialRaw(t, addr, packet.V5)
		if !sub.persistent("exp2", 5, nil) {
			t.Fatal("session present 0 within the expiry")
		}
		if p := sub.nextPublish(); string(p.Payload) != "kept" {
			t.Fatalf("got %q", p.Payload)
		}
		// MQTT-3.14.2-2 allows lowering it on DISCONNECT: 0 ends the session now.
		d := &packet.Disconnect{}
		d.Properties.SessionExpiryInterval, d.Properties.HasSessionExpiryInterval = 0, true
		sub.send(d)
		sub.closed()
		sub = dialRaw(t, addr, packet.V5)
		if sub.persistent("exp2", 5, nil) {
			t.Fatal("session present after DISCONNECT set expiry 0")
		}
		sub.disconnect()
	})

	t.Run("CleanStartDiscards", func(t *testing.T) {
		sub := dialRaw(t, addr, packet.V5)
		sub.persistent("exp3", 300, nil)
		sub.subscribe(1, packet.Subscription{Filter: "exp3/#", QoS: 1})
		sub.disconnect()
		pub.publish(&packet.Publish{Topic: "exp3/x", QoS: 1, PacketID: 3, Payload: []byte("queued")})
		sub = dialRaw(t, addr, packet.V5)
		cp := &packet.Connect{ClientID: "exp3", CleanStart: true}
		cp.Properties.SessionExpiryInterval, cp.Properties.HasSessionExpiryInterval = 300, true
		if ack := sub.connect(cp); ack.ReasonCode != 0 || ack.SessionPresent {
			t.Fatalf("MQTT-3.2.2-2: clean start answered %+v", ack)
		}
		sub.expectNone(500 * time.Millisecond) // the queued message went with the session
		if code := pub.publish(&packet.Publish{Topic: "exp3/x", QoS: 1, PacketID: 4, Payload: []byte("after")}); code != packet.NoMatchingSubscribers {
			t.Fatalf("the discarded session's route still takes messages: %s", code)
		}
		sub.expectNone(300 * time.Millisecond)
	})
}

// TestSessionAcrossFrontends: a session left on frontend A is resumed on
// frontend B with its queued messages, and then gets live messages
// published on A; MQTT-3.1.4-3 — a connection with the same client ID on
// another frontend takes the session over: the old connection gets
// DISCONNECT 0x8E and is closed, nothing queued is lost.
func TestSessionAcrossFrontends(t *testing.T) {
	// No polling of inboxes: a live message must be notified.
	e := startEnv(t, 2, func(c *mqtt.Config) { c.InboxPollInterval = time.Hour })
	a, b := e.addr(0), e.addr(1)
	pub := connectRaw(t, a, packet.V5, "xfe-pub")

	t.Run("Reconnect", func(t *testing.T) {
		sub := dialRaw(t, a, packet.V311)
		sub.persistent("xfe1", 0, nil)
		sub.subscribe(1, packet.Subscription{Filter: "xfe1/#", QoS: 1})
		sub.disconnect()
		for i := 0; i < 5; i++ {
			pub.publish(&packet.Publish{Topic: "xfe1/t", QoS: 1, PacketID: uint16(i + 1), Payload: []byte{byte(i)}})
		}
		sub = dialRaw(t, b, packet.V311)
		if !sub.persistent("xfe1", 0, nil) {
			t.Fatal("session present 0 on the other frontend")
		}
		for i := 0; i < 5; i++ {
			if p := sub.nextPublish(); p.Payload[0] != byte(i) {
				t.Fatalf("message %d: %v", i, p.Payload)
			}
		}
		// Published on A, into the inbox, and B told to fetch (not polled).
		time.Sleep(300 * time.Millisecond)
		start := time.Now()
		pub.publish(&packet.Publish{Topic: "xfe1/t", QoS: 1, PacketID: 10, Payload: []byte("live")})
		if p := sub.nextPublish(); string(p.Payload) != "live" {
			t.Fatalf("live: %q", p.Payload)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("live delivery took %v: the owner was not notified", d)
		}
		sub.disconnect()
	})

	t.Run("Takeover", func(t *testing.T) {
		old := dialRaw(t, a, packet.V5)
		old.persistent("xfe2", 300, nil)
		old.subscribe(1, packet.Subscription{Filter: "xfe2/#", QoS: 1})
		pub.publish(&packet.Publish{Topic: "xfe2/t", QoS: 1, PacketID: 20, Payload: []byte("before")})
		if p, ok := old.nextPacket().(*packet.Publish); !ok || string(p.Payload) != "before" {
			t.Fatalf("before: %+v", p) // not acknowledged: the new connection gets it again
		}
		nu := dialRaw(t, b, packet.V5)
		if !nu.persistent("xfe2", 300, nil) {
			t.Fatal("session present 0 on takeover")
		}
		d := old.closed()
		if d == nil || d.ReasonCode != packet.SessionTakenOver {
			t.Fatalf("MQTT-3.1.4-3: old connection got %+v, want DISCONNECT 0x8E", d)
		}
		if p := nu.nextPublish(); string(p.Payload) != "before" || !p.Dup {
			t.Fatalf("the unacknowledged message: %+v", p)
		}
		for i := 0; i < 3; i++ {
			pub.publish(&packet.Publish{Topic: "xfe2/t", QoS: 1, PacketID: uint16(21 + i), Payload: []byte(fmt.Sprint(i))})
		}
		for i := 0; i < 3; i++ {
			if p := nu.nextPublish(); string(p.Payload) != fmt.Sprint(i) {
				t.Fatalf("after takeover %d: %q", i, p.Payload)
			}
		}
		nu.disconnect()
	})

	t.Run("TakeoverOfPeerThatFailed", func(t *testing.T) {
		// B failed to reach A a moment ago (a notification, while A was
		// restarting): the takeover's Kick must still be sent, not skipped
		// as a notification is. With no polling, nothing else closes the
		// old connection (jepsen, ci profile: 4.6 s with two live
		// connections of one client ID).
		old := dialRaw(t, a, packet.V5)
		old.persistent("xfe4", 300, nil)
		e.mu.Lock()
		mqtt.MarkPeerDown(e.fronts[1], e.fronts[0])
		e.mu.Unlock()
		nu := dialRaw(t, b, packet.V5)
		nu.persistent("xfe4", 300, nil)
		old.takenOverWithin(2 * time.Second)
		nu.disconnect()
	})

	t.Run("TakeoverAfterLostAttach", func(t *testing.T) {
		// A takes the session; an attach on B commits but its answer is
		// lost (B cut off from the stores: it never tells A to close);
		// then the client connects on B again. That attach displaces B's
		// lost owner, and must also close A's connection (jepsen, ci
		// profile: 2.5 s with two live connections of one client ID).
		old := dialRaw(t, a, packet.V5)
		old.persistent("xfe5", 300, nil)
		old.expectNone(500 * time.Millisecond) // its first fetch, which would see a new owner, is done
		e.mu.Lock()
		fb := e.fronts[1]
		e.mu.Unlock()
		ib := inbox.NewClient(e.cluster.Nodes[0].Router())
		o, err := ib.Mutate(context.Background(), &inboxpb.Input{Op: &inboxpb.Input_Attach{Attach: &inboxpb.AttachRequest{
			Tenant: auth.DefaultTenant, Inbox: "xfe5", Owner: mqtt.ReceiverIDOf(fb) + "|lost", ExpirySeconds: 300,
			NowUnixMs: time.Now().UnixMilli()}}})
		if err != nil || o.Result != inboxpb.Result_RESULT_OK {
			t.Fatalf("attach: %v %v", o, err)
		}
		nu := dialRaw(t, b, packet.V5)
		nu.persistent("xfe5", 300, nil)
		old.takenOverWithin(2 * time.Second)
		nu.disconnect()
	})

	t.Run("FrontendGoes", func(t *testing.T) {
		// The session's frontend shuts down under it; the client comes
		// back on the other and finds its session and what was queued.
		sub := dialRaw(t, b, packet.V311)
		sub.persistent("xfe3", 0, nil)
		sub.subscribe(1, packet.Subscription{Filter: "xfe3/#", QoS: 1})
		e.mu.Lock()
		front := e.fronts[1]
		e.mu.Unlock()
		front.Close()
		sub.closed()
		pub.publish(&packet.Publish{Topic: "xfe3/t", QoS: 1, PacketID: 30, Payload: []byte("queued")})
		sub = dialRaw(t, a, packet.V311)
		if !sub.persistent("xfe3", 0, nil) {
			t.Fatal("session lost with its frontend")
		}
		if p := sub.nextPublish(); string(p.Payload) != "queued" {
			t.Fatalf("got %q", p.Payload)
		}
	})
}

// TestWillDelay: MQTT-3.1.3-9 — a persistent session's will with a delay is
// published once the delay passed without the client coming back (by the
// inbox leader, not the frontend), exactly once; not at all if the client
// reconnects within the delay; and at the session's end if that comes
// first (MQTT-3.1.2-8).
func TestWillDelay(t *testing.T) {
	e := startEnv(t, 1, nil)
	addr := e.addr(0)
	watch := connectRaw(t, addr, packet.V5, "wd-watch")
	watch.subscribe(1, packet.Subscription{Filter: "wd/#", QoS: 1})
	will := func(topic string, delay uint32) *packet.Will {
		w := &packet.Will{Topic: topic, QoS: 1, Payload: []byte("gone")}
		w.Properties.WillDelayInterval, w.Properties.HasWillDelayInterval = delay, true
		return w
	}

	t.Run("FiredOnceAfterDelay", func(t *testing.T) {
		c := dialRaw(t, addr, packet.V5)
		c.persistent("wd-a", 60, will("wd/a", 1))
		c.nc.Close() // lost connection
		start := time.Now()
		p := watch.nextPublish()
		if p.Topic != "wd/a" || string(p.Payload) != "gone" {
			t.Fatalf("will: %+v", p)
		}
		if d := time.Since(start); d < 900*time.Millisecond {
			t.Fatalf("will published after %v, before its 1 s delay", d)
		}
		watch.expectNone(1500 * time.Millisecond)
	})

	t.Run("NotFiredOnReconnect", func(t *testing.T) {
		c := dialRaw(t, addr, packet.V5)
		c.persistent("wd-b", 60, will("wd/b", 2))
		c.nc.Close()
		c = dialRaw(t, addr, packet.V5)
		if !c.persistent("wd-b", 60, will("wd/b", 2)) {
			t.Fatal("session present 0")
		}
		watch.expectNone(3 * time.Second)
		c.disconnect() // normal: the will is discarded
		watch.expectNone(500 * time.Millisecond)
	})

	t.Run("FiredWhenCleanStartEndsSession", func(t *testing.T) {
		c := dialRaw(t, addr, packet.V5)
		c.persistent("wd-d", 60, will("wd/d", 30))
		c.nc.Close()
		time.Sleep(300 * time.Millisecond)
		c = dialRaw(t, addr, packet.V5)
		if ack := c.connect(&packet.Connect{ClientID: "wd-d", CleanStart: true}); ack.ReasonCode != 0 || ack.SessionPresent {
			t.Fatalf("clean start: %+v", ack)
		}
		if p := watch.nextPublish(); p.Topic != "wd/d" {
			t.Fatalf("will: %+v", p)
		}
		watch.expectNone(time.Second)
	})

	t.Run("FiredWhenCleanStartTakesOver", func(t *testing.T) {
		old := dialRaw(t, addr, packet.V5)
		old.persistent("wd-e", 60, will("wd/e", 30))
		c := dialRaw(t, addr, packet.V5)
		if ack := c.connect(&packet.Connect{ClientID: "wd-e", CleanStart: true}); ack.ReasonCode != 0 || ack.SessionPresent {
			t.Fatalf("clean start: %+v", ack)
		}
		if d := old.closed(); d == nil || d.ReasonCode != packet.SessionTakenOver {
			t.Fatalf("old connection: %+v", d)
		}
		if p := watch.nextPublish(); p.Topic != "wd/e" {
			t.Fatalf("will: %+v", p)
		}
		watch.expectNone(time.Second)
	})

	t.Run("FiredAtSessionEnd", func(t *testing.T) {
		c := dialRaw(t, addr, packet.V5)
		c.persistent("wd-c", 1, will("wd/c", 30))
		c.nc.Close()
		p := watch.nextPublish()
		if p.Topic != "wd/c" {
			t.Fatalf("will: %+v", p)
		}
		watch.expectNone(1500 * time.Millisecond)
	})
}

// TestOrphanedSessionDetached: a session whose owner's frontend is gone —
// a later process at the owner's address, or an address unreachable and
// absent from gossip — is detached by the inbox leader as if its
// connection had been lost: its will is sent (MQTT-3.1.2-8) and its expiry
// starts, and the client resumes it.
func TestOrphanedSessionDetached(t *testing.T) {
	e := startEnv(t, 1, func(c *mqtt.Config) { c.DeadFrontendAfter = 500 * time.Millisecond })
	watch := connectRaw(t, e.addr(0), packet.V5, "orph-watch")
	watch.subscribe(1, packet.Subscription{Filter: "orph/#", QoS: 1})
	ib := inbox.NewClient(e.cluster.Nodes[0].Router())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, owner := range []string{
		"fe:" + e.cluster.Nodes[0].GRPCAddr() + "#0123456789ab|restarted", // not this frontend's incarnation
		"fe:127.0.0.1:1#0123456789ab|unreachable",
	} {
		o, err := ib.Mutate(ctx, &inboxpb.Input{Op: &inboxpb.Input_Attach{Attach: &inboxpb.AttachRequest{
			Tenant: auth.DefaultTenant, Inbox: fmt.Sprintf("orph-%d", i), Owner: owner, ExpirySeconds: 60,
			Will: &inboxpb.Will{Topic: fmt.Sprintf("orph/%d", i), Payload: []byte("lost"), Qos: 1}, NowUnixMs: time.Now().UnixMilli()}}})
		if err != nil || o.Attach == nil {
			t.Fatalf("attach: %v %v", o, err)
		}
	}
	got := map[string]bool{}
	for len(got) < 2 {
		p := watch.nextPublish()
		if got[p.Topic] {
			t.Fatalf("will %s twice", p.Topic)
		}
		got[p.Topic] = true
	}
	watch.expectNone(time.Second)
	c := dialRaw(t, e.addr(0), packet.V5)
	if !c.persistent("orph-1", 60, nil) {
		t.Fatal("the detached session was not kept for its expiry")
	}
}

// TestPahoV311PersistentSession: Eclipse Paho's 3.1.1 client with clean
// session 0 (MQTT-3.1.2-4): its subscription and the QoS 1 messages
// published while it was away survive its disconnect; on reconnect the
// client is told session present (MQTT-3.2.2-2) and gets all of them in
// order (MQTT-4.6.0-5), without subscribing again.
func TestPahoV311PersistentSession(t *testing.T) {
	e := startEnv(t, 1, nil)
	u := "tcp://" + e.addr(0)
	recv := make(chan pahov3.Message, 100)
	connect := func() (pahov3.Client, bool) {
		o := pahov3.NewClientOptions().AddBroker(u).SetClientID("paho-persist").SetProtocolVersion(4).
			SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(true).
			SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { recv <- m })
		c := pahov3.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("connect: %v", tok.Error())
		}
		return c, tok.(*pahov3.ConnectToken).SessionPresent()
	}
	c, present := connect()
	if present {
		t.Fatal("a new session said present")
	}
	if tok := c.Subscribe("p3s/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	c.Disconnect(250)

	pub := connectRaw(t, e.addr(0), packet.V311, "paho-persist-pub")
	for i := 0; i < 10; i++ {
		pub.publish(&packet.Publish{Topic: "p3s/t", QoS: 1, PacketID: uint16(i + 1), Payload: []byte(fmt.Sprint(i))})
	}
	c, present = connect()
	defer c.Disconnect(250)
	if !present {
		t.Fatal("MQTT-3.2.2-2: session present 0")
	}
	for i := 0; i < 10; i++ {
		select {
		case m := <-recv:
			if string(m.Payload()) != fmt.Sprint(i) || m.Qos() != 1 {
				t.Fatalf("message %d: %q QoS %d", i, m.Payload(), m.Qos())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d did not come", i)
		}
	}
}

// TestPersistentSessionWindow: more messages than the client's receive
// maximum (MQTT-3.3.4-7: at most that many unacknowledged) flow through
// the inbox in order (MQTT-4.6.0-5), at QoS 1 and 2, half of them queued
// while the client is away; once all are acknowledged, a reconnect resends
// nothing.
func TestPersistentSessionWindow(t *testing.T) {
	e := startEnv(t, 1, nil)
	addr := e.addr(0)
	connect := func() *rawClient {
		c := dialRaw(t, addr, packet.V5)
		c.keepRel.Store(true)
		cp := &packet.Connect{ClientID: "win", KeepAlive: 60}
		cp.Properties.SessionExpiryInterval, cp.Properties.HasSessionExpiryInterval = 300, true
		cp.Properties.ReceiveMaximum, cp.Properties.HasReceiveMaximum = 5, true
		if ack := c.connect(cp); ack.ReasonCode != 0 {
			t.Fatalf("CONNACK %s", ack.ReasonCode)
		}
		return c
	}
	sub := connect()
	sub.subscribe(1, packet.Subscription{Filter: "win/#", QoS: 2})
	sub.disconnect()
	pub := connectRaw(t, addr, packet.V5, "win-pub")
	const n = 120
	send := func(from, to int) {
		for i := from; i < to; i++ {
			pub.publish(&packet.Publish{Topic: "win/t", QoS: byte(1 + i%2), PacketID: uint16(i + 1), Payload: []byte(fmt.Sprint(i))})
		}
	}
	send(0, n/2)
	sub = connect()
	go send(n/2, n)
	rels := 0
	for i := 0; i < n || rels < n/2; {
		switch p := sub.nextPacket().(type) {
		case *packet.Publish:
			if string(p.Payload) != fmt.Sprint(i) || p.QoS != byte(1+i%2) || p.Dup {
				t.Fatalf("message %d: %+v", i, p)
			}
			i++
			if p.QoS == 1 {
				sub.send(&packet.Puback{PacketID: p.PacketID})
			} else {
				sub.send(&packet.Pubrec{PacketID: p.PacketID})
			}
		case *packet.Pubrel:
			rels++
			sub.send(&packet.Pubcomp{PacketID: p.PacketID})
		default:
			t.Fatalf("unexpected %+v", p)
		}
	}
	sub.expectNone(300 * time.Millisecond)
	sub.disconnect()
	sub = connect()
	sub.expectNone(500 * time.Millisecond)
}

// TestPersistentSessionReceiveMaximum: MQTT-3.3.4-7 — from its inbox a
// client gets no more unacknowledged QoS 1/2 messages than its receive
// maximum; each acknowledgement lets the next one out.
func TestPersistentSessionReceiveMaximum(t *testing.T) {
	e := startEnv(t, 1, nil)
	addr := e.addr(0)
	connect := func() *rawClient {
		c := dialRaw(t, addr, packet.V5)
		cp := &packet.Connect{ClientID: "rmax-p", KeepAlive: 60}
		cp.Properties.SessionExpiryInterval, cp.Properties.HasSessionExpiryInterval = 300, true
		cp.Properties.ReceiveMaximum, cp.Properties.HasReceiveMaximum = 3, true
		if ack := c.connect(cp); ack.ReasonCode != 0 {
			t.Fatalf("CONNACK %s", ack.ReasonCode)
		}
		return c
	}
	sub := connect()
	sub.subscribe(1, packet.Subscription{Filter: "rmax-p", QoS: 1})
	sub.disconnect()
	pub := connectRaw(t, addr, packet.V5, "rmax-p-pub")
	for i := 0; i < 6; i++ {
		pub.publish(&packet.Publish{Topic: "rmax-p", QoS: 1, PacketID: uint16(i + 1), Payload: []byte{byte(i)}})
	}
	sub = connect()
	var ids []uint16
	for i := 0; i < 3; i++ {
		p, ok := sub.nextPacket().(*packet.Publish)
		if !ok || p.Payload[0] != byte(i) {
			t.Fatalf("message %d: %+v", i, p)
		}
		ids = append(ids, p.PacketID)
	}
	sub.expectNone(500 * time.Millisecond)
	sub.send(&packet.Puback{PacketID: ids[1]}) // out of order
	if p, ok := sub.nextPacket().(*packet.Publish); !ok || p.Payload[0] != 3 {
		t.Fatalf("after one PUBACK: %+v", p)
	}
	sub.expectNone(500 * time.Millisecond)
	// Reconnect: the unacknowledged ones come again (DUP), not the acknowledged.
	sub.nc.Close()
	sub = connect()
	for _, want := range []byte{0, 2, 3} {
		p, ok := sub.nextPacket().(*packet.Publish)
		if !ok || p.Payload[0] != want || !p.Dup {
			t.Fatalf("resent %d: %+v", want, p)
		}
		sub.send(&packet.Puback{PacketID: p.PacketID})
	}
	for _, want := range []byte{4, 5} {
		if p := sub.nextPublish(); p.Payload[0] != want || p.Dup {
			t.Fatalf("then %d: %+v", want, p)
		}
	}
}
