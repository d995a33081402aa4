package mqtt_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// authHook is an auth webhook for tests: it answers by username and by
// topic, and counts the checks it was asked per topic.
type authHook struct {
	mu     sync.Mutex
	checks map[string]int
	auths  []auth.AuthenticateRequest
}

func (h *authHook) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/hook/authenticate":
		var req auth.AuthenticateRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.auths = append(h.auths, req)
		h.mu.Unlock()
		user := ""
		if req.Username != nil {
			user = *req.Username
		}
		switch {
		case user == "slow":
			<-r.Context().Done() // past the webhook's timeout
		case user == "garbage":
			_, _ = w.Write([]byte("<html>not json"))
		case user == "broken":
			http.Error(w, "down", http.StatusInternalServerError)
		case user == "alice" && req.Password != nil && *req.Password == "good":
			_, _ = w.Write([]byte(`{"allow":true,"tenant":"default","user":"alice"}`))
		case user == "alice":
			_, _ = w.Write([]byte(`{"allow":false,"reason":"bad_credentials"}`))
		default:
			_, _ = w.Write([]byte(`{"allow":false}`))
		}
	case "/hook/check":
		var req auth.CheckRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.checks[req.Topic]++
		h.mu.Unlock()
		switch {
		case req.User != "alice":
			_, _ = w.Write([]byte(`{"allow":false}`))
		case strings.HasPrefix(req.Topic, "ok/"):
			_, _ = w.Write([]byte(`{"allow":true}`))
		case strings.HasPrefix(req.Topic, "slow/"):
			<-r.Context().Done()
		case strings.HasPrefix(req.Topic, "garbage/"):
			_, _ = w.Write([]byte(`{"allowed":"yes"}`)) // JSON, but no "allow"
		default:
			_, _ = w.Write([]byte(`{"allow":false}`))
		}
	default:
		http.NotFound(w, r)
	}
}

func (h *authHook) checksOf(topic string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.checks[topic]
}

// syncBuffer is a log sink the broker's goroutines write to while a test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAuthWebhook: the HTTP auth provider decides CONNECT, SUBSCRIBE and
// PUBLISH of real clients; a timeout, an error status or an answer without
// a decision denies (fails closed) and is logged; a cached decision spares
// the second call.
func TestAuthWebhook(t *testing.T) {
	h := &authHook{checks: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(h.serveHTTP))
	defer srv.Close()
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	hook, err := auth.NewWebhook(auth.WebhookConfig{URL: srv.URL + "/hook", Timeout: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, 1, func(c *mqtt.Config) { c.Auth = hook })
	addr := e.addr(0)

	checkConnacks(t, addr, []connectCase{
		{packet.V5, "alice", "wrong", packet.BadUserNameOrPassword},
		{packet.V311, "alice", "wrong", packet.ConnRefusedBadUsernamePassword},
		{packet.V5, "mallory", "x", packet.NotAuthorized},
		{packet.V311, "mallory", "x", packet.ConnRefusedNotAuthorized},
		{packet.V5, "slow", "x", packet.NotAuthorized},
		{packet.V311, "slow", "x", packet.ConnRefusedNotAuthorized},
		{packet.V5, "garbage", "x", packet.NotAuthorized},
		{packet.V311, "broken", "x", packet.ConnRefusedNotAuthorized},
	})
	if got := hookCalls(t, reg, "authenticate", "timeout"); got != 2 {
		t.Errorf("authenticate timeouts counted: %v, want 2", got)
	}
	if got := hookCalls(t, reg, "authenticate", "error"); got != 2 {
		t.Errorf("authenticate errors counted: %v, want 2", got)
	}
	if l := logs.String(); !strings.Contains(l, "auth webhook failed") || !strings.Contains(l, "bad answer") || !strings.Contains(l, "500") {
		t.Errorf("the garbage and 500 answers were not logged:\n%s", l)
	}

	for _, v := range []packet.Version{packet.V5, packet.V311} {
		c := dialRaw(t, addr, v)
		if ack := c.connect(&packet.Connect{ClientID: "alice-" + v.String(), CleanStart: true, UsernameFlag: true, Username: "alice", PasswordFlag: true, Password: []byte("good")}); ack.ReasonCode != 0 {
			t.Fatalf("%s alice: CONNACK %s", v, ack.ReasonCode)
		}
		h.mu.Lock()
		last := h.auths[len(h.auths)-1]
		h.mu.Unlock()
		if last.ProtocolVersion != byte(v) || last.ClientID != "alice-"+v.String() || !strings.HasPrefix(last.RemoteAddr, "127.0.0.1:") {
			t.Errorf("%s: the webhook was asked %+v", v, last)
		}
		denied := failCodeOf(v, packet.NotAuthorized)
		sa := c.subscribe(1, packet.Subscription{Filter: "ok/" + v.String(), QoS: 1}, packet.Subscription{Filter: "no/x", QoS: 1},
			packet.Subscription{Filter: "slow/x", QoS: 1}, packet.Subscription{Filter: "garbage/x", QoS: 1})
		if want := []packet.ReasonCode{1, denied, denied, denied}; !slices.Equal(sa.ReasonCodes, want) {
			t.Errorf("%s SUBACK %v, want %v", v, sa.ReasonCodes, want)
		}
		// A denied publish: PUBACK 0x87 in 5.0; in 3.1.1, which has no
		// code for it, a positive PUBACK and the message dropped
		// (MQTT-3.3.5-2).
		pubDenied := packet.ReasonCode(0)
		if v == packet.V5 {
			pubDenied = packet.NotAuthorized
		}
		for i, topic := range []string{"no/x", "slow/x", "garbage/x"} {
			if code := c.publish(&packet.Publish{Topic: topic, QoS: 1, PacketID: uint16(10 + i), Payload: []byte("x")}); code != pubDenied {
				t.Errorf("%s publish to %s: %s, want %s", v, topic, code, pubDenied)
			}
		}
		c.publish(&packet.Publish{Topic: "ok/" + v.String(), QoS: 1, PacketID: 2, Payload: []byte("mine")})
		if p := c.nextPublish(); string(p.Payload) != "mine" || p.Topic != "ok/"+v.String() {
			t.Fatalf("%s got %q on %s", v, p.Payload, p.Topic)
		}
	}
	// The denials of slow/x and garbage/x were not cached: asked again.
	if n := h.checksOf("slow/x"); n != 4 {
		t.Errorf("slow/x checked %d times, want 4 (failures are not cached)", n)
	}

	// A second publish with the same tenant, user, topic, QoS and retain
	// flag is decided by the cache.
	c := dialRaw(t, addr, packet.V5)
	if ack := c.connect(&packet.Connect{ClientID: "alice-cache", CleanStart: true, UsernameFlag: true, Username: "alice", PasswordFlag: true, Password: []byte("good")}); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %s", ack.ReasonCode)
	}
	hitsBefore := hookCache(t, reg, "hit")
	for i := range 2 {
		if code := c.publish(&packet.Publish{Topic: "ok/cached", QoS: 1, PacketID: uint16(20 + i), Payload: []byte("x")}); code >= 0x80 {
			t.Fatalf("publish %d: %s", i, code)
		}
	}
	if n := h.checksOf("ok/cached"); n != 1 {
		t.Errorf("ok/cached checked %d times, want 1 (the second from the cache)", n)
	}
	if hits := hookCache(t, reg, "hit") - hitsBefore; hits != 1 {
		t.Errorf("cache hits %v, want 1", hits)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "bifrost_auth_webhook_call_duration_seconds" && len(mf.GetMetric()) != 2 {
			t.Errorf("latency series %d, want 2 (authenticate, check)", len(mf.GetMetric()))
		}
	}
}

func hookCalls(t *testing.T, reg *prometheus.Registry, call, result string) float64 {
	return metricValue(t, reg, "bifrost_auth_webhook_calls_total", map[string]string{"call": call, "result": result})
}

func hookCache(t *testing.T, reg *prometheus.Registry, result string) float64 {
	return metricValue(t, reg, "bifrost_auth_webhook_cache_total", map[string]string{"result": result})
}

func failCodeOf(v packet.Version, code packet.ReasonCode) packet.ReasonCode {
	if v == packet.V5 {
		return code
	}
	return packet.SubackFailure
}
