package mqtt_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/listener"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// TestAuthAndACL: a users file with bcrypt passwords and ACL rules with %c
// and %u, as the config file gives them.
func TestAuthAndACL(t *testing.T) {
	hash, err := auth.HashPassword([]byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("alice:"+hash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := auth.NewFile(auth.FileConfig{UsersFile: users, ACL: []auth.Rule{
		{Allow: true, Action: "all", Topic: "users/%u/#"},
		{Allow: true, Action: "subscribe", Topic: "public/#"},
		{Allow: false, Action: "all", Topic: "#"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, 1, func(c *mqtt.Config) { c.Auth = a })
	addr := e.addr(0)

	checkConnacks(t, addr, []connectCase{
		{packet.V5, "alice", "wrong", packet.BadUserNameOrPassword},
		{packet.V311, "alice", "wrong", packet.ConnRefusedBadUsernamePassword},
		{packet.V5, "", "", packet.NotAuthorized}, // anonymous not allowed
		{packet.V311, "mallory", "s3cret", packet.ConnRefusedBadUsernamePassword},
	})

	c := dialRaw(t, addr, packet.V5)
	cp := &packet.Connect{ClientID: "alice-1", CleanStart: true, UsernameFlag: true, Username: "alice", PasswordFlag: true, Password: []byte("s3cret")}
	if ack := c.connect(cp); ack.ReasonCode != 0 {
		t.Fatalf("alice: CONNACK %s", ack.ReasonCode)
	}
	sa := c.subscribe(1, packet.Subscription{Filter: "users/alice/#", QoS: 1},
		packet.Subscription{Filter: "users/bob/#", QoS: 1}, packet.Subscription{Filter: "public/news", QoS: 1})
	if sa.ReasonCodes[0] != 1 || sa.ReasonCodes[1] != packet.NotAuthorized || sa.ReasonCodes[2] != 1 {
		t.Fatalf("SUBACK %v", sa.ReasonCodes)
	}
	if code := c.publish(&packet.Publish{Topic: "public/news", QoS: 1, PacketID: 1, Payload: []byte("x")}); code != packet.NotAuthorized {
		t.Fatalf("publish to a subscribe-only topic: %s", code)
	}
	c.expectNone(300 * time.Millisecond) // the refused message went nowhere
	c.publish(&packet.Publish{Topic: "users/alice/inbox", QoS: 1, PacketID: 2, Payload: []byte("mine")})
	if p := c.nextPublish(); string(p.Payload) != "mine" {
		t.Fatalf("got %q", p.Payload)
	}
}

// TestFrontendKilledClientsCarryOn: a frontend dies with clients connected;
// they reconnect to another frontend and carry on, and the dead frontend's
// routes do not keep messages from the living.
func TestFrontendKilledClientsCarryOn(t *testing.T) {
	e := startEnv(t, 2, func(c *mqtt.Config) { c.DeadFrontendAfter = 500 * time.Millisecond })
	subA := connectRaw(t, e.addr(0), packet.V311, "carry-sub")
	subA.subscribe(1, packet.Subscription{Filter: "carry/#", QoS: 1})
	pub := connectRaw(t, e.addr(1), packet.V311, "carry-pub")
	pub.publish(&packet.Publish{Topic: "carry/1", QoS: 1, PacketID: 1, Payload: []byte("1")})
	if p := subA.nextPublish(); string(p.Payload) != "1" {
		t.Fatalf("before: %q", p.Payload)
	}

	e.mu.Lock()
	dead := e.fronts[0]
	e.mu.Unlock()
	dead.Close() // the frontend goes; its store stays
	if subA.closed() != nil {
		t.Fatal("3.1.1 client got a DISCONNECT")
	}
	// The client reconnects to the living frontend and resubscribes (its
	// session was clean).
	subB := connectRaw(t, e.addr(1), packet.V311, "carry-sub")
	subB.subscribe(1, packet.Subscription{Filter: "carry/#", QoS: 1})
	for i := 2; i < 12; i++ {
		pub.publish(&packet.Publish{Topic: "carry/x", QoS: 1, PacketID: uint16(i), Payload: []byte{byte(i)}})
	}
	for i := 2; i < 12; i++ {
		if p := subB.nextPublish(); p.Payload[0] != byte(i) {
			t.Fatalf("after: message %d got %v", i, p.Payload)
		}
	}
}

// TestDeadFrontendRoutesRemoved: routes of a frontend that was killed (so
// never removed its routes) and is gone from gossip are removed by the
// frontends that fail to reach it, after DeadFrontendAfter.
func TestDeadFrontendRoutesRemoved(t *testing.T) {
	e := startEnv(t, 1, func(c *mqtt.Config) { c.DeadFrontendAfter = 500 * time.Millisecond })
	d := dist.NewClient(e.cluster.Nodes[0].Router())
	ctx := context.Background()
	dead := &distpb.Route{Tenant: auth.DefaultTenant, Subscription: "dead/#",
		Receiver: &distpb.Receiver{Kind: 1, Id: "fe:127.0.0.1:1#killed"}}
	if _, err := d.AddRoute(ctx, &distpb.AddRouteRequest{Route: dead}); err != nil {
		t.Fatal(err)
	}
	live := connectRaw(t, e.addr(0), packet.V5, "dead-live")
	live.subscribe(1, packet.Subscription{Filter: "dead/#"})
	pub := connectRaw(t, e.addr(0), packet.V5, "dead-pub")
	deadline := time.Now().Add(20 * time.Second)
	for {
		pub.publish(&packet.Publish{Topic: "dead/x", Payload: []byte("tick")})
		if p := live.nextPublish(); string(p.Payload) != "tick" {
			t.Fatalf("got %q", p.Payload)
		}
		resp, err := d.Match(ctx, &distpb.MatchRequest{Tenant: auth.DefaultTenant, Topics: []string{"dead/x"}})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(resp.Topics[0].Matched); n == 1 {
			if got := resp.Topics[0].Matched[0].Receiver.Id; got == dead.Receiver.Id {
				t.Fatal("the live route went, the dead stayed")
			}
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("the dead frontend's route is still there: %d routes", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestGatewayFrontend: `bifrost frontend --join` — a frontend on a gateway
// (no data) reaches subscribers on a store's frontend and back.
func TestGatewayFrontend(t *testing.T) {
	e := startEnv(t, 1, nil)
	gw, err := ranges.StartGateway(ranges.GatewayConfig{
		Name: "gw", GossipAddr: rangestest.FreeAddr(t), Join: []string{e.cluster.GossipAddr(0)},
		GRPCAddr: "", MQTT: true, FastGossip: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := gw.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	lisAddr := rangestest.FreeAddr(t)
	g := grpc.NewServer()
	front, err := mqtt.New(mqtt.Config{
		ReceiverID: mqtt.NewReceiverID(lisAddr),
		Listeners:  []listener.Config{{Kind: listener.TCP, Addr: "127.0.0.1:0"}},
		Dist:       dist.NewClient(gw.Router()), Retain: retain.NewClient(gw.Router()),
	})
	if err != nil {
		t.Fatal(err)
	}
	front.RegisterService(g)
	lis, err := listen(lisAddr)
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	if err := front.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { front.Close() })

	onGW := connectRaw(t, front.Addrs()[0].String(), packet.V5, "gw-sub")
	onGW.subscribe(1, packet.Subscription{Filter: "gw/#", QoS: 1})
	onStore := connectRaw(t, e.addr(0), packet.V5, "store-sub")
	onStore.subscribe(1, packet.Subscription{Filter: "gw/#", QoS: 1})
	p1 := connectRaw(t, e.addr(0), packet.V5, "store-pub")
	p1.publish(&packet.Publish{Topic: "gw/a", QoS: 1, PacketID: 1, Payload: []byte("from store")})
	p2 := connectRaw(t, front.Addrs()[0].String(), packet.V5, "gw-pub")
	p2.publish(&packet.Publish{Topic: "gw/b", QoS: 1, PacketID: 1, Payload: []byte("from gateway")})
	for _, c := range []*rawClient{onGW, onStore} {
		got := map[string]bool{}
		for i := 0; i < 2; i++ {
			got[string(c.nextPublish().Payload)] = true
		}
		if !got["from store"] || !got["from gateway"] {
			t.Fatalf("got %v", got)
		}
	}
}
