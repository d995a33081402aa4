package mqtt_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/events"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// denyACL denies subscribing to secret/# and publishing to denied/#, and
// allows the rest to anonymous clients.
func denyACL(t *testing.T) auth.Authenticator {
	t.Helper()
	a, err := auth.NewFile(auth.FileConfig{DefaultAllow: true, ACL: []auth.Rule{
		{Allow: false, Action: "subscribe", Topic: "secret/#"},
		{Allow: false, Action: "publish", Topic: "denied/#"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestEventsWebhook: a real broker reports a client's connect, denied
// subscription and disconnect, and a taken-over client's kick, will and
// disconnect, to an HTTP collector in JSON batches, a batch sent when it
// is full.
func TestEventsWebhook(t *testing.T) {
	batches := make(chan events.Batch, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b events.Batch
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			t.Errorf("collector: %v", err)
		}
		batches <- b
	}))
	t.Cleanup(srv.Close) // after the broker closes the collector
	hook, err := events.NewWebhook(events.WebhookConfig{URL: srv.URL, BatchSize: 3, FlushInterval: time.Hour, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, 1, func(c *mqtt.Config) { c.Auth, c.Events = denyACL(t), hook })
	addr := e.addr(0)
	next := func() events.Batch {
		t.Helper()
		select {
		case b := <-batches:
			return b
		case <-time.After(10 * time.Second):
			t.Fatal("no batch in 10s")
			return events.Batch{}
		}
	}
	type seen struct {
		typ            events.Type
		client, reason string
	}
	check := func(b events.Batch, want ...seen) {
		t.Helper()
		if len(b.Events) != len(want) {
			t.Fatalf("batch %+v, want %v", b.Events, want)
		}
		for i, ev := range b.Events {
			got := seen{ev.Type, ev.ClientID, ev.Reason}
			if got != want[i] || ev.Tenant != auth.DefaultTenant || ev.Time.IsZero() || ev.Remote == "" {
				t.Errorf("event %d: %+v, want %v", i, ev, want[i])
			}
		}
	}

	c := connectRaw(t, addr, packet.V5, "ev-1")
	sa := c.subscribe(1, packet.Subscription{Filter: "open/x", QoS: 1}, packet.Subscription{Filter: "secret/x", QoS: 1})
	if sa.ReasonCodes[1] != packet.NotAuthorized {
		t.Fatalf("SUBACK %v", sa.ReasonCodes)
	}
	c.send(&packet.Disconnect{})
	c.closed()
	b := next()
	check(b, seen{events.Connect, "ev-1", ""}, seen{events.SubscribeDenied, "ev-1", "not_authorized"}, seen{events.Disconnect, "ev-1", "client_disconnect"})
	if b.Events[1].Topic != "secret/x" || b.Events[1].QoS != 1 {
		t.Errorf("subscribe denied: %+v", b.Events[1])
	}

	// A client with a will, taken over by a second connection of its
	// client ID: kicked, disconnected (kicked), its will published, while
	// the second connects and then leaves.
	old := dialRaw(t, addr, packet.V5)
	if ack := old.connect(&packet.Connect{ClientID: "ev-2", CleanStart: true, Will: &packet.Will{Topic: "wills/ev-2", Payload: []byte("gone")}}); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %s", ack.ReasonCode)
	}
	taker := connectRaw(t, addr, packet.V5, "ev-2")
	if d := old.closed(); d == nil || d.ReasonCode != packet.SessionTakenOver {
		t.Fatalf("the old connection got DISCONNECT %+v", d)
	}
	taker.send(&packet.Disconnect{})
	taker.closed()
	byConn := map[string][]seen{}
	for _, b := range []events.Batch{next(), next()} {
		if len(b.Events) != 3 {
			t.Fatalf("a batch of %d events, want 3", len(b.Events))
		}
		for _, ev := range b.Events {
			byConn[ev.Remote] = append(byConn[ev.Remote], seen{ev.Type, ev.ClientID, ev.Reason})
		}
	}
	wantOld := []seen{{events.Connect, "ev-2", ""}, {events.Kicked, "ev-2", packet.SessionTakenOver.String()}, {events.Disconnect, "ev-2", "kicked"}}
	wantNew := []seen{{events.Connect, "ev-2", ""}, {events.Disconnect, "ev-2", "client_disconnect"}}
	if got := byConn[old.nc.LocalAddr().String()]; !slices.Equal(got, wantOld) {
		t.Errorf("the old connection's events %v, want %v", got, wantOld)
	}
	if got := byConn[taker.nc.LocalAddr().String()]; !slices.Equal(got, wantNew) {
		t.Errorf("the new connection's events %v, want %v", got, wantNew)
	}
	// The will, kept in the inbox, is published by the inbox's scheduler
	// through the frontend: no connection's.
	if got, want := byConn[""], []seen{{events.WillPublished, "ev-2", ""}}; !slices.Equal(got, want) {
		t.Errorf("events of no connection %v, want %v", got, want)
	}
}

// TestEventsCollectorHangsClientsDoNot: an event collector that never
// answers does not hold up clients: publishes (denied ones, each an event,
// and allowed ones) flow, and the events it cannot take are dropped and
// counted.
func TestEventsCollectorHangsClientsDoNot(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	t.Cleanup(srv.Close) // after the broker closes the collector
	reg := prometheus.NewRegistry()
	hook, err := events.NewWebhook(events.WebhookConfig{URL: srv.URL, QueueSize: 4, BatchSize: 1, FlushInterval: 10 * time.Millisecond,
		Timeout: time.Hour, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, 1, func(c *mqtt.Config) { c.Auth, c.Events = denyACL(t), hook })
	t.Cleanup(func() { close(release) }) // before the broker closes the collector
	c := connectRaw(t, e.addr(0), packet.V5, "hang-1")
	c.subscribe(1, packet.Subscription{Filter: "flow/#", QoS: 1})
	const n = 50
	for i := range n {
		if code := c.publish(&packet.Publish{Topic: "denied/x", QoS: 1, PacketID: 1, Payload: []byte("x")}); code != packet.NotAuthorized {
			t.Fatalf("denied publish %d: %s", i, code)
		}
		c.publish(&packet.Publish{Topic: "flow/x", QoS: 1, PacketID: 2, Payload: []byte{byte(i)}})
		if p := c.nextPublish(); p.Payload[0] != byte(i) {
			t.Fatalf("got message %d, want %d", p.Payload[0], i)
		}
	}
	// At most one batch in the hung POST and QueueSize queued: the rest of
	// the connect and the n publish-denied events were dropped.
	if dropped := metricValue(t, reg, "bifrost_events_webhook_dropped_total", map[string]string{"reason": "queue_full"}); dropped < n+1-5 {
		t.Fatalf("%v events dropped, want at least %d", dropped, n+1-5)
	}
}
