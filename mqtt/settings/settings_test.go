package settings

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestApply(t *testing.T) {
	s := Default()
	err := s.Apply(map[string]any{
		"max-connections": int64(10), "max_sessions": int64(2), "max-subscriptions": int64(3),
		"max-topic-length": int64(64), "max-topic-levels": int64(4), "max-qos": int64(1),
		"max-retained": int64(5), "max-routes": int64(6), "inbox-queue-length": int64(7),
		"inbox-drop-policy": "oldest", "publish-rate": 2.5, "max-session-expiry": float64(3600),
		"connect-rate": int64(4), "inbound-bytes-per-second": int64(1 << 20),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{MaxConnections: 10, MaxSessions: 2, MaxSubscriptions: 3, MaxTopicLength: 64, MaxTopicLevels: 4,
		MaxQoS: 1, MaxRetained: 5, MaxRoutes: 6, InboxQueueLength: 7, DropOldest: true, PublishRate: 2.5,
		MaxSessionExpiry: 3600, ConnectRate: 4, InboundBytesPerSecond: 1 << 20}
	if s != want {
		t.Fatalf("got %+v, want %+v", s, want)
	}
	for _, bad := range []struct {
		values map[string]any
		want   string
	}{
		{map[string]any{"max-qos": int64(3)}, "max-qos: want a whole number up to 2"},
		{map[string]any{"max-connections": int64(-1)}, "want 0 or more"},
		{map[string]any{"max-connections": 1.5}, "whole number"},
		{map[string]any{"max-connections": "ten"}, "want a number"},
		{map[string]any{"inbox-drop-policy": "random"}, `want "oldest" or "newest"`},
		{map[string]any{"max-connection": int64(1)}, "unknown setting"},
	} {
		s := Default()
		if err := s.Apply(bad.values); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: got %v, want an error with %q", bad.values, err, bad.want)
		}
	}
}

// The webhook's answer applies over the config file's values of the
// tenant and is cached for its TTL; a failing webhook gives the config
// file's values.
func TestWebhookAnswersCachesAndFallsBack(t *testing.T) {
	var calls atomic.Int32
	var fail atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if fail.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if r.Method != http.MethodGet || r.URL.Query().Get("tenant") != "acme" {
			http.Error(w, "want GET ?tenant=acme", http.StatusBadRequest)
			return
		}
		_, _ = w.Write([]byte(`{"max_connections": 3, "publish_rate": 1.5}`))
	}))
	defer srv.Close()
	static := &Static{Defaults: Default(), Tenants: map[string]Settings{"acme": {MaxQoS: 1, MaxConnections: 100, MaxRetained: 9}}}
	w, err := NewWebhook(WebhookConfig{URL: srv.URL + "/settings", Fallback: static, CacheTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	got := w.Settings(context.Background(), "acme")
	if want := (Settings{MaxQoS: 1, MaxConnections: 3, MaxRetained: 9, PublishRate: 1.5}); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	fail.Store(true)
	if again := w.Settings(context.Background(), "acme"); again != got || calls.Load() != 1 {
		t.Fatalf("within the TTL: %+v after %d calls, want the cached answer after 1", again, calls.Load())
	}
	// Another tenant, the webhook down: the config file's defaults.
	if got := w.Settings(context.Background(), "beta"); got != Default() {
		t.Fatalf("failing webhook: got %+v, want the defaults", got)
	}
	// A bad answer falls back too.
	fail.Store(false)
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"max_qos": 7}`))
	}))
	defer bad.Close()
	wb, err := NewWebhook(WebhookConfig{URL: bad.URL, Fallback: static})
	if err != nil {
		t.Fatal(err)
	}
	if got := wb.Settings(context.Background(), "acme"); got != static.Tenants["acme"] {
		t.Fatalf("bad answer: got %+v, want the config's %+v", got, static.Tenants["acme"])
	}
}

// A webhook that does not answer costs a CONNECT at most its timeout.
func TestWebhookTimeoutFallsBack(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	w, err := NewWebhook(WebhookConfig{URL: srv.URL, Fallback: &Static{Defaults: Settings{MaxQoS: 2, MaxConnections: 7}}, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if got := w.Settings(context.Background(), "acme"); got.MaxConnections != 7 {
		t.Fatalf("got %+v, want the fallback", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestNewWebhookRefusesBadConfig(t *testing.T) {
	for _, cfg := range []WebhookConfig{
		{URL: "ftp://x", Fallback: &Static{}},
		{URL: "http://x"},
		{URL: "http://x", Fallback: &Static{}, Timeout: -1},
	} {
		if _, err := NewWebhook(cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}
