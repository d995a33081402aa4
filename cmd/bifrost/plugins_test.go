package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/settings"
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

// The config file's [tenant-defaults] and [tenants.<name>] tables are the
// setting provider; --settings-webhook asks a web service over them; bad
// tables and flags are clear errors.
func TestSettingsConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bifrost.toml")
	body := "[tenant-defaults]\nmax-connections = 100\npublish-rate = 50.5\n" +
		"[tenants.acme]\nmax-connections = 10\nmax-qos = 1\ninbox-queue-length = 500\ninbox-drop-policy = \"oldest\"\n" +
		"[tenants.beta]\ninbound-bytes-per-second = 1048576\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(cfg string, args ...string) (*mqttFlags, error) {
		fs := newFlagSet("standalone", io.Discard)
		var m mqttFlags
		m.register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return &m, applyConfigFile(fs, cfg, m.configFileTables)
	}
	m, err := parse(cfg)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := m.plugins.settingsProvider(log, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := map[string]settings.Settings{
		"acme":  {MaxConnections: 10, PublishRate: 50.5, MaxQoS: 1, InboxQueueLength: 500, DropOldest: true},
		"beta":  {MaxConnections: 100, PublishRate: 50.5, MaxQoS: 2, InboundBytesPerSecond: 1 << 20},
		"other": {MaxConnections: 100, PublishRate: 50.5, MaxQoS: 2},
	}
	for tenant, w := range want {
		if got := p.Settings(ctx, tenant); got != w {
			t.Errorf("%s: %+v, want %+v", tenant, got, w)
		}
	}
	// Without a config file: no limits.
	m, err = parse("")
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := m.plugins.settingsProvider(log, nil); p.Settings(ctx, "x") != settings.Default() {
		t.Errorf("no config file: %+v", p.Settings(ctx, "x"))
	}
	m, err = parse(cfg, "--settings-webhook", "http://127.0.0.1:9/settings", "--settings-webhook-timeout", "50ms")
	if err != nil {
		t.Fatal(err)
	}
	if p, err := m.plugins.settingsProvider(log, nil); err != nil {
		t.Fatal(err)
	} else if got := p.Settings(ctx, "acme"); got != want["acme"] {
		t.Errorf("a webhook that does not answer: %+v, want the config file's %+v", got, want["acme"])
	}
	for _, tc := range []struct{ body, want string }{
		{"[tenants.acme]\nmax-conections = 1\n", `tenants.acme: max-conections: unknown setting`},
		{"[tenants.\"a b\"]\nmax-connections = 1\n", `tenants.a b:`},
		{"[tenant-defaults]\ninbox-drop-policy = \"all\"\n", `tenant-defaults: inbox-drop-policy: want "oldest" or "newest"`},
		{"tenants = 3\n", "want [tenants.<name>] tables"},
	} {
		bad := filepath.Join(dir, "bad.toml")
		if err := os.WriteFile(bad, []byte(tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := parse(bad); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.body, err, tc.want)
		}
	}
	for _, args := range [][]string{
		{"--settings-webhook", "127.0.0.1:9"},
		{"--settings-webhook", "http://127.0.0.1:9", "--settings-webhook-timeout", "0s"},
	} {
		m, err := parse("", args...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.plugins.settingsProvider(log, nil); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}
