package mqtt_test

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// TestStalledSubscriberHoldsItsBudget (issue 14): a clean-session
// subscriber that never reads, sent 100 QoS 1 messages of 1 MiB, makes its
// frontend hold no more than its byte budget plus one message; the rest
// are dropped and counted. Before the budget, the in-flight window (64)
// and the queue (1000) bounded messages, whatever their size: a subscriber
// like this one pinned 1.4 GB of the broker in 5 s.
func TestStalledSubscriberHoldsItsBudget(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := startEnv(t, 1, func(c *mqtt.Config) { c.Registerer = reg })
	const budget = 8 << 20 // the default
	dialNoReader(t, e.addr(0), "stalled", true, "budget/t")
	pub := connectRaw(t, e.addr(0), packet.V311, "publisher")
	payload := make([]byte, 1<<20-64) // within the 1 MiB packet limit
	s := e.fronts[0]
	const n = 100
	most := 0
	for i := range n {
		// The PUBACK comes once the message was handed to the subscriber's
		// connection (or dropped): what it holds is at its peak then.
		if code := pub.publish(&packet.Publish{Topic: "budget/t", QoS: 1, PacketID: uint16(i + 1), Payload: payload}); code != 0 {
			t.Fatalf("publish %d: %s", i, code)
		}
		most = max(most, mqtt.HeldOf(s, auth.DefaultTenant, "stalled"))
	}
	if limit := budget + 1<<20; most > limit || most <= 0 {
		t.Fatalf("the frontend held up to %d bytes for a subscriber that does not read (budget %d, limit %d)", most, budget, limit)
	}
	// What the budget and the sockets' buffers did not take was dropped.
	if d := counterValue(t, reg, "bifrost_mqtt_messages_dropped_total", "queue_bytes"); d < n/2 {
		t.Fatalf("%v messages dropped past the budget, want at least %d of %d", d, n/2, n)
	}
}

// TestStalledPersistentSessionFetchesWithinBudget (issue 14): a persistent
// subscriber that does not read has no more fetched from its inbox than
// its byte budget has room for (its window would take 64 messages), and
// loses nothing: when it reads, every message comes, once.
func TestStalledPersistentSessionFetchesWithinBudget(t *testing.T) {
	reg := prometheus.NewRegistry()
	const budget = 1 << 20
	e := startEnv(t, 1, func(c *mqtt.Config) { c.Registerer = reg; c.MaxQueuedBytes = budget })
	nc := dialNoReader(t, e.addr(0), "stalled-p", false, "budget/p")
	s := e.fronts[0]
	var most atomic.Int64
	stop := make(chan struct{})
	var sampled sync.WaitGroup
	sampled.Add(1)
	go func() {
		defer sampled.Done()
		for {
			if h := int64(mqtt.HeldOf(s, auth.DefaultTenant, "stalled-p")); h > most.Load() {
				most.Store(h)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	// 64 messages of 256 KiB: the window would take them all, the socket
	// buffers about 4 MiB of them.
	const n, size = 64, 256 << 10
	pub := connectRaw(t, e.addr(0), packet.V311, "publisher-p")
	for i := range n {
		payload := make([]byte, size)
		binary.BigEndian.PutUint32(payload, uint32(i))
		if code := pub.publish(&packet.Publish{Topic: "budget/p", QoS: 1, PacketID: uint16(i + 1), Payload: payload}); code != 0 {
			t.Fatalf("publish %d: %s", i, code)
		}
	}
	// The session stops at the budget (and waits for room) rather than
	// fetch what the window would take.
	for deadline := time.Now().Add(10 * time.Second); counterValue(t, reg, "bifrost_mqtt_budget_waits_total", "") == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the session never waited for its budget; it sent up to %d of %d messages", mqtt.SentUpto(s, auth.DefaultTenant, "stalled-p"), n)
		}
	}
	time.Sleep(300 * time.Millisecond) // what the sockets still take
	close(stop)
	sampled.Wait()
	if sent := mqtt.SentUpto(s, auth.DefaultTenant, "stalled-p"); sent >= n {
		t.Fatalf("a subscriber that does not read had all %d messages fetched from its inbox", n)
	}
	if limit := int64(budget + size + 1<<10); most.Load() > limit {
		t.Fatalf("the frontend held up to %d bytes for a persistent subscriber that does not read (budget %d, limit %d)", most.Load(), budget, limit)
	}
	// The client reads: every message comes, none dropped.
	r := packet.NewReader(nc, 0)
	got := map[uint32]bool{}
	_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	for len(got) < n {
		p, err := r.ReadPacket(packet.V311)
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(got), n, err)
		}
		pp, ok := p.(*packet.Publish)
		if !ok {
			continue
		}
		i := binary.BigEndian.Uint32(pp.Payload)
		if got[i] || len(pp.Payload) != size {
			t.Fatalf("message %d came twice or cut (%d bytes)", i, len(pp.Payload))
		}
		got[i] = true
		b, _ := packet.Append(nil, &packet.Puback{PacketID: pp.PacketID}, packet.V311)
		if _, err := nc.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if d := counterValue(t, reg, "bifrost_mqtt_messages_dropped_total", "queue_bytes"); d != 0 {
		t.Fatalf("%v messages of a persistent session dropped", d)
	}
}

// dialNoReader connects a 3.1.1 client with a small socket buffer,
// subscribes it to filter at QoS 1 and reads the CONNACK and the SUBACK,
// nothing more.
func dialNoReader(t *testing.T, addr, clientID string, clean bool, filter string) net.Conn {
	t.Helper()
	// A small receive buffer, set before the connection opens (shrunk
	// after, the kernel had advertised a window it then dropped data of,
	// and the sender's retransmissions backed off for seconds).
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10)
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	b, _ := packet.Append(nil, &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, ClientID: clientID, CleanStart: clean}, packet.V311)
	b, _ = packet.Append(b, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: filter, QoS: 1}}}, packet.V311)
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	acks := make([]byte, 4+5) // CONNACK, SUBACK of one filter
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(nc, acks); err != nil || acks[0] != 0x20 || acks[3] != 0 || acks[4] != 0x90 || acks[8] != 1 {
		t.Fatalf("CONNACK and SUBACK: % x %v", acks, err)
	}
	return nc
}

// counterValue is the value of the counter name (with label reason, if
// not empty) in reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	if reason == "" {
		return metricValue(t, reg, name, nil)
	}
	return metricValue(t, reg, name, map[string]string{"reason": reason})
}

// metricValue is the value of the counter or gauge name whose labels
// include labels in reg; 0 if there is none.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			n := 0
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v == l.GetValue() {
					n++
				}
			}
			if n == len(labels) {
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}
