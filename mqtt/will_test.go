package mqtt_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/coprocessors/inbox"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// TestCleanSessionWillInInbox: a clean session's will is kept in the inbox
// while its connection lives (a transient record, owned by the
// connection), so that the inbox scheduler publishes it if the frontend
// dies; before, it lived in the frontend's memory only (jepsen mqtt-will ×
// kill-frontend: 5 of 171 wills lost). It is published once when the
// connection is lost, not at all after a DISCONNECT, and a later
// connection of the client ID finds no session in it.
func TestCleanSessionWillInInbox(t *testing.T) {
	e := startEnv(t, 1, nil)
	addr := e.addr(0)
	ib := inbox.NewClient(e.cluster.Nodes[0].Router())
	record := func(clientID string) *inboxpb.Meta {
		t.Helper()
		q, err := ib.Query(context.Background(), &inboxpb.QueryRequest{Op: &inboxpb.QueryRequest_Get{Get: &inboxpb.GetRequest{Tenant: auth.DefaultTenant, Inbox: clientID}}})
		if err != nil {
			t.Fatal(err)
		}
		return q.Meta
	}
	watch := connectRaw(t, addr, packet.V5, "cw-watch")
	watch.subscribe(1, packet.Subscription{Filter: "cw/#", QoS: 1})
	withWill := func(v packet.Version, clientID, topic string) *rawClient {
		c := dialRaw(t, addr, v)
		ack := c.connect(&packet.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 60,
			Will: &packet.Will{Topic: topic, QoS: 1, Payload: []byte(clientID)}})
		if ack.ReasonCode != 0 || ack.SessionPresent {
			t.Fatalf("CONNACK %+v", ack)
		}
		return c
	}

	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run("Lost"+v.String(), func(t *testing.T) {
			id := "cw-lost-" + v.String()
			c := withWill(v, id, "cw/lost")
			m := record(id)
			if m == nil || !m.Transient || m.Will == nil || string(m.Will.Payload) != id || m.Owner == "" {
				t.Fatalf("the will is not in the inbox while the connection lives: %+v", m)
			}
			c.nc.Close()
			if p := watch.nextPublish(); p.Topic != "cw/lost" || string(p.Payload) != id {
				t.Fatalf("will: %+v", p)
			}
			watch.expectNone(time.Second) // once
			deadline := time.Now().Add(5 * time.Second)
			for record(id) != nil {
				if time.Now().After(deadline) {
					t.Fatalf("the will record stays after its will was published: %+v", record(id))
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}

	t.Run("Disconnect", func(t *testing.T) {
		c := withWill(packet.V5, "cw-bye", "cw/bye")
		c.disconnect()
		watch.expectNone(time.Second)
		if m := record("cw-bye"); m != nil {
			t.Fatalf("the will record stays after a DISCONNECT: %+v", m)
		}
	})

	t.Run("NotASession", func(t *testing.T) {
		c := withWill(packet.V5, "cw-ses", "cw/ses")
		_ = c
		// The client comes back asking for a session: the will record is
		// none (session present 0), and the old connection's will goes
		// out as it is taken over.
		nu := dialRaw(t, addr, packet.V5)
		if nu.persistent("cw-ses", 60, nil) {
			t.Fatal("session present: a clean session's will record was resumed as a session")
		}
		if p := watch.nextPublish(); p.Topic != "cw/ses" {
			t.Fatalf("will of the taken-over connection: %+v", p)
		}
		watch.expectNone(time.Second)
		nu.disconnect()
	})
}

// failingDetach fails the next n detaches with an error, as an inbox range
// that is electing a leader does.
type failingDetach struct {
	mqtt.Inbox
	n atomic.Int32
}

func (f *failingDetach) Mutate(ctx context.Context, in *inboxpb.Input) (*inboxpb.Output, error) {
	if in.GetDetach() != nil && f.n.Add(-1) >= 0 {
		return nil, errors.New("range unavailable (test)")
	}
	return f.Inbox.Mutate(ctx, in)
}

// TestDisconnectWhoseDetachFails: a normal DISCONNECT whose detach fails
// at first is tried again, so the session is not left to the orphan check,
// which takes the connection for lost and publishes its will (jepsen
// mqtt-will × kill-minority: 3 wills published 17 s after their clients'
// DISCONNECT); the same for a persistent session's will.
func TestDisconnectWhoseDetachFails(t *testing.T) {
	fd := &failingDetach{}
	e := startEnv(t, 1, func(c *mqtt.Config) {
		fd.Inbox = c.Inbox
		c.Inbox = fd
	})
	addr := e.addr(0)
	watch := connectRaw(t, addr, packet.V5, "df-watch")
	watch.subscribe(1, packet.Subscription{Filter: "df/#", QoS: 1})

	c := dialRaw(t, addr, packet.V5)
	if ack := c.connect(&packet.Connect{ClientID: "df-clean", CleanStart: true, KeepAlive: 60,
		Will: &packet.Will{Topic: "df/clean", QoS: 1, Payload: []byte("x")}}); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %s", ack.ReasonCode)
	}
	p := dialRaw(t, addr, packet.V5)
	p.persistent("df-pers", 60, &packet.Will{Topic: "df/pers", QoS: 1, Payload: []byte("y")})
	fd.n.Store(2)
	c.disconnect()
	fd.n.Store(2)
	p.disconnect()
	// The scheduler's orphan check runs every 200 ms here.
	watch.expectNone(3 * time.Second)
}
