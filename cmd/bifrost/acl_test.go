package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/bifrost-mq/bifrost/mqtt/auth"
)

// TestACLDefaultDeniesWithRules: with [[acl]] rules in the config file and
// no acl-default-allow, what no rule decides is denied (as mosquitto does
// with an ACL file; it was allowed, so one user received another's
// topics); with no rules everything is allowed; an explicit setting wins,
// from the file or the command line.
func TestACLDefaultDeniesWithRules(t *testing.T) {
	dir := t.TempDir()
	hash, err := auth.HashPassword([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:"+hash+"\nbob:"+hash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rules := "[[acl]]\nallow = true\naction = \"all\"\nusers = [\"alice\"]\ntopic = \"alice/#\"\n"
	for _, tc := range []struct {
		name, file string
		args       []string
		want       bool // bob may subscribe to alice/private
	}{
		{"rules, no default", rules, nil, false},
		{"rules, default allow in the file", "acl-default-allow = true\n" + rules, nil, true},
		{"rules, default allow on the command line", rules, []string{"--acl-default-allow"}, true},
		{"rules, default deny on the command line", rules, []string{"--acl-default-allow=false"}, false},
		{"no rules", "", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "bifrost.toml")
			body := "users-file = \"" + users + "\"\n" + tc.file
			if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			fs := newFlagSet("standalone", io.Discard)
			var m mqttFlags
			m.register(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if err := applyConfigFile(fs, cfg, m.configFileTables); err != nil {
				t.Fatal(err)
			}
			a, err := m.authenticator()
			if err != nil {
				t.Fatal(err)
			}
			bob := auth.Identity{Tenant: auth.DefaultTenant, ClientID: "b", Username: "bob"}
			if got := a.Authorize(bob, auth.Subscribe, "alice/private"); got != tc.want {
				t.Fatalf("bob subscribing to alice/private: %v, want %v", got, tc.want)
			}
			alice := auth.Identity{Tenant: auth.DefaultTenant, ClientID: "a", Username: "alice"}
			if !a.Authorize(alice, auth.Subscribe, "alice/private") {
				t.Fatal("alice's own rule does not let her subscribe")
			}
		})
	}
}
