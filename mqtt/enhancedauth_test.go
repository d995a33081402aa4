package mqtt_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// TestEnhancedAuthWebhook: MQTT 5 enhanced authentication (4.12) through
// the webhook: a challenge and its answer in AUTH packets before the
// CONNACK, a wrong answer refused (0x87), an unknown method refused
// (0x8C), an AUTH with another method a protocol error (0x82), and a
// re-authentication that succeeds (AUTH 0x00) or fails (DISCONNECT 0x87).
func TestEnhancedAuthWebhook(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/authenticate" {
			_, _ = w.Write([]byte(`{"allow":true}`))
			return
		}
		var req auth.EnhancedAuthRequest
		if r.URL.Path != "/enhanced-auth" || json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		switch {
		case req.Method != "CHALLENGE":
			_, _ = w.Write([]byte(`{"allow":false,"reason":"bad_method"}`))
		case req.Step == 0 && string(req.Data) == "hello":
			_ = json.NewEncoder(w).Encode(auth.EnhancedAuthResponse{Continue: true, Data: []byte("nonce-" + req.ClientID)})
		case req.Step == 1 && string(req.Data) == "answer:nonce-"+req.ClientID:
			_, _ = w.Write([]byte(`{"allow":true,"user":"alice","data":"d2VsY29tZQ=="}`)) // "welcome"
		default:
			_, _ = w.Write([]byte(`{"allow":false}`))
		}
	}))
	t.Cleanup(srv.Close)
	hook, err := auth.NewWebhook(auth.WebhookConfig{URL: srv.URL, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, 1, func(c *mqtt.Config) { c.Auth = hook })
	addr := e.addr(0)

	authPacket := func(code packet.ReasonCode, method, data string) *packet.Auth {
		a := &packet.Auth{ReasonCode: code}
		a.Properties.AuthenticationMethod, a.Properties.AuthenticationData = method, []byte(data)
		return a
	}
	// start sends a CONNECT with method and "hello" and returns the
	// server's first answer.
	start := func(id, method string) (*rawClient, packet.Packet) {
		c := dialRaw(t, addr, packet.V5)
		cp := &packet.Connect{Version: packet.V5, ProtocolName: "MQTT", ClientID: id, CleanStart: true}
		cp.Properties.AuthenticationMethod, cp.Properties.AuthenticationData = method, []byte("hello")
		c.send(cp)
		return c, c.next()
	}
	challenge := func(c *rawClient, p packet.Packet, id string) {
		t.Helper()
		a, ok := p.(*packet.Auth)
		if !ok || a.ReasonCode != packet.ContinueAuthentication || a.Properties.AuthenticationMethod != "CHALLENGE" ||
			string(a.Properties.AuthenticationData) != "nonce-"+id {
			t.Fatalf("want the challenge, got %+v", p)
		}
	}

	c, p := start("ea-1", "CHALLENGE")
	challenge(c, p, "ea-1")
	c.send(authPacket(packet.ContinueAuthentication, "CHALLENGE", "answer:nonce-ea-1"))
	ack, ok := c.next().(*packet.Connack)
	if !ok || ack.ReasonCode != 0 || ack.Properties.AuthenticationMethod != "CHALLENGE" || string(ack.Properties.AuthenticationData) != "welcome" {
		t.Fatalf("CONNACK %+v", ack)
	}
	// Re-authentication, twice: right, then wrong.
	c.send(authPacket(packet.ReAuthenticate, "CHALLENGE", "hello"))
	challenge(c, c.next(), "ea-1")
	c.send(authPacket(packet.ContinueAuthentication, "CHALLENGE", "answer:nonce-ea-1"))
	if a, ok := c.next().(*packet.Auth); !ok || a.ReasonCode != packet.Success || string(a.Properties.AuthenticationData) != "welcome" {
		t.Fatalf("re-authentication: %+v", a)
	}
	c.send(authPacket(packet.ReAuthenticate, "CHALLENGE", "hello"))
	challenge(c, c.next(), "ea-1")
	c.send(authPacket(packet.ContinueAuthentication, "CHALLENGE", "wrong"))
	if d := c.closed(); d == nil || d.ReasonCode != packet.NotAuthorized {
		t.Fatalf("failed re-authentication: DISCONNECT %+v", d)
	}

	c, p = start("ea-2", "CHALLENGE")
	challenge(c, p, "ea-2")
	c.send(authPacket(packet.ContinueAuthentication, "CHALLENGE", "wrong"))
	if ack, ok := c.next().(*packet.Connack); !ok || ack.ReasonCode != packet.NotAuthorized {
		t.Fatalf("wrong answer: %+v", ack)
	}

	c, p = start("ea-3", "CHALLENGE")
	challenge(c, p, "ea-3")
	c.send(authPacket(packet.ContinueAuthentication, "OTHER", "answer:nonce-ea-3"))
	if ack, ok := c.next().(*packet.Connack); !ok || ack.ReasonCode != packet.ProtocolError {
		t.Fatalf("another method mid-exchange: %+v", ack)
	}

	if _, p = start("ea-4", "SCRAM-SHA-1"); p == nil || p.(*packet.Connack).ReasonCode != packet.BadAuthenticationMethod {
		t.Fatalf("unknown method: %+v", p)
	}

	// A client that connected without a method may not AUTH.
	plain := dialRaw(t, addr, packet.V5)
	plain.send(&packet.Connect{Version: packet.V5, ProtocolName: "MQTT", ClientID: "ea-5", CleanStart: true})
	if ack, ok := plain.next().(*packet.Connack); !ok || ack.ReasonCode != 0 {
		t.Fatalf("without a method: %+v", ack)
	}
	plain.send(authPacket(packet.ReAuthenticate, "CHALLENGE", "hello"))
	if d := plain.closed(); d == nil || d.ReasonCode != packet.ProtocolError {
		t.Fatalf("AUTH without a method in CONNECT: DISCONNECT %+v", d)
	}
}
