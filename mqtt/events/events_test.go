package events

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestWebhookFlushesByInterval: events short of a batch are sent when the
// flush interval passes, and what is queued at Close is sent then.
func TestWebhookFlushesByInterval(t *testing.T) {
	batches := make(chan Batch, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b Batch
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			t.Errorf("collector: %v", err)
		}
		batches <- b
	}))
	defer srv.Close()
	w, err := NewWebhook(WebhookConfig{URL: srv.URL, BatchSize: 100, FlushInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	w.Collect(Event{Type: Connect, ClientID: "a"})
	w.Collect(Event{Type: Disconnect, ClientID: "a", Reason: "client_disconnect"})
	var got []Event
	for len(got) < 2 {
		select {
		case b := <-batches:
			got = append(got, b.Events...)
		case <-time.After(10 * time.Second):
			t.Fatalf("no batch in 10s; got %v", got)
		}
	}
	if got[0].Type != Connect || got[1].Reason != "client_disconnect" {
		t.Fatalf("got %+v", got)
	}

	// Close sends what is left: with an interval that never comes, only
	// Close sends it.
	w2, err := NewWebhook(WebhookConfig{URL: srv.URL, BatchSize: 100, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	w2.Collect(Event{Type: Kicked, ClientID: "b"})
	w.Close()
	w2.Close()
	select {
	case b := <-batches:
		if len(b.Events) != 1 || b.Events[0].Type != Kicked {
			t.Fatalf("at close: %+v", b)
		}
	default:
		t.Fatal("Close did not send the queued event")
	}
}

func TestWebhookConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg WebhookConfig
		ok  bool
	}{
		{WebhookConfig{URL: "http://127.0.0.1:9/events"}, true},
		{WebhookConfig{URL: "events.example:80"}, false},
		{WebhookConfig{URL: "http://x/", QueueSize: -1}, false},
		{WebhookConfig{URL: "http://x/", FlushInterval: -time.Second}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: %v", tc.cfg, err)
		}
	}
}

func TestLogCollector(t *testing.T) {
	var buf bytes.Buffer
	c := Multi(Log(slog.New(slog.NewTextHandler(&buf, nil))))
	c.Collect(Event{Type: MessageDropped, Tenant: "t", ClientID: "c", Topic: "a/b", Reason: "queue_full", Count: 3})
	for _, want := range []string{"mqtt event", "type=message_dropped", "tenant=t", "client=c", "topic=a/b", "reason=queue_full", "count=3"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log %q lacks %q", buf.String(), want)
		}
	}
}
