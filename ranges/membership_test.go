package ranges_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestGossipAdvertisesAHostName: a member that advertises a host name (as a
// container advertises its service name) starts, and its peers dial the
// name's address. memberlist alone refuses a name.
func TestGossipAdvertisesAHostName(t *testing.T) {
	start := func(name, bind, adv string, join []string) *ranges.Membership {
		t.Helper()
		m, err := ranges.NewMembership(ranges.MembershipConfig{Name: name, BindAddr: bind, AdvertiseAddr: adv, Join: join, Fast: true},
			func() ranges.MemberMeta { return ranges.MemberMeta{} }, func() []byte { return nil }, func([]byte) {})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	seed := rangestest.FreeAddr(t)
	a := start("a", seed, "", nil)
	bind := rangestest.FreeAddr(t)
	_, port, _ := net.SplitHostPort(bind)
	start("b", bind, "localhost:"+port, []string{seed})
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, m := range a.Members() {
			if m.Name == "b" {
				if m.GossipAddr != bind {
					t.Fatalf("b's gossip address is %q, want %q", m.GossipAddr, bind)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("a never saw b: %+v", a.Members())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFrontendsFollowMembership: the frontends list, kept between calls,
// follows members joining and leaving.
func TestFrontendsFollowMembership(t *testing.T) {
	start := func(name, grpcAddr string, join []string) *ranges.Membership {
		t.Helper()
		m, err := ranges.NewMembership(ranges.MembershipConfig{Name: name, BindAddr: rangestest.FreeAddr(t), Join: join, Fast: true},
			func() ranges.MemberMeta { return ranges.MemberMeta{GRPC: grpcAddr, MQTT: grpcAddr != ""} }, func() []byte { return nil }, func([]byte) {})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return m
	}
	a := start("a", "fe-a", nil)
	t.Cleanup(func() { a.Close() })
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := fmt.Sprint(a.Frontends())
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("frontends %s, want %s", got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("[fe-a]")
	seed := a.Members()[0].GossipAddr
	b := start("b", "fe-b", []string{seed})
	c := start("c", "", []string{seed}) // a store without a frontend
	t.Cleanup(func() { c.Close() })
	waitFor("[fe-a fe-b]")
	b.Close()
	waitFor("[fe-a]")
}
