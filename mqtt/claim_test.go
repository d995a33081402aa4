package mqtt_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// closedWithin checks that the server closes a 3.x connection (no
// DISCONNECT in 3.x) within d.
func (c *rawClient) closedWithin(d time.Duration) {
	c.t.Helper()
	start := time.Now()
	c.closed()
	if took := time.Since(start); took > d {
		c.t.Fatalf("the old connection closed %v after the new one's CONNACK", took)
	}
}

// alive checks that the connection still answers a PINGREQ.
func (c *rawClient) alive() {
	c.t.Helper()
	c.send(&packet.Pingreq{})
	if p := c.next(); p.Type() != packet.PINGRESP {
		c.t.Fatalf("got %s, want PINGRESP", p.Type())
	}
}

// TestOneConnectionPerClientID: MQTT-3.1.4-3 across frontends for every
// kind of session. Before claims (claim.go) a clean session's connection
// on one frontend stayed open when the client connected on another (jepsen
// mqtt-takeover × kill-frontend: pairs open together for up to 17 s).
func TestOneConnectionPerClientID(t *testing.T) {
	e := startEnv(t, 2, func(c *mqtt.Config) { c.InboxPollInterval = time.Hour })
	a, b := e.addr(0), e.addr(1)
	e.mu.Lock()
	fa, fb := e.fronts[0], e.fronts[1]
	e.mu.Unlock()

	t.Run("CleanV5", func(t *testing.T) {
		old := connectRaw(t, a, packet.V5, "one-1")
		nu := connectRaw(t, b, packet.V5, "one-1")
		old.takenOverWithin(time.Second)
		nu.alive()
		nu.disconnect()
	})

	t.Run("CleanV311", func(t *testing.T) {
		old := connectRaw(t, a, packet.V311, "one-2")
		nu := connectRaw(t, b, packet.V311, "one-2")
		old.closedWithin(time.Second)
		nu.alive()
		nu.disconnect()
	})

	t.Run("CleanThenPersistent", func(t *testing.T) {
		// No session in the inbox names the clean connection: only its
		// claim closes it.
		old := connectRaw(t, a, packet.V5, "one-3")
		nu := dialRaw(t, b, packet.V5)
		if nu.persistent("one-3", 60, nil) {
			t.Fatal("session present after a clean session")
		}
		old.takenOverWithin(time.Second)
		nu.alive()
		nu.disconnect()
	})

	t.Run("PersistentThenClean", func(t *testing.T) {
		old := dialRaw(t, a, packet.V5)
		old.persistent("one-4", 60, nil)
		nu := connectRaw(t, b, packet.V5, "one-4")
		old.takenOverWithin(time.Second)
		nu.alive()
		nu.disconnect()
	})

	t.Run("PeerMarkedDown", func(t *testing.T) {
		// B failed to reach A a moment ago: the CONNECT does not wait for
		// A, but A is still told, and closes its connection.
		old := connectRaw(t, a, packet.V5, "one-5")
		mqtt.MarkPeerDown(fb, fa)
		nu := connectRaw(t, b, packet.V5, "one-5")
		old.takenOverWithin(2 * time.Second)
		nu.alive()
		nu.disconnect()
	})

	t.Run("OlderClaimIgnored", func(t *testing.T) {
		c := connectRaw(t, a, packet.V5, "one-6")
		// A claim stamped before the connection (a CONNECT elsewhere that
		// lost the race) leaves it open.
		if n := mqtt.DeliverClaim(fa, auth.DefaultTenant, "one-6", time.Now().Add(-time.Minute).UnixNano()); n != 0 {
			t.Fatalf("an older claim closed %d connections", n)
		}
		c.alive()
		// One stamped by a clock an hour ahead closes it, and moves A's
		// clock past it: the client's next CONNECT on A is the newer one.
		ahead := time.Now().Add(time.Hour).UnixNano()
		if n := mqtt.DeliverClaim(fa, auth.DefaultTenant, "one-6", ahead); n != 1 {
			t.Fatalf("a newer claim closed %d connections, want 1", n)
		}
		c.takenOverWithin(time.Second)
		c = connectRaw(t, a, packet.V5, "one-6")
		if n := mqtt.DeliverClaim(fa, auth.DefaultTenant, "one-6", ahead); n != 0 {
			t.Fatalf("the connection made after the claim was closed by it (%d)", n)
		}
		c.alive()
		c.disconnect()
	})
}

// TestClaimDoesNotWaitForADeadFrontend: a frontend that gossip still lists
// but that is gone (nothing listens at its address) refuses the claim at
// once, and the CONNECT does not wait for it; before, the claim waited for
// the connection to become ready until its timeout, holding every CONNECT
// up (jepsen mqtt-will × kill-frontend: reconnects without a CONNACK for
// 2 s while a frontend was dead).
func TestClaimDoesNotWaitForADeadFrontend(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	e := startEnv(t, 1, func(c *mqtt.Config) {
		live := c.Frontends
		c.Frontends = func() []string { return append(live(), dead) }
	})
	for i := 0; i < 3; i++ {
		start := time.Now()
		c := connectRaw(t, e.addr(0), packet.V5, fmt.Sprintf("dead-peer-%d", i))
		// Generous: the claim's timeout is 1 s; refusing takes ms.
		if took := time.Since(start); took > 800*time.Millisecond {
			t.Fatalf("CONNECT %d took %v: it waited for a dead frontend", i, took)
		}
		c.disconnect()
	}
}

// TestClaimReachesARestartedFrontend: a frontend that was killed and came
// back is waited for again as soon as it is heard from (its first claim),
// and the claims queued for it are not held in the retry backoff. Before,
// the CONNECT on the surviving frontend took the restarted one as down for
// 5 s after its last failure and did not wait for it, and the claim reached
// it after up to a second's backoff (jepsen mqtt-takeover × kill-frontend:
// the older connection, on the restarted frontend, open 852 ms after the
// newer one's CONNACK).
func TestClaimReachesARestartedFrontend(t *testing.T) {
	e := startEnv(t, 3, func(c *mqtt.Config) { c.InboxPollInterval = time.Hour })
	a := e.addr(0)
	e.mu.Lock()
	fa, fb := e.fronts[0], e.fronts[1]
	e.mu.Unlock()

	// B dies, as a killed process: its listeners and its node.
	fb.Close()
	e.cluster.StopNode(1)
	// CONNECTs on A meanwhile: their claims to B fail, A takes B as down
	// and retries with a growing backoff.
	for i := 0; i < 3; i++ {
		connectRaw(t, a, packet.V5, fmt.Sprintf("away-%d", i)).disconnect()
		time.Sleep(400 * time.Millisecond)
	}
	e.cluster.StartNode(1)
	e.mu.Lock()
	fb2 := e.fronts[3]
	e.mu.Unlock()
	if fb2 == nil {
		t.Fatal("the restarted node has no frontend")
	}
	b := fb2.Addrs()[0].String()

	// The client connects on the restarted B: B's claim tells A that B runs.
	old := connectRaw(t, b, packet.V5, "back-1")
	if mqtt.PeerIsDown(fa, fb2) {
		t.Fatal("A still takes B as down after B's claim")
	}
	// Then on A: A waits for B to close the older connection before its
	// CONNACK, so the DISCONNECT is there to read at once.
	nu := connectRaw(t, a, packet.V5, "back-1")
	old.takenOverWithin(200 * time.Millisecond)
	nu.alive()
	nu.disconnect()
}
