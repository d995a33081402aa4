package mqtt_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/events"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
	"github.com/bifrost-mq/bifrost/mqtt/settings"
)

// eventLog is an events.Collector that keeps what it is given.
type eventLog struct {
	mu  sync.Mutex
	evs []events.Event
}

func (l *eventLog) Collect(e events.Event) {
	l.mu.Lock()
	l.evs = append(l.evs, e)
	l.mu.Unlock()
}

// quotaEvents is the settings of the tenant's quota_exceeded events, as
// many as there were.
func (l *eventLog) quotaEvents(tenant string) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for _, e := range l.evs {
		if e.Type == events.QuotaExceeded && e.Tenant == tenant {
			out[e.Reason]++
		}
	}
	return out
}

// count is the number of events of the type and tenant.
func (l *eventLog) count(typ events.Type, tenant string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.evs {
		if e.Type == typ && e.Tenant == tenant {
			n++
		}
	}
	return n
}

// tryConnect connects user ("" anonymous) as clientID with version v and
// returns the client and its CONNACK.
func tryConnect(t *testing.T, addr string, v packet.Version, user, clientID string, persistent bool) (*rawClient, *packet.Connack) {
	t.Helper()
	c := dialRaw(t, addr, v)
	p := &packet.Connect{ClientID: clientID, CleanStart: !persistent, KeepAlive: 60}
	if user != "" {
		p.Username, p.UsernameFlag, p.Password, p.PasswordFlag = user, true, []byte(user+"-pw"), true
	}
	if persistent && v == packet.V5 {
		p.Properties.SessionExpiryInterval, p.Properties.HasSessionExpiryInterval = 300, true
	}
	return c, c.connect(p)
}

func mustConnectAs(t *testing.T, addr string, v packet.Version, user, clientID string, persistent bool) (*rawClient, *packet.Connack) {
	t.Helper()
	c, ack := tryConnect(t, addr, v, user, clientID, persistent)
	if ack.ReasonCode != 0 {
		t.Fatalf("%s as %q: CONNACK %s", clientID, user, ack.ReasonCode)
	}
	return c, ack
}

// pubCode publishes at QoS 1 and fails on an error code ("no matching
// subscribers" is none).
func pubCode(t *testing.T, c *rawClient, id uint16, topic, payload string) {
	t.Helper()
	if code := c.publish(&packet.Publish{Topic: topic, QoS: 1, PacketID: id, Payload: []byte(payload)}); code.IsError() {
		t.Fatalf("publish %s: %s", topic, code)
	}
}

func disconnect(c *rawClient) {
	c.send(&packet.Disconnect{})
	c.closed()
}

func wantCodes(t *testing.T, what string, got []packet.ReasonCode, want ...packet.ReasonCode) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: got %v, want %v", what, got, want)
		}
	}
}

// Each setting of issue 17's setting provider, enforced on real clients:
// a tenant over its limit gets the MQTT 5 reason code (or the 3.x
// refusal), the refusal is counted per tenant and reported as an event,
// and tenants without the limit (beta, default) are not touched.
func TestTenantQuotas(t *testing.T) {
	acme := settings.Default()
	acme.MaxConnections, acme.MaxSessions, acme.MaxSubscriptions = 3, 1, 2
	acme.MaxTopicLength, acme.MaxTopicLevels, acme.MaxQoS, acme.MaxRetained, acme.MaxSessionExpiry = 24, 3, 1, 1, 60
	delta := settings.Default()
	delta.MaxRoutes, delta.InboxQueueLength, delta.DropOldest = 2, 2, true
	eps := settings.Default()
	eps.InboxQueueLength = 2 // the newest dropped
	edge := settings.Default()
	edge.ConnectRate, edge.PublishRate = 0.1, 0.1 // a burst of one, then one per 10s
	provider := &settings.Static{Defaults: settings.Default(), Tenants: map[string]settings.Settings{"acme": acme, "delta": delta, "eps": eps, "edge": edge}}
	evs := &eventLog{}
	reg := prometheus.NewRegistry()
	e := startTenantEnvWith(t, 1, func(c *mqtt.Config) {
		c.Settings, c.Events, c.Registerer = provider, evs, reg
		c.SysInterval = -1
	})
	addr, edgeAddr := e.listenerAddr(0, plainListener), e.listenerAddr(0, edgeListener)
	quiet := 300 * time.Millisecond

	// a2 lives through the subtests (a client ends with the test that
	// dialed it).
	a2, ack := mustConnectAs(t, addr, packet.V5, "alice", "a2", false)
	if !ack.Properties.HasMaximumQoS || ack.Properties.MaximumQoS != 1 {
		t.Errorf("CONNACK maximum QoS %v %d, want 1 (MQTT-3.2.2-9)", ack.Properties.HasMaximumQoS, ack.Properties.MaximumQoS)
	}
	t.Run("max-connections", func(t *testing.T) {
		a1, _ := mustConnectAs(t, addr, packet.V5, "alice", "a1", false)
		a3, _ := mustConnectAs(t, addr, packet.V5, "alice", "a3", false)
		if _, ack := tryConnect(t, addr, packet.V5, "alice", "a4", false); ack.ReasonCode != packet.QuotaExceeded {
			t.Fatalf("4th connection of acme: CONNACK %s, want quota exceeded", ack.ReasonCode)
		}
		if _, ack := tryConnect(t, addr, packet.V311, "alice", "a4", false); ack.ReasonCode != packet.ConnRefusedServerUnavailable {
			t.Fatalf("4th connection of acme, 3.1.1: CONNACK %s, want server unavailable", ack.ReasonCode)
		}
		for _, id := range []string{"b1", "b2", "b3", "b4"} {
			mustConnectAs(t, addr, packet.V5, "bob", id, false)
		}
		disconnect(a1)
		a4, _ := mustConnectAs(t, addr, packet.V5, "alice", "a4", false)
		disconnect(a3)
		disconnect(a4)
	})

	t.Run("max-sessions and session expiry", func(t *testing.T) {
		p1, ack := mustConnectAs(t, addr, packet.V5, "alice", "p1", true)
		if !ack.Properties.HasSessionExpiryInterval || ack.Properties.SessionExpiryInterval != 60 {
			t.Errorf("CONNACK session expiry %v %d, want the tenant's cap 60", ack.Properties.HasSessionExpiryInterval, ack.Properties.SessionExpiryInterval)
		}
		if _, ack := tryConnect(t, addr, packet.V5, "alice", "p2", true); ack.ReasonCode != packet.QuotaExceeded {
			t.Fatalf("2nd persistent session of acme: CONNACK %s, want quota exceeded", ack.ReasonCode)
		}
		_, ack = mustConnectAs(t, addr, packet.V5, "bob", "p1", true)
		if ack.Properties.HasSessionExpiryInterval {
			t.Errorf("bob's session expiry capped to %d", ack.Properties.SessionExpiryInterval)
		}
		mustConnectAs(t, addr, packet.V5, "bob", "p2", true)
		disconnect(p1)
	})

	long := strings.Repeat("t", 25)
	t.Run("topic length and levels, max-qos", func(t *testing.T) {
		sa := a2.subscribe(1, packet.Subscription{Filter: "a/b/c/#", QoS: 1}, packet.Subscription{Filter: long, QoS: 1},
			packet.Subscription{Filter: "a/b/c", QoS: 2})
		wantCodes(t, "acme SUBACK", sa.ReasonCodes, packet.QuotaExceeded, packet.QuotaExceeded, 1)
		for i, topic := range []string{"a/b/c/d", long} {
			if code := a2.publish(&packet.Publish{Topic: topic, QoS: 1, PacketID: uint16(10 + i), Payload: []byte("x")}); code != packet.QuotaExceeded {
				t.Fatalf("acme publish to %q: PUBACK %s, want quota exceeded", topic, code)
			}
		}
		pub(t, a2, 12, "a/b/c", "fits", false)
		expectPayload(t, a2, "a/b/c", "fits")
		b, _ := mustConnectAs(t, addr, packet.V5, "bob", "topics", false)
		sa = b.subscribe(1, packet.Subscription{Filter: "a/b/c/#", QoS: 2}, packet.Subscription{Filter: long, QoS: 1})
		wantCodes(t, "beta SUBACK", sa.ReasonCodes, 2, 1)
		pub(t, b, 1, "a/b/c/d", "deep", false)
		expectPayload(t, b, "a/b/c/d", "deep")
	})

	t.Run("max-subscriptions", func(t *testing.T) {
		// a2 has a/b/c: one more, and a filter it has again.
		sa := a2.subscribe(2, packet.Subscription{Filter: "x/1", QoS: 1}, packet.Subscription{Filter: "x/2", QoS: 1},
			packet.Subscription{Filter: "a/b/c", QoS: 0})
		wantCodes(t, "acme SUBACK", sa.ReasonCodes, 1, packet.QuotaExceeded, 0)
		b, _ := mustConnectAs(t, addr, packet.V5, "bob", "subs", false)
		sa = b.subscribe(1, packet.Subscription{Filter: "x/1", QoS: 1}, packet.Subscription{Filter: "x/2", QoS: 1}, packet.Subscription{Filter: "x/3", QoS: 1})
		wantCodes(t, "beta SUBACK", sa.ReasonCodes, 1, 1, 1)
	})

	t.Run("max-retained", func(t *testing.T) {
		pub(t, a2, 20, "r/1", "kept", true)
		if code := a2.publish(&packet.Publish{Topic: "r/2", QoS: 1, PacketID: 21, Retain: true, Payload: []byte("x")}); code != packet.QuotaExceeded {
			t.Fatalf("acme's 2nd retained message: PUBACK %s, want quota exceeded", code)
		}
		b, _ := mustConnectAs(t, addr, packet.V5, "bob", "ret", false)
		pub(t, b, 1, "r/1", "b1", true)
		pub(t, b, 2, "r/2", "b2", true)
	})

	t.Run("max-qos publish", func(t *testing.T) {
		a2.send(&packet.Publish{Topic: "a/b/c", QoS: 2, PacketID: 30, Payload: []byte("x")})
		if d := a2.closed(); d == nil || d.ReasonCode != packet.QoSNotSupported {
			t.Fatalf("acme QoS 2 publish: DISCONNECT %+v, want QoS not supported (MQTT-3.2.2-11)", d)
		}
		a3, _ := mustConnectAs(t, addr, packet.V311, "alice", "a3", false)
		a3.send(&packet.Publish{Topic: "a/b/c", QoS: 2, PacketID: 1, Payload: []byte("x")})
		a3.closed()
		b, _ := mustConnectAs(t, addr, packet.V5, "bob", "qos2", false)
		pub(t, b, 1, "q2", "ok", false)
		if code := b.publish(&packet.Publish{Topic: "q2", QoS: 2, PacketID: 2, Payload: []byte("x")}); code.IsError() {
			t.Fatalf("beta QoS 2: %s", code)
		}
	})

	t.Run("connect-rate and publish-rate", func(t *testing.T) {
		e1, _ := mustConnectAs(t, edgeAddr, packet.V5, "", "e1", false)
		if _, ack := tryConnect(t, edgeAddr, packet.V5, "", "e2", false); ack.ReasonCode != packet.ConnectionRateExceeded {
			t.Fatalf("2nd connect of edge: CONNACK %s, want connection rate exceeded", ack.ReasonCode)
		}
		if _, ack := tryConnect(t, edgeAddr, packet.V311, "", "e2", false); ack.ReasonCode != packet.ConnRefusedServerUnavailable {
			t.Fatalf("2nd connect of edge, 3.1.1: CONNACK %s, want server unavailable", ack.ReasonCode)
		}
		e1.send(&packet.Publish{Topic: "p", Payload: []byte("1")})
		e1.send(&packet.Publish{Topic: "p", Payload: []byte("2")})
		if d := e1.closed(); d == nil || d.ReasonCode != packet.MessageRateTooHigh {
			t.Fatalf("edge's 2nd publish: DISCONNECT %+v, want message rate too high", d)
		}
		// The default tenant: as many as it likes.
		for _, id := range []string{"d1", "d2", "d3"} {
			c, _ := mustConnectAs(t, addr, packet.V5, "", id, false)
			for i := range 3 {
				c.publish(&packet.Publish{Topic: "p", Payload: []byte{byte(i)}})
			}
			alive(t, c)
		}
	})

	t.Run("inbox queue length and drop policy, max-routes", func(t *testing.T) {
		offline := func(user string) (pub, sess *rawClient) {
			sess, _ = mustConnectAs(t, addr, packet.V5, user, "dp", true)
			sess.subscribe(1, packet.Subscription{Filter: "q/#", QoS: 1})
			disconnect(sess)
			pub, _ = mustConnectAs(t, addr, packet.V5, user, "d1", false)
			for i, m := range []string{"m1", "m2", "m3", "m4"} {
				pubCode(t, pub, uint16(i+1), "q/x", m)
			}
			sess, _ = mustConnectAs(t, addr, packet.V5, user, "dp", true)
			return pub, sess
		}
		d1, dp := offline("dave")
		expectPayload(t, dp, "q/x", "m3") // delta drops the oldest
		expectPayload(t, dp, "q/x", "m4")
		dp.expectNone(quiet)
		_, ep := offline("erin")
		expectPayload(t, ep, "q/x", "m1") // eps the newest
		expectPayload(t, ep, "q/x", "m2")
		ep.expectNone(quiet)
		// Routes of delta: q/# (the inbox's), r/1; r/2 is one too many.
		sa := d1.subscribe(1, packet.Subscription{Filter: "r/1", QoS: 1}, packet.Subscription{Filter: "r/2", QoS: 1})
		wantCodes(t, "delta SUBACK", sa.ReasonCodes, 1, packet.QuotaExceeded)
	})

	for tenant, want := range map[string][]string{
		"acme":  {"max-connections", "max-sessions", "max-subscriptions", "max-topic-length", "max-topic-levels", "max-qos", "max-retained"},
		"edge":  {"connect-rate", "publish-rate"},
		"delta": {"max-routes"},
	} {
		got := evs.quotaEvents(tenant)
		for _, setting := range want {
			if got[setting] == 0 {
				t.Errorf("no quota_exceeded event of %s for %s (got %v)", tenant, setting, got)
			}
			if v := metricValue(t, reg, "bifrost_mqtt_tenant_quota_exceeded_total", map[string]string{"tenant": tenant, "setting": setting}); v == 0 {
				t.Errorf("bifrost_mqtt_tenant_quota_exceeded_total{tenant=%q,setting=%q} is 0", tenant, setting)
			}
		}
	}
	for _, tenant := range []string{"beta", "default"} {
		if got := evs.quotaEvents(tenant); len(got) > 0 {
			t.Errorf("tenant %s has quota events %v", tenant, got)
		}
	}
	if n := evs.count(events.InboxOverflow, "eps"); n != 2 {
		t.Errorf("%d inbox_overflow events of eps, want 2", n)
	}
	if v := metricValue(t, reg, "bifrost_mqtt_tenant_quota_exceeded_total", map[string]string{"tenant": "eps", "setting": "inbox-queue-length"}); v != 2 {
		t.Errorf("bifrost_mqtt_tenant_quota_exceeded_total of eps' inbox-queue-length is %v, want 2", v)
	}
}

// The settings webhook's answer applies over the config file's values;
// where it fails, the config file's values apply.
func TestSettingsWebhook(t *testing.T) {
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("tenant") == "acme" {
			_, _ = w.Write([]byte(`{"max_connections": 1}`))
			return
		}
		http.Error(w, "no", http.StatusInternalServerError)
	}))
	t.Cleanup(hook.Close)
	static := &settings.Static{Defaults: settings.Default(), Tenants: map[string]settings.Settings{
		"acme": {MaxQoS: 2, MaxConnections: 5}, "beta": {MaxQoS: 2, MaxConnections: 1}}}
	provider, err := settings.NewWebhook(settings.WebhookConfig{URL: hook.URL, Fallback: static, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	e := startTenantEnvWith(t, 1, func(c *mqtt.Config) { c.Settings = provider; c.SysInterval = -1 })
	addr := e.listenerAddr(0, plainListener)
	for _, user := range []string{"alice", "bob"} {
		mustConnectAs(t, addr, packet.V5, user, "c1", false)
		if _, ack := tryConnect(t, addr, packet.V5, user, "c2", false); ack.ReasonCode != packet.QuotaExceeded {
			t.Errorf("%s's 2nd connection: CONNACK %s, want quota exceeded", user, ack.ReasonCode)
		}
	}
	for _, id := range []string{"c1", "c2", "c3"} {
		mustConnectAs(t, addr, packet.V5, "", id, false) // default: the webhook fails, no limit
	}
}

// The resource throttler's inbound bandwidth: a tenant's publishers are
// read no faster than its bytes per second, nothing is dropped, and
// another tenant's reader never waits.
func TestTenantInboundThrottle(t *testing.T) {
	const rate = 64 << 10
	acme := settings.Default()
	acme.InboundBytesPerSecond = rate
	reg := prometheus.NewRegistry()
	e := startTenantEnvWith(t, 1, func(c *mqtt.Config) {
		c.Settings = &settings.Static{Defaults: settings.Default(), Tenants: map[string]settings.Settings{"acme": acme}}
		c.Registerer, c.SysInterval = reg, -1
	})
	addr := e.listenerAddr(0, plainListener)
	payload := make([]byte, 32<<10)
	const n = 8 // 256 KiB: the first second's burst, then 3s more at least
	run := func(user string) time.Duration {
		sub, _ := mustConnectAs(t, addr, packet.V5, user, "sub", false)
		sub.subscribe(1, packet.Subscription{Filter: "bw", QoS: 1})
		p, _ := mustConnectAs(t, addr, packet.V5, user, "pub", false)
		start := time.Now()
		for i := range n {
			p.send(&packet.Publish{Topic: "bw", QoS: 1, PacketID: uint16(i + 1), Payload: payload})
		}
		for range n {
			sub.nextPublish()
		}
		return time.Since(start)
	}
	waits := metricValue(t, reg, "bifrost_mqtt_throttle_waits_total", nil)
	run("bob")
	if got := metricValue(t, reg, "bifrost_mqtt_throttle_waits_total", nil); got != waits {
		t.Fatalf("beta's reader waited %v times", got-waits)
	}
	if d := run("alice"); d < 2*time.Second {
		t.Fatalf("acme's %d KiB took %v at %d KiB/s", n*len(payload)>>10, d, rate>>10)
	}
	if metricValue(t, reg, "bifrost_mqtt_throttle_waits_total", nil) == waits {
		t.Fatal("acme's reader never waited")
	}
}
