package main

import (
	"io"
	"log/slog"
	"testing"

	"github.com/bifrost-mq/bifrost/mqtt/auth"
)

// TestAuthWebhookFlags: --auth-webhook gives the webhook provider; a bad
// URL, a bad timeout or a users file beside it is a clear error.
func TestAuthWebhookFlags(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		usesFile bool
		ok       bool
	}{
		{[]string{"--auth-webhook", "http://127.0.0.1:9/hook", "--auth-webhook-cache-ttl", "0"}, false, true},
		{[]string{"--auth-webhook", "127.0.0.1:9"}, false, false},
		{[]string{"--auth-webhook", "http://127.0.0.1:9/", "--auth-webhook-timeout", "0s"}, false, false},
		{[]string{"--auth-webhook", "http://127.0.0.1:9/", "--auth-webhook-cache-ttl", "-1s"}, false, false},
		{[]string{"--auth-webhook", "http://127.0.0.1:9/"}, true, false},
		{nil, false, true},
	} {
		fs := newFlagSet("standalone", io.Discard)
		var m mqttFlags
		m.register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		a, err := m.plugins.authProvider(auth.AllowAll(), tc.usesFile, nil, nil)
		if (err == nil) != tc.ok {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		if _, isHook := a.(*auth.Webhook); err == nil && isHook != (len(tc.args) > 0) {
			t.Errorf("%v: provider %T", tc.args, a)
		}
	}
}

// TestEventsFlags: --events-log and --events-webhook give their collectors,
// both at once too; a bad URL is a clear error.
func TestEventsFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
		none bool
	}{
		{nil, true, true},
		{[]string{"--events-log"}, true, false},
		{[]string{"--events-log", "--events-webhook", "http://127.0.0.1:9/events"}, true, false},
		{[]string{"--events-webhook", "127.0.0.1:9"}, false, true},
	} {
		fs := newFlagSet("standalone", io.Discard)
		var m mqttFlags
		m.register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		c, err := m.plugins.eventCollector(slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
		if (err == nil) != tc.ok || (c == nil) != tc.none {
			t.Errorf("%v: %T, %v", tc.args, c, err)
		}
		if cl, ok := c.(io.Closer); ok {
			cl.Close()
		}
	}
}
