package mqtt_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/coprocessors/inbox"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// The durable path's promises (docs/mqtt-frontend.md, "Persistent sessions"):
// a publisher's acknowledgement means the message is in the inbox of every
// persistent subscriber it matched, committed on a quorum of the inbox
// range's replicas; a subscriber's acknowledgement, once committed, is never
// undone, and what it did not acknowledge comes again with DUP set.

// inboxRange is the ID of the range that holds a session's inbox.
func (e *env) inboxRange(clientID string) uint64 {
	e.t.Helper()
	for _, n := range e.cluster.Nodes {
		if n == nil {
			continue
		}
		if r := n.Router().Table().Lookup(kvpb.Keyspace_KEYSPACE_INBOX, inbox.Prefix(auth.DefaultTenant, clientID)); r != nil {
			return r.Desc.Id
		}
	}
	e.t.Fatalf("no inbox range for %q", clientID)
	return 0
}

// inboxMeta reads a session's inbox metadata linearizably through node i.
func (e *env) inboxMeta(i int, clientID string) *inboxpb.Meta {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := inbox.NewClient(e.cluster.Nodes[i].Router()).Query(ctx, &inboxpb.QueryRequest{Op: &inboxpb.QueryRequest_Get{
		Get: &inboxpb.GetRequest{Tenant: auth.DefaultTenant, Inbox: clientID}}})
	if err != nil {
		e.t.Fatalf("inbox of %q: %v", clientID, err)
	}
	return q.Meta
}

// TestPublishPipelineKeepsOrder: a publisher that sends many QoS 1 messages
// without waiting has them inserted into the persistent subscriber's inbox
// in batches (not one Raft round each), gets its PUBACKs in the order of
// its PUBLISHes (MQTT-4.6.0-2), and the subscriber receives them in that
// order (MQTT-4.6.0-5). Before the publish pipeline, every message was one
// insert: the batch count equalled the message count.
func TestPublishPipelineKeepsOrder(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := startEnv(t, 1, func(c *mqtt.Config) { c.Registerer = reg })
	addr := e.addr(0)
	sub := dialRaw(t, addr, packet.V311)
	sub.persistent("pipe-sub", 0, nil)
	if sa := sub.subscribe(1, packet.Subscription{Filter: "pipe/t", QoS: 1}); sa.ReasonCodes[0] != 1 {
		t.Fatalf("SUBACK %v", sa.ReasonCodes)
	}
	pub := connectRaw(t, addr, packet.V311, "pipe-pub")
	const n = 300
	var burst []byte
	for i := range n {
		b, err := packet.Append(burst, &packet.Publish{Topic: "pipe/t", QoS: 1, PacketID: uint16(i + 1), Payload: fmt.Appendf(nil, "m%d", i)}, packet.V311)
		if err != nil {
			t.Fatal(err)
		}
		burst = b
	}
	pub.sendBytes(burst) // all at once: the broker has them all to read
	for i := range n {
		a, ok := pub.nextPacket().(*packet.Puback)
		if !ok || a.PacketID != uint16(i+1) {
			t.Fatalf("acknowledgement %d: got %+v, want PUBACK %d", i, a, i+1)
		}
	}
	for i := range n {
		p := sub.nextPublish()
		if want := fmt.Sprintf("m%d", i); string(p.Payload) != want {
			t.Fatalf("message %d: got %q, want %q", i, p.Payload, want)
		}
	}
	batches := histogramCount(t, reg, "bifrost_mqtt_inbox_insert_batch_items")
	if batches == 0 || batches >= n {
		t.Fatalf("%d messages took %d inserts: want them batched", n, batches)
	}
	t.Logf("%d messages in %d inserts", n, batches)
}

// TestPubackMeansQuorum: once a publisher has its PUBACK, stopping the
// store that led the subscriber's inbox range loses nothing: the other
// replicas have the message, and the subscriber gets every one of them.
func TestPubackMeansQuorum(t *testing.T) {
	e := startEnv(t, 3, nil)
	const id = "quorum-sub"
	leader := e.cluster.WaitLeader(e.inboxRange(id))
	other := (leader + 1) % 3
	sub := dialRaw(t, e.addr(other), packet.V311)
	sub.persistent(id, 0, nil)
	if sa := sub.subscribe(1, packet.Subscription{Filter: "quorum/t", QoS: 1}); sa.ReasonCodes[0] != 1 {
		t.Fatalf("SUBACK %v", sa.ReasonCodes)
	}
	sub.disconnect() // the messages wait in the inbox
	// The range's leader may have moved since: stop the one that leads it
	// when the acknowledgements come.
	pub := connectRaw(t, e.addr(other), packet.V311, "quorum-pub")
	const n = 50
	for i := range n {
		pub.send(&packet.Publish{Topic: "quorum/t", QoS: 1, PacketID: uint16(i + 1), Payload: fmt.Appendf(nil, "q%d", i)})
	}
	for i := range n {
		if a, ok := pub.nextPacket().(*packet.Puback); !ok || a.PacketID != uint16(i+1) {
			t.Fatalf("acknowledgement %d: %+v", i, a)
		}
	}
	leader = e.cluster.LeaderNode(e.inboxRange(id))
	if leader < 0 {
		t.Fatal("the inbox range has no leader")
	}
	e.cluster.StopNode(leader)
	alive := (leader + 1) % 3
	sub = dialRaw(t, e.addr(alive), packet.V311)
	if !sub.persistent(id, 0, nil) {
		t.Fatal("the session is gone after its inbox leader stopped")
	}
	for i := range n {
		p := sub.nextPublish()
		if want := fmt.Sprintf("q%d", i); string(p.Payload) != want {
			t.Fatalf("message %d after the leader stopped: got %q, want %q", i, p.Payload, want)
		}
	}
	sub.expectNone(300 * time.Millisecond)
}

// TestSubscriberAcksSurviveReconnect: a persistent subscriber acknowledges
// the first half of its messages and its connection drops at once (no
// DISCONNECT). Its acknowledgements are committed (the frontend commits
// what it has before it lets the session go), so on its next connection,
// on another frontend, only the second half comes again, each with DUP set
// (MQTT-3.3.1-1) and the packet ID it had (MQTT-4.3.3: the client's state
// is keyed by it).
func TestSubscriberAcksSurviveReconnect(t *testing.T) {
	e := startEnv(t, 2, nil)
	const id = "acks-sub"
	sub := dialRaw(t, e.addr(0), packet.V311)
	sub.persistent(id, 0, nil)
	if sa := sub.subscribe(1, packet.Subscription{Filter: "acks/t", QoS: 1}); sa.ReasonCodes[0] != 1 {
		t.Fatalf("SUBACK %v", sa.ReasonCodes)
	}
	pub := connectRaw(t, e.addr(1), packet.V311, "acks-pub")
	const n = 20
	for i := range n {
		if code := pub.publish(&packet.Publish{Topic: "acks/t", QoS: 1, PacketID: uint16(i + 1), Payload: fmt.Appendf(nil, "a%d", i)}); code != 0 {
			t.Fatalf("publish %d: %s", i, code)
		}
	}
	ids := map[string]uint16{}
	for i := range n {
		p, ok := sub.nextPacket().(*packet.Publish)
		if !ok || string(p.Payload) != fmt.Sprintf("a%d", i) || p.Dup {
			t.Fatalf("message %d: %+v", i, p)
		}
		ids[string(p.Payload)] = p.PacketID
		if i < n/2 {
			sub.send(&packet.Puback{PacketID: p.PacketID})
		}
	}
	sub.nc.Close()
	// Wait for the frontend to let the session go (it commits first).
	deadline := time.Now().Add(10 * time.Second)
	for e.inboxMeta(1, id).GetDetachedUnixMs() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the session was not detached 10s after its connection dropped")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if h := e.inboxMeta(1, id).GetQos12().GetHead(); h != n/2 {
		t.Fatalf("inbox head %d after the first %d were acknowledged", h, n/2)
	}

	again := dialRaw(t, e.addr(1), packet.V311)
	if !again.persistent(id, 0, nil) {
		t.Fatal("session not present")
	}
	for i := n / 2; i < n; i++ {
		p := again.nextPublish()
		want := fmt.Sprintf("a%d", i)
		if string(p.Payload) != want || !p.Dup || p.PacketID != ids[want] {
			t.Fatalf("resent message: got %q dup %v id %d, want %q dup true id %d", p.Payload, p.Dup, p.PacketID, want, ids[want])
		}
	}
	again.expectNone(300 * time.Millisecond)
	m := e.inboxMeta(1, id)
	if m.GetQos12().GetHead() != n {
		t.Fatalf("inbox head %d after every message was acknowledged, want %d", m.GetQos12().GetHead(), n)
	}
}

// TestDeliveryAfterLeaderMove: fetches read the inbox leader's state
// without a ReadIndex round; after the inbox range's leadership moves, a
// connected persistent subscriber still gets new messages when told of
// them, not when it next polls (an hour here).
func TestDeliveryAfterLeaderMove(t *testing.T) {
	e := startEnv(t, 3, func(c *mqtt.Config) { c.InboxPollInterval = time.Hour })
	const id = "move-sub"
	rangeID := e.inboxRange(id)
	sub := dialRaw(t, e.addr(0), packet.V311)
	sub.persistent(id, 0, nil)
	if sa := sub.subscribe(1, packet.Subscription{Filter: "move/t", QoS: 1}); sa.ReasonCodes[0] != 1 {
		t.Fatalf("SUBACK %v", sa.ReasonCodes)
	}
	pub := connectRaw(t, e.addr(1), packet.V311, "move-pub")
	for round := range 3 {
		leader := e.cluster.WaitLeader(rangeID)
		target := (leader + 1) % 3
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := e.cluster.Nodes[leader].TransferLeader(ctx, rangeID, e.cluster.Nodes[target].Store().ID())
		cancel()
		if err != nil {
			t.Fatalf("round %d: transfer: %v", round, err)
		}
		payload := fmt.Sprintf("r%d", round)
		if code := pub.publish(&packet.Publish{Topic: "move/t", QoS: 1, PacketID: uint16(round + 1), Payload: []byte(payload)}); code != 0 {
			t.Fatalf("round %d: publish: %s", round, code)
		}
		p := sub.nextPublish()
		if string(p.Payload) != payload {
			t.Fatalf("round %d: got %q", round, p.Payload)
		}
	}
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var n uint64
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
			return n
		}
	}
	return 0
}

// TestPubrelAfterReleaseCommitted: a persistent subscriber's PUBREC is
// answered with PUBREL only once the inbox has committed the release. A
// client forgets a QoS 2 packet ID at PUBREL (MQTT-4.3.3, method B), so a
// PUBREL sent before the commit, followed by a frontend crash, had the
// PUBLISH resent to a client that took it for a new message: delivered
// twice (found by the jepsen mqtt-queue workload under kill-frontend).
// Here the inbox range loses its quorum between the PUBLISH and the
// PUBREC: no PUBREL may come until it has it back.
func TestPubrelAfterReleaseCommitted(t *testing.T) {
	e := startEnv(t, 3, nil)
	const id = "rel-sub"
	sub := dialRaw(t, e.addr(0), packet.V5)
	sub.persistent(id, 600, nil)
	if sa := sub.subscribe(1, packet.Subscription{Filter: "rel/t", QoS: 2}); sa.ReasonCodes[0] != 2 {
		t.Fatalf("SUBACK %v", sa.ReasonCodes)
	}
	sub.keepRel.Store(true)
	pub := connectRaw(t, e.addr(0), packet.V5, "rel-pub")
	if code := pub.publish(&packet.Publish{Topic: "rel/t", QoS: 2, PacketID: 1, Payload: []byte("once")}); code != 0 {
		t.Fatalf("publish: %s", code)
	}
	p, ok := sub.nextPacket().(*packet.Publish)
	if !ok || p.QoS != 2 {
		t.Fatalf("want the QoS 2 PUBLISH, got %+v", p)
	}
	e.cluster.StopNode(1)
	e.cluster.StopNode(2)
	sub.send(&packet.Pubrec{PacketID: p.PacketID})
	sub.expectNone(1500 * time.Millisecond) // the release cannot commit
	e.cluster.StartNode(1)
	e.cluster.StartNode(2)
	rel, ok := sub.nextPacket().(*packet.Pubrel)
	if !ok || rel.PacketID != p.PacketID {
		t.Fatalf("want PUBREL %d once the inbox has its quorum back, got %+v", p.PacketID, rel)
	}
	if !slices.Contains(e.inboxMeta(0, id).GetReleased(), uint64(p.PacketID-1)) { // seqPacketID: seq mod 32768 + 1
		t.Fatalf("PUBREL sent but the inbox has not the release")
	}
	sub.send(&packet.Pubcomp{PacketID: rel.PacketID})
}
