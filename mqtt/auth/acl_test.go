package auth

import (
	"fmt"
	"strings"
	"testing"
)

// usersFile writes a users file of users with cheap hashes.
func usersFile(t testing.TB, users ...string) string {
	var b strings.Builder
	for _, u := range users {
		fmt.Fprintf(&b, "%s:%s\n", u, hash(t, "pw"))
	}
	return writeFile(t, b.String())
}

func newACL(t testing.TB, defaultAllow bool, rules ...Rule) Authenticator {
	t.Helper()
	a, err := NewFile(FileConfig{UsersFile: usersFile(t, "alice", "bob", "admin"), AllowAnonymous: true, ACL: rules, DefaultAllow: defaultAllow})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func user(name, clientID string) Identity {
	return Identity{Tenant: DefaultTenant, ClientID: clientID, Username: name}
}

type check struct {
	id     Identity
	action Action
	topic  string
	want   bool
}

func runChecks(t *testing.T, a Authenticator, checks []check) {
	t.Helper()
	for _, c := range checks {
		if got := a.Authorize(c.id, c.action, c.topic); got != c.want {
			t.Errorf("Authorize(%+v, %v, %q) = %v, want %v", c.id, c.action, c.topic, got, c.want)
		}
	}
}

func TestACLFirstMatchWins(t *testing.T) {
	a := newACL(t, false,
		Rule{Allow: true, Action: "all", Users: []string{"admin"}, Topic: "#"},
		Rule{Allow: true, Action: "all", Users: []string{"admin"}, Topic: "$SYS/#"},
		Rule{Allow: false, Action: "publish", Topic: "devices/+/config"},
		Rule{Allow: true, Action: "all", Topic: "devices/%c/#"},
		Rule{Allow: true, Action: "all", Topic: "users/%u/#"},
		Rule{Allow: true, Action: "subscribe", Users: []string{"*"}, Topic: "public/#"},
		Rule{Allow: true, Action: "publish", Users: []string{"$anonymous"}, Topic: "guests/%c"},
		Rule{Allow: false, Action: "subscribe", Users: []string{"bob"}, Topic: "news/secret"},
		Rule{Allow: true, Action: "subscribe", Users: []string{"alice", "bob"}, Topic: "news/#"},
	)
	alice, bob, admin := user("alice", "a1"), user("alice", "a1"), user("admin", "root")
	bob.Username = "bob"
	anon := user("", "g7")
	runChecks(t, a, []check{
		{admin, Publish, "anything/at/all", true},
		{admin, Subscribe, "#", true},
		{admin, Subscribe, "$SYS/#", true}, // "#" does not cover it; the next rule does
		{alice, Subscribe, "$SYS/#", false},
		// The deny comes first, so even the device itself cannot publish
		// its config.
		{alice, Publish, "devices/a1/config", false},
		{alice, Publish, "devices/a1/state", true},
		{alice, Subscribe, "devices/a1/config", true}, // the deny is publish only
		{alice, Publish, "devices/a2/state", false},
		{alice, Subscribe, "devices/+/state", false},
		{alice, Subscribe, "devices/a1/#", true},
		{alice, Subscribe, "$share/g/devices/a1/#", true},
		{alice, Subscribe, "$share/g/devices/+/#", false},
		{alice, Publish, "users/alice/x", true},
		{alice, Publish, "users/bob/x", false},
		{bob, Subscribe, "users/bob/#", true},
		{alice, Subscribe, "public/news", true},
		{anon, Subscribe, "public/#", true},
		{alice, Publish, "public/news", false}, // subscribe only: default deny
		{anon, Publish, "guests/g7", true},
		{anon, Publish, "guests/a1", false},
		{alice, Publish, "guests/a1", false}, // $anonymous only
		{anon, Publish, "users//x", false},   // %u never matches an anonymous client
		{alice, Subscribe, "news/sport", true},
		{bob, Subscribe, "news/secret", false},
		{alice, Subscribe, "news/secret", true},
		{bob, Subscribe, "news/#", false}, // overlaps the denied news/secret
		{bob, Subscribe, "news/+", false},
		{bob, Subscribe, "news/sport/#", true},
		{anon, Subscribe, "news/sport", false},
		// Invalid input is never authorized.
		{admin, Publish, "a/+", false},
		{admin, Subscribe, "a/#/b", false},
		{admin, Subscribe, "$share/g", false},
		{admin, Action(0), "a", false},
	})
	if a.Authorize(alice, Publish, "x") {
		t.Error("no match must fall to DefaultAllow = false")
	}
	if !newACL(t, true).Authorize(alice, Publish, "x") {
		t.Error("no match must fall to DefaultAllow = true")
	}
}

// A client cannot widen what a %c or %u rule grants by its choice of
// client ID or username; a deny rule with such a value denies.
func TestSubstitutionCannotWiden(t *testing.T) {
	path := usersFile(t, "alice", "a+b", "x/y", "#", "$SYS", "%c")
	a, err := NewFile(FileConfig{UsersFile: path, ACL: []Rule{
		{Allow: true, Action: "all", Topic: "devices/%c/#"},
		{Allow: true, Action: "all", Topic: "users/%u/#"},
		{Allow: true, Action: "subscribe", Topic: "%c/#"},
		{Allow: true, Action: "publish", Topic: "tag/%c-%u"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	runChecks(t, a, []check{
		{user("alice", "+"), Subscribe, "devices/+/#", false},
		{user("alice", "#"), Subscribe, "devices/#", false},
		{user("alice", "x/y"), Publish, "devices/x/y/z", false},
		{user("alice", "x/y"), Subscribe, "devices/x/#", false},
		{user("a+b", "c"), Subscribe, "users/a+b/#", false},
		{user("a+b", "c"), Subscribe, "users/+/#", false},
		{user("x/y", "c"), Publish, "users/x/y/z", false},
		{user("#", "c"), Subscribe, "users/#", false},
		// "%c/#" for a client named "$SYS" would reach $SYS/#.
		{user("alice", "$SYS"), Subscribe, "$SYS/#", false},
		{user("alice", "dev"), Subscribe, "dev/#", true},
		// "%c" in a value is not expanded again.
		{user("%c", "zz"), Publish, "tag/zz-%c", true},
		{user("alice", "%u"), Publish, "tag/%u-alice", true},
		{user("alice", "%u"), Publish, "tag/alice-alice", false},
		// Safe values still work.
		{user("alice", "d1"), Publish, "devices/d1/x", true},
		{user("alice", "d1"), Subscribe, "users/alice/#", true},
		{user("alice", ""), Publish, "devices//x", false}, // no client ID: no match
	})

	// A deny rule fails closed: the client with a wildcard in its ID is
	// denied what the rule covers, instead of slipping past it.
	deny, err := NewFile(FileConfig{UsersFile: path, DefaultAllow: true, ACL: []Rule{
		{Allow: false, Action: "publish", Topic: "devices/%c/locked"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	runChecks(t, deny, []check{
		{user("alice", "d1"), Publish, "devices/d1/locked", false},
		{user("alice", "d1"), Publish, "devices/d2/locked", true},
		{user("alice", "d+"), Publish, "devices/d2/locked", false},
		{user("alice", "d+"), Subscribe, "devices/d2/locked", true}, // the rule is publish only
		{user("alice", ""), Publish, "devices/d2/locked", true},
	})
}

func TestRuleErrors(t *testing.T) {
	path := usersFile(t, "alice")
	for _, tc := range []struct {
		name  string
		users string
		rules []Rule
		want  string
	}{
		{"unknown action", path, []Rule{{Action: "all", Topic: "a"}, {Action: "pub", Topic: "a"}}, `auth: acl[1]: unknown action "pub"`},
		{"no action", path, []Rule{{Topic: "a"}}, `auth: acl[0]: unknown action ""`},
		{"no topic", path, []Rule{{Action: "all"}}, "auth: acl[0]: topic is required"},
		{"bad filter", path, []Rule{{Action: "all", Topic: "a/#/b"}}, `auth: acl[0]: topic "a/#/b" is not a valid MQTT topic filter`},
		{"bad plus", path, []Rule{{Action: "all", Topic: "a/b+"}}, "acl[0]: topic"},
		{"wildcard next to %c", path, []Rule{{Action: "all", Topic: "a/+%c"}}, "acl[0]: topic"},
		{"share", path, []Rule{{Action: "subscribe", Topic: "$share/g/a"}}, "acl[0]: topic"},
		{"user without users file", "", []Rule{{Action: "all", Topic: "a", Users: []string{"$anonymous", "alice"}}}, `auth: acl[0]: names user "alice"`},
		{"%u without users file", "", []Rule{{Action: "all", Topic: "a"}, {Action: "all", Topic: "u/%u"}}, "auth: acl[1]: topic \"u/%u\" uses %u"},
	} {
		cfg := FileConfig{UsersFile: tc.users, ACL: tc.rules}
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v, want %q", tc.name, err, tc.want)
		}
		if _, err := NewFile(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewFile = %v, want %q", tc.name, err, tc.want)
		}
	}
	// Without a users file, rules for everyone and anonymous clients work.
	a, err := NewFile(FileConfig{ACL: []Rule{
		{Allow: true, Action: "all", Users: []string{"$anonymous"}, Topic: "clients/%c/#"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Authorize(user("", "k"), Publish, "clients/k/x") || a.Authorize(user("", "k"), Publish, "clients/j/x") {
		t.Error("anonymous client-ID rule without a users file")
	}
}

func BenchmarkAuthorize(b *testing.B) {
	rules := []Rule{
		{Allow: true, Action: "all", Users: []string{"admin"}, Topic: "#"},
		{Allow: false, Action: "publish", Topic: "devices/+/config"},
	}
	for i := range 20 {
		rules = append(rules, Rule{Allow: true, Action: "subscribe", Users: []string{fmt.Sprintf("team%d", i)}, Topic: fmt.Sprintf("teams/%d/#", i)})
	}
	rules = append(rules,
		Rule{Allow: true, Action: "all", Topic: "devices/%c/#"},
		Rule{Allow: true, Action: "all", Topic: "users/%u/#"},
	)
	a, err := NewFile(FileConfig{UsersFile: usersFile(b, "alice", "admin"), ACL: rules})
	if err != nil {
		b.Fatal(err)
	}
	alice := user("alice", "sensor-0042")
	for _, bc := range []struct {
		name   string
		action Action
		topic  string
	}{
		{"publish/first-rule-miss-to-default", Publish, "other/topic/here"},
		{"publish/%c", Publish, "devices/sensor-0042/telemetry/temp"},
		{"subscribe/%u", Subscribe, "users/alice/inbox/+"},
		{"subscribe/share", Subscribe, "$share/g/devices/sensor-0042/#"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				a.Authorize(alice, bc.action, bc.topic)
			}
		})
	}
}
