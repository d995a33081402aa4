package mqtt_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// TestSysTopics: a frontend publishes its figures under
// $SYS/brokers/<node>/ as retained messages (version, uptime, clients
// connected, messages received and sent, subscriptions), refreshed every
// interval; "#" does not match them (MQTT-4.7.2-1); clients may not
// publish to $SYS, nor name it as their will topic.
func TestSysTopics(t *testing.T) {
	e := startEnv(t, 1, func(c *mqtt.Config) {
		c.SysInterval = 200 * time.Millisecond
		c.NodeName = "n1"
		c.Version = "bifrost test"
	})
	all := connectRaw(t, e.addr(0), packet.V5, "all")
	all.subscribe(1, packet.Subscription{Filter: "#", QoS: 0})
	pub := connectRaw(t, e.addr(0), packet.V5, "sys-pub")
	for i := 0; i < 3; i++ {
		if code := pub.publish(&packet.Publish{Topic: "plain/t", QoS: 1, PacketID: uint16(i + 1), Payload: []byte("x")}); code.IsError() {
			t.Fatalf("publish: %s", code)
		}
	}
	sys := connectRaw(t, e.addr(0), packet.V5, "sys")
	sys.subscribe(1, packet.Subscription{Filter: "$SYS/brokers/n1/#", QoS: 0})
	want := map[string]func(string) bool{
		"version":             func(v string) bool { return v == "bifrost test" },
		"uptime":              func(v string) bool { return strings.HasSuffix(v, " seconds") },
		"clients/connected":   func(v string) bool { n, _ := strconv.Atoi(v); return n >= 3 },
		"messages/received":   func(v string) bool { n, _ := strconv.Atoi(v); return n >= 3 },
		"messages/sent":       func(v string) bool { n, _ := strconv.Atoi(v); return n >= 3 },
		"subscriptions/count": func(v string) bool { n, _ := strconv.Atoi(v); return n >= 1 },
	}
	got := map[string]string{}
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(want) {
		if time.Now().After(deadline) {
			t.Fatalf("$SYS figures seen: %v", got)
		}
		p := sys.nextPublish()
		leaf := strings.TrimPrefix(p.Topic, "$SYS/brokers/n1/")
		if ok := want[leaf]; ok != nil && ok(string(p.Payload)) {
			got[leaf] = string(p.Payload)
		}
	}
	// A client may not publish to $SYS: refused (5.0), dropped.
	if code := pub.publish(&packet.Publish{Topic: "$SYS/brokers/n1/version", QoS: 1, PacketID: 9, Payload: []byte("fake")}); code != packet.NotAuthorized {
		t.Fatalf("PUBLISH to $SYS: %s, want not authorized", code)
	}
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		if p := sys.nextPublish(); string(p.Payload) == "fake" {
			t.Fatal("a client's PUBLISH to $SYS was delivered")
		}
	}
	// "#" saw the plain messages only.
	for i := 0; i < 3; i++ {
		if p := all.nextPublish(); p.Topic != "plain/t" {
			t.Fatalf("\"#\" got %q", p.Topic)
		}
	}
	all.expectNone(500 * time.Millisecond)
	// Nor may it name $SYS as its will topic.
	w := dialRaw(t, e.addr(0), packet.V5)
	if ack := w.connect(&packet.Connect{ClientID: "sys-will", CleanStart: true, KeepAlive: 30,
		Will: &packet.Will{Topic: "$SYS/brokers/n1/uptime", Payload: []byte("0 seconds")}}); ack.ReasonCode != packet.NotAuthorized {
		t.Fatalf("CONNECT with a $SYS will: CONNACK %s", ack.ReasonCode)
	}
}
