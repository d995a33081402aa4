package ranges_test

import (
	"bytes"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestGossipKeyKeepsOutsidersOut (issue 17): with a gossip key, a member
// with the key joins, and one without it or with another key does not: its
// join fails and the members never list it.
func TestGossipKeyKeepsOutsidersOut(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	start := func(name string, key []byte, join ...string) (*ranges.Membership, error) {
		m, err := ranges.NewMembership(ranges.MembershipConfig{
			Name: name, BindAddr: rangestest.FreeAddr(t), Join: join, Fast: true, SecretKey: key,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		}, func() ranges.MemberMeta { return ranges.MemberMeta{Role: ranges.RoleFrontend} }, nil, func([]byte) {})
		if err == nil {
			t.Cleanup(func() { m.Close() })
		}
		return m, err
	}
	seed, err := start("seed", key)
	if err != nil {
		t.Fatal(err)
	}
	seedAddr := seed.Members()[0].GossipAddr
	if _, err := start("member", key, seedAddr); err != nil {
		t.Fatal(err)
	}
	// The outsiders join after the member: once the member is listed, their
	// joins (which fail or succeed at once) are over.
	if _, err := start("no-key", nil, seedAddr); err != nil {
		t.Fatal(err)
	}
	if _, err := start("other-key", bytes.Repeat([]byte{8}, 32), seedAddr); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(seed.Members()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the member with the key never joined: %v", seed.Members())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A join is one synchronous push-pull with the seed: an outsider the
	// seed accepted is listed by now.
	for _, m := range seed.Members() {
		if m.Name != "seed" && m.Name != "member" {
			t.Errorf("an outsider joined: %+v", m)
		}
	}
	if _, err := start("bad-key", []byte("short"), seedAddr); err == nil {
		t.Error("a 5-byte gossip key was accepted")
	}
}
