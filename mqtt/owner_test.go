package mqtt_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// TestSessionsBelongToTheirUser (issue 14): a client ID's session and live
// connection belong to the user who made them. Before, user mallory
// connecting with alice's client ID took over alice's live connection on
// any frontend, resumed her persistent session (her subscriptions, without
// an ACL check, and her queued messages) or discarded it with a clean
// start.
func TestSessionsBelongToTheirUser(t *testing.T) {
	hash, err := auth.HashPassword([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("alice:"+hash+"\nmallory:"+hash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := auth.NewFile(auth.FileConfig{UsersFile: users, AllowAnonymous: true, DefaultAllow: true})
	if err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, 2, func(c *mqtt.Config) { c.Auth = a })
	addrA, addrB := e.addr(0), e.addr(1)
	e.mu.Lock()
	fa := e.fronts[0]
	e.mu.Unlock()

	// connectAs connects user ("": anonymous) with clientID and returns
	// the CONNACK's code and session present.
	connectAs := func(addr string, v packet.Version, user, clientID string, clean bool) (*rawClient, packet.ReasonCode, bool) {
		t.Helper()
		c := dialRaw(t, addr, v)
		cp := &packet.Connect{ClientID: clientID, CleanStart: clean, KeepAlive: 60}
		if user != "" {
			cp.UsernameFlag, cp.Username, cp.PasswordFlag, cp.Password = true, user, true, []byte("pw")
		}
		if v == packet.V5 && !clean {
			cp.Properties.SessionExpiryInterval, cp.Properties.HasSessionExpiryInterval = 600, true
		}
		ack := c.connect(cp)
		return c, ack.ReasonCode, ack.SessionPresent
	}
	refused := func(v packet.Version) packet.ReasonCode {
		if v == packet.V5 {
			return packet.NotAuthorized
		}
		return packet.ConnRefusedNotAuthorized
	}

	for _, v := range []packet.Version{packet.V5, packet.V311} {
		t.Run("Persistent"+v.String(), func(t *testing.T) {
			id := "alices-device-" + v.String()
			alice, code, _ := connectAs(addrA, v, "alice", id, false)
			if code != 0 {
				t.Fatalf("alice: CONNACK %s", code)
			}
			alice.subscribe(1, packet.Subscription{Filter: "alice/" + v.String() + "/#", QoS: 1})
			alice.disconnect()
			pub, _, _ := connectAs(addrB, packet.V5, "", "pub-"+v.String(), true)
			pub.publish(&packet.Publish{Topic: "alice/" + v.String() + "/private", QoS: 1, PacketID: 1, Payload: []byte("for alice")})
			pub.disconnect()

			// Neither another user nor an anonymous client resumes her
			// session, or discards it with a clean start, on either frontend.
			for _, tc := range []struct {
				addr  string
				user  string
				clean bool
			}{{addrA, "mallory", false}, {addrB, "mallory", false}, {addrB, "mallory", true}, {addrA, "", false}, {addrB, "", true}} {
				c, code, present := connectAs(tc.addr, v, tc.user, id, tc.clean)
				if code != refused(v) || present {
					t.Fatalf("%q (clean %v) with alice's client ID: CONNACK %s, session present %v; want %s", tc.user, tc.clean, code, present, refused(v))
				}
				c.closed()
			}
			alice, code, present := connectAs(addrB, v, "alice", id, false)
			if code != 0 || !present {
				t.Fatalf("alice again: CONNACK %s, session present %v", code, present)
			}
			if p := alice.nextPublish(); string(p.Payload) != "for alice" {
				t.Fatalf("alice got %q", p.Payload)
			}
			// While she is connected, nobody else takes the client ID.
			c, code, _ := connectAs(addrA, v, "mallory", id, true)
			if code != refused(v) {
				t.Fatalf("mallory with alice's live client ID: CONNACK %s", code)
			}
			c.closed()
			alice.alive()
			alice.disconnect()
		})
	}

	t.Run("LiveClean", func(t *testing.T) {
		// A clean connection has no inbox record: the frontends refuse,
		// the one that holds it (a claim) and the local one.
		alice, code, _ := connectAs(addrA, packet.V5, "alice", "alice-clean", true)
		if code != 0 {
			t.Fatalf("alice: CONNACK %s", code)
		}
		for _, addr := range []string{addrA, addrB} {
			for _, user := range []string{"mallory", ""} {
				c, code, _ := connectAs(addr, packet.V5, user, "alice-clean", true)
				if code != packet.NotAuthorized {
					t.Fatalf("%q on %s with alice's live client ID: CONNACK %s", user, addr, code)
				}
				c.closed()
			}
		}
		alice.alive()
		// A claim of another user is refused and closes nothing; one of
		// hers takes over, as before.
		ahead := time.Now().Add(time.Hour).UnixNano()
		if closed, refused := mqtt.DeliverClaimOf(fa, auth.DefaultTenant, "alice-clean", "mallory", ahead); closed != 0 || !refused {
			t.Fatalf("mallory's claim: closed %d, refused %v", closed, refused)
		}
		alice.alive()
		// Her own newer connection takes the client ID over.
		nu, code, _ := connectAs(addrB, packet.V5, "alice", "alice-clean", true)
		if code != 0 {
			t.Fatalf("alice's second connection: CONNACK %s", code)
		}
		alice.takenOverWithin(time.Second)
		nu.disconnect()
		// Once she is gone, the client ID is free (a clean session leaves nothing).
		c, code, _ := connectAs(addrA, packet.V5, "mallory", "alice-clean", true)
		if code != 0 {
			t.Fatalf("mallory after alice left: CONNACK %s", code)
		}
		c.disconnect()
	})
}
