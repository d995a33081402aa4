package mqtt_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// closedWithoutPacket checks that the server closes the connection without
// sending anything.
func (c *rawClient) closedWithoutPacket() {
	c.t.Helper()
	select {
	case p, ok := <-c.recv:
		if ok {
			c.t.Fatalf("got %s (%+v), want the connection closed without a packet", p.Type(), p)
		}
	case <-time.After(10 * time.Second):
		c.t.Fatal("the server did not close the connection in 10s")
	}
}

// TestInvalidWillTopic: a will topic with a wildcard is refused with
// CONNACK 0x90 in 5.0; 3.x has no CONNACK code for it, and the connection
// is closed (MQTT-4.8.0-1), not answered "server unavailable" (3), which
// tells a client to retry.
func TestInvalidWillTopic(t *testing.T) {
	e := startEnv(t, 1, nil)
	addr := e.addr(0)
	will := &packet.Will{Topic: "w/+/x", Payload: []byte("x")}

	c := dialRaw(t, addr, packet.V5)
	if ack := c.connect(&packet.Connect{ClientID: "badwill5", CleanStart: true, Will: will}); ack.ReasonCode != packet.TopicNameInvalid {
		t.Fatalf("5.0: CONNACK %s, want topic name invalid", ack.ReasonCode)
	}
	for _, v := range []packet.Version{packet.V311, packet.V31} {
		c := dialRaw(t, addr, v)
		c.send(&packet.Connect{Version: v, ProtocolName: v.ProtocolName(), ClientID: "badwill3", CleanStart: true, Will: will})
		c.closedWithoutPacket()
	}
}

// TestUnreleasedQoS2Of3x: Receive Maximum is an MQTT 5 limit; a 3.1.1
// client may leave more QoS 2 messages unreleased than the server's
// Receive Maximum (here 300 against 128) and stays connected; before, it
// was disconnected at the 129th.
func TestUnreleasedQoS2Of3x(t *testing.T) {
	e := startEnv(t, 1, nil)
	c := connectRaw(t, e.addr(0), packet.V311, "unrel3")
	const n = 300
	for i := 1; i <= n; i++ {
		c.send(&packet.Publish{Topic: "unrel/t", QoS: 2, PacketID: uint16(i), Payload: []byte("x")})
	}
	for i := 1; i <= n; i++ {
		rec, ok := c.next().(*packet.Pubrec)
		if !ok || rec.PacketID != uint16(i) {
			t.Fatalf("publish %d: got %+v, want its PUBREC", i, rec)
		}
	}
	for i := 1; i <= n; i++ {
		c.send(&packet.Pubrel{PacketID: uint16(i)})
		if comp, ok := c.next().(*packet.Pubcomp); !ok || comp.PacketID != uint16(i) {
			t.Fatalf("pubrel %d: got %+v", i, comp)
		}
	}
}

// TestRequestProblemInformation: MQTT-3.1.2-29 — a 5.0 client that sets
// Request Problem Information to 0 gets no reason string on a PUBACK; one
// that does not set it gets one.
func TestRequestProblemInformation(t *testing.T) {
	e := startEnv(t, 1, nil)
	bad := &packet.Publish{Topic: "rpi/t", QoS: 1, PacketID: 1, Payload: []byte{0xff, 0xfe}}
	bad.Properties.PayloadFormatIndicator, bad.Properties.HasPayloadFormatIndicator = 1, true
	for _, rpi := range []bool{false, true} {
		c := dialRaw(t, e.addr(0), packet.V5)
		cp := &packet.Connect{ClientID: "rpi", CleanStart: true}
		if rpi {
			cp.Properties.RequestProblemInformation, cp.Properties.HasRequestProblemInformation = 0, true
		}
		if ack := c.connect(cp); ack.ReasonCode != 0 {
			t.Fatalf("CONNACK %s", ack.ReasonCode)
		}
		c.send(bad)
		a, ok := c.next().(*packet.Puback)
		if !ok || a.ReasonCode != packet.PayloadFormatInvalid {
			t.Fatalf("got %+v, want PUBACK payload format invalid", a)
		}
		if got := a.Properties.ReasonString != ""; got == rpi {
			t.Fatalf("request problem information 0: %v; reason string %q", rpi, a.Properties.ReasonString)
		}
		c.disconnect()
	}
}

// TestResponseTopicWithWildcard: MQTT-3.3.2-14 — a response topic is a
// topic name; a PUBLISH whose response topic has a wildcard is a protocol
// error (DISCONNECT 0x82) and is not forwarded; a will's is refused at
// CONNECT (0x90).
func TestResponseTopicWithWildcard(t *testing.T) {
	e := startEnv(t, 1, nil)
	sub := connectRaw(t, e.addr(0), packet.V5, "rt-sub")
	sub.subscribe(1, packet.Subscription{Filter: "rt/#", QoS: 1})
	c := connectRaw(t, e.addr(0), packet.V5, "rt-pub")
	p := &packet.Publish{Topic: "rt/t", QoS: 1, PacketID: 1, Payload: []byte("x")}
	p.Properties.ResponseTopic = "reply/+"
	c.send(p)
	if d := c.closed(); d == nil || d.ReasonCode != packet.ProtocolError {
		t.Fatalf("got %+v, want DISCONNECT protocol error", d)
	}
	sub.expectNone(300 * time.Millisecond)

	w := dialRaw(t, e.addr(0), packet.V5)
	will := &packet.Will{Topic: "rt/will", Payload: []byte("x")}
	will.Properties.ResponseTopic = "reply/#"
	if ack := w.connect(&packet.Connect{ClientID: "rt-will", CleanStart: true, Will: will}); ack.ReasonCode != packet.TopicNameInvalid {
		t.Fatalf("CONNACK %s, want topic name invalid", ack.ReasonCode)
	}
}

// TestRequestResponseInformation: a 5.0 client that asks for response
// information (1) gets a response topic base in CONNACK, and one that does
// not ask gets none (MQTT-3.1.2-28).
func TestRequestResponseInformation(t *testing.T) {
	e := startEnv(t, 1, nil)
	for _, ask := range []bool{false, true} {
		c := dialRaw(t, e.addr(0), packet.V5)
		cp := &packet.Connect{ClientID: "rri", CleanStart: true}
		if ask {
			cp.Properties.RequestResponseInformation, cp.Properties.HasRequestResponseInformation = 1, true
		}
		ack := c.connect(cp)
		if ack.ReasonCode != 0 {
			t.Fatalf("CONNACK %s", ack.ReasonCode)
		}
		if got := ack.Properties.ResponseInformation; (got != "") != ask || (ask && got != "response/rri/") {
			t.Fatalf("asked %v: response information %q", ask, got)
		}
		c.disconnect()
	}
}

// TestOversizeConnect: a 5.0 CONNECT over the server's maximum packet size
// is answered CONNACK 0x95 before the connection closes; before, it was
// closed without one.
func TestOversizeConnect(t *testing.T) {
	e := startEnv(t, 1, func(c *mqtt.Config) { c.MaxPacketSize = 1024 })
	c := dialRaw(t, e.addr(0), packet.V5)
	will := &packet.Will{Topic: "big/will", Payload: make([]byte, 2000)}
	ack := c.connect(&packet.Connect{ClientID: "big", CleanStart: true, Will: will})
	if ack.ReasonCode != packet.PacketTooLarge {
		t.Fatalf("CONNACK %s, want packet too large", ack.ReasonCode)
	}
	c.closed()
}

// TestReceiveMaximumExceededIsRead: a 5.0 client that sends one QoS 2
// PUBLISH more than Receive Maximum allows, all in one write, and reads
// only later, still reads every PUBREC and then the DISCONNECT 0x93: the
// server shuts its write side and reads what the client still sends before
// closing, rather than resetting the connection under the client's
// writes (a client library then gives up before it reads the reason).
func TestReceiveMaximumExceededIsRead(t *testing.T) {
	e := startEnv(t, 1, func(c *mqtt.Config) { c.ReceiveMaximum = 16 })
	nc, err := net.Dial("tcp", e.addr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	wire, _ := packet.Append(nil, &packet.Connect{Version: packet.V5, ProtocolName: "MQTT", ClientID: "rmx", CleanStart: true}, packet.V5)
	for i := 1; i <= 17; i++ {
		wire, err = packet.Append(wire, &packet.Publish{Topic: "rmx/t", QoS: 2, PacketID: uint16(i), Payload: make([]byte, 512)}, packet.V5)
		if err != nil {
			t.Fatal(err)
		}
	}
	// And more after it, which the server does not read as packets.
	wire = append(wire, make([]byte, 512<<10)...)
	wrote := make(chan error, 1)
	go func() { _, err := nc.Write(wire); wrote <- err }()
	// The client reads late: everything the server sent is waiting in its
	// socket when the server closes.
	time.Sleep(500 * time.Millisecond)
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := packet.NewReader(nc, 0)
	if p, err := r.ReadPacket(packet.V5); err != nil || p.Type() != packet.CONNACK {
		t.Fatalf("got %v %v, want CONNACK", p, err)
	}
	for i := 1; i <= 16; i++ {
		p, err := r.ReadPacket(packet.V5)
		if rec, ok := p.(*packet.Pubrec); !ok || rec.PacketID != uint16(i) {
			t.Fatalf("publish %d: got %+v (%v), want its PUBREC", i, p, err)
		}
	}
	p, err := r.ReadPacket(packet.V5)
	if d, ok := p.(*packet.Disconnect); !ok || d.ReasonCode != packet.ReceiveMaximumExceeded {
		t.Fatalf("got %+v (%v), want DISCONNECT receive maximum exceeded", p, err)
	}
	// What the client sent after it was read and discarded, not answered
	// by a reset.
	if err := <-wrote; err != nil {
		t.Fatalf("the client's write failed: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := nc.Write([]byte{0xc0, 0}); err != nil {
		t.Fatalf("the client's write after the DISCONNECT failed: %v (the server reset the connection)", err)
	}
}

// TestTopicAliasOfDroppedPublish: a message too large for the client's
// maximum packet size is dropped, and the topic alias it would have set up
// is not recorded: the next message on that topic carries the topic name
// (before, it carried only an alias the client never saw).
func TestTopicAliasOfDroppedPublish(t *testing.T) {
	e := startEnv(t, 1, nil)
	c := dialRaw(t, e.addr(0), packet.V5)
	cp := &packet.Connect{ClientID: "alias-sub", CleanStart: true}
	cp.Properties.TopicAliasMaximum, cp.Properties.HasTopicAliasMaximum = 10, true
	cp.Properties.MaximumPacketSize, cp.Properties.HasMaximumPacketSize = 200, true
	if ack := c.connect(cp); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %s", ack.ReasonCode)
	}
	c.subscribe(1, packet.Subscription{Filter: "al/#"})
	pub := connectRaw(t, e.addr(0), packet.V5, "alias-pub")
	pub.publish(&packet.Publish{Topic: "al/long/topic", QoS: 1, PacketID: 1, Payload: make([]byte, 300)})
	pub.publish(&packet.Publish{Topic: "al/long/topic", QoS: 1, PacketID: 2, Payload: []byte("small")})
	p := c.nextPublish()
	if p.Topic != "al/long/topic" || string(p.Payload) != "small" {
		t.Fatalf("got topic %q alias %d payload %q: the alias of the dropped message was used", p.Topic, p.Properties.TopicAlias, p.Payload)
	}
}

// TestAckWithinClientMaximum: an acknowledgement whose reason string would
// make it larger than the client's maximum packet size is sent without the
// reason string (MQTT-3.1.2-25, MQTT-3.4.2-2).
func TestAckWithinClientMaximum(t *testing.T) {
	e := startEnv(t, 1, nil)
	c := dialRaw(t, e.addr(0), packet.V5)
	cp := &packet.Connect{ClientID: "small-max", CleanStart: true}
	cp.Properties.MaximumPacketSize, cp.Properties.HasMaximumPacketSize = 16, true
	if ack := c.connect(cp); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %s", ack.ReasonCode)
	}
	bad := &packet.Publish{Topic: "am/t", QoS: 1, PacketID: 1, Payload: []byte{0xff}}
	bad.Properties.PayloadFormatIndicator, bad.Properties.HasPayloadFormatIndicator = 1, true
	c.send(bad)
	a, ok := c.next().(*packet.Puback)
	if !ok || a.ReasonCode != packet.PayloadFormatInvalid {
		t.Fatalf("got %+v, want PUBACK payload format invalid", a)
	}
	if size := packet.Size(a, packet.V5); size > 16 || a.Properties.ReasonString != "" {
		t.Fatalf("PUBACK of %d bytes with reason %q over the client's maximum of 16", size, a.Properties.ReasonString)
	}
}

// failingRetain refuses to store retained messages.
type failingRetain struct{ mqtt.Retain }

func (failingRetain) Set(context.Context, *retainpb.SetRequest) (*retainpb.SetResponse, error) {
	return nil, errors.New("retain unavailable (test)")
}

// TestRetainedQoS0NotStored: a QoS 0 retained message that cannot be
// stored ends a 5.0 connection with a DISCONNECT that says so (0x80),
// not a bare close; a QoS 1 one gets a failed PUBACK and the connection
// stays.
func TestRetainedQoS0NotStored(t *testing.T) {
	e := startEnv(t, 1, func(c *mqtt.Config) { c.Retain = failingRetain{c.Retain} })
	c := connectRaw(t, e.addr(0), packet.V5, "ret0")
	if code := c.publish(&packet.Publish{Topic: "r/t", QoS: 1, PacketID: 1, Retain: true, Payload: []byte("x")}); code != packet.UnspecifiedError {
		t.Fatalf("QoS 1: PUBACK %s, want unspecified error", code)
	}
	c.send(&packet.Publish{Topic: "r/t", Retain: true, Payload: []byte("x")})
	if d := c.closed(); d == nil || d.ReasonCode != packet.UnspecifiedError {
		t.Fatalf("QoS 0: got %+v, want DISCONNECT 0x80", d)
	}
}

// TestPubackWhenSubscriberDropped: a QoS 1 publish whose only subscriber
// matched but had to drop it (its queue full) is acknowledged success, not
// 0x10 "no matching subscribers", which would tell the publisher that
// nobody subscribes.
func TestPubackWhenSubscriberDropped(t *testing.T) {
	e := startEnv(t, 1, func(c *mqtt.Config) { c.MaxQueued = 1 })
	sub := dialRaw(t, e.addr(0), packet.V5)
	cp := &packet.Connect{ClientID: "slow-sub", CleanStart: true}
	cp.Properties.ReceiveMaximum, cp.Properties.HasReceiveMaximum = 1, true
	if ack := sub.connect(cp); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %s", ack.ReasonCode)
	}
	sub.subscribe(1, packet.Subscription{Filter: "slow/#", QoS: 1})
	pub := connectRaw(t, e.addr(0), packet.V5, "slow-pub")
	// One in flight (never acknowledged), one queued, the rest dropped.
	for i := 1; i <= 4; i++ {
		if code := pub.publish(&packet.Publish{Topic: "slow/t", QoS: 1, PacketID: uint16(i), Payload: []byte{byte(i)}}); code != packet.Success {
			t.Fatalf("publish %d: PUBACK %s, want success", i, code)
		}
	}
	if code := pub.publish(&packet.Publish{Topic: "nobody/t", QoS: 1, PacketID: 9}); code != packet.NoMatchingSubscribers {
		t.Fatalf("no subscriber: PUBACK %s, want no matching subscribers", code)
	}
}

// fetchHook runs a func once, when the next inbox fetch has returned and
// before the session delivers what it fetched.
type fetchHook struct {
	mqtt.Inbox
	hook atomic.Pointer[func()]
}

func (f *fetchHook) Fetch(ctx context.Context, req *inboxpb.FetchRequest, linearizable bool) (*inboxpb.FetchResponse, error) {
	resp, err := f.Inbox.Fetch(ctx, req, linearizable)
	if h := f.hook.Swap(nil); h != nil {
		(*h)()
	}
	return resp, err
}

// TestPersistentSessionKeepsReceiveMaximum: a persistent session's
// deliveries respect the client's Receive Maximum counting everything in
// flight, including what was put in flight while the session's fetch was
// on its way (retained messages sent at SUBSCRIBE, say; MQTT-3.3.4-9).
// Before, a fetch delivered as many messages as the window had free when it
// started.
func TestPersistentSessionKeepsReceiveMaximum(t *testing.T) {
	hook := &fetchHook{}
	e := startEnv(t, 1, func(c *mqtt.Config) {
		hook.Inbox = c.Inbox
		c.Inbox = hook
		c.InboxPollInterval = time.Hour
	})
	e.mu.Lock()
	front := e.fronts[0]
	e.mu.Unlock()
	connect := func() *rawClient {
		sub := dialRaw(t, e.addr(0), packet.V5)
		cp := &packet.Connect{ClientID: "rm-pers", KeepAlive: 60}
		cp.Properties.SessionExpiryInterval, cp.Properties.HasSessionExpiryInterval = 60, true
		cp.Properties.ReceiveMaximum, cp.Properties.HasReceiveMaximum = 2, true
		if ack := sub.connect(cp); ack.ReasonCode != 0 {
			t.Fatalf("CONNACK %s", ack.ReasonCode)
		}
		return sub
	}
	sub := connect()
	sub.subscribe(1, packet.Subscription{Filter: "rmp/#", QoS: 1})
	sub.disconnect()
	pub := connectRaw(t, e.addr(0), packet.V5, "rm-pub")
	for i := 1; i <= 3; i++ {
		pub.publish(&packet.Publish{Topic: "rmp/t", QoS: 1, PacketID: uint16(i), Payload: []byte{byte(i)}})
	}
	// The reconnected session's first fetch finds the window full when
	// it returns.
	rel := make(chan func(), 1)
	fill := func() { rel <- mqtt.HoldWindow(front, auth.DefaultTenant, "rm-pers", 2) }
	hook.hook.Store(&fill)
	sub = connect()
	sub.expectNone(500 * time.Millisecond) // the window is full
	(<-rel)()
	var got []*packet.Publish
	for len(got) < 2 {
		if p, ok := sub.nextPacket().(*packet.Publish); ok { // not acknowledged
			got = append(got, p)
		}
	}
	sub.expectNone(300 * time.Millisecond) // two in flight: no third
	for _, p := range got {
		sub.send(&packet.Puback{PacketID: p.PacketID})
	}
	if p := sub.nextPublish(); p.Payload[0] != 3 {
		t.Fatalf("third: %v", p.Payload)
	}
}
