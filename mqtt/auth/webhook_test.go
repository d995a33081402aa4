package auth

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestWebhookConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg WebhookConfig
		ok  bool
	}{
		{WebhookConfig{URL: "http://127.0.0.1:9/hook"}, true},
		{WebhookConfig{URL: "https://auth.example/"}, true},
		{WebhookConfig{URL: ""}, false},
		{WebhookConfig{URL: "ftp://x/"}, false},
		{WebhookConfig{URL: "127.0.0.1:80"}, false},
		{WebhookConfig{URL: "http://x/", Timeout: -time.Second}, false},
		{WebhookConfig{URL: "http://x/", CacheSize: -1}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: %v", tc.cfg, err)
		}
	}
}

// TestDecisionCacheBoundedAndExpires: the cache keeps at most its size,
// dropping the least recently used, and forgets a decision at its TTL.
func TestDecisionCacheBoundedAndExpires(t *testing.T) {
	c := newDecisionCache(2, time.Minute)
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	key := func(topic string) decisionKey {
		return keyOf(Identity{Tenant: "t", Username: "u"}, Request{Action: Publish, Topic: topic})
	}
	c.put(key("a"), true)
	c.put(key("b"), false)
	if allow, ok := c.get(key("a")); !ok || !allow {
		t.Fatalf("a: %v %v", allow, ok)
	}
	c.put(key("c"), true) // b is the least recently used
	if _, ok := c.get(key("b")); ok {
		t.Fatal("b kept past the size")
	}
	if c.len() != 2 {
		t.Fatalf("len %d", c.len())
	}
	now = now.Add(time.Minute)
	if _, ok := c.get(key("a")); ok {
		t.Fatal("a kept past its TTL")
	}
	// Another user's, or an anonymous client's, decision is its own.
	anon := func(client string) decisionKey {
		return keyOf(Identity{Tenant: "t", ClientID: client}, Request{Action: Publish, Topic: "a"})
	}
	c.put(anon("c1"), true)
	if _, ok := c.get(anon("c2")); ok {
		t.Fatal("an anonymous client's decision served to another")
	}
}

// TestWebhookCheckNeverLongerThanTimeout: a webhook that does not answer
// denies at the timeout, even when the caller would wait longer.
func TestWebhookCheckNeverLongerThanTimeout(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		// The server hears of the client going only once it has read
		// the body.
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	defer srv.Close()
	w, err := NewWebhook(WebhookConfig{URL: srv.URL, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan bool)
	go func() {
		done <- w.Check(ctx, Identity{Tenant: "t", Username: "u"}, Request{Action: Subscribe, Topic: "a/#"})
	}()
	select {
	case allow := <-done:
		if allow {
			t.Fatal("allowed without an answer")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Check waited past its timeout")
	}
	if w.Check(ctx, Identity{}, Request{Topic: "a"}) {
		t.Fatal("the zero action allowed")
	}
	if calls.Load() != 1 {
		t.Fatalf("%d calls", calls.Load())
	}
}
