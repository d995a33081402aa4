package ui_test

import (
	"context"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox"
	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/listener"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
	"github.com/bifrost-mq/bifrost/ui"
)

// sysInterval is how often the test frontends publish their $SYS figures.
const sysInterval = 300 * time.Millisecond

// testCluster is a standalone node (store and MQTT frontend in one process,
// as `bifrost standalone` runs them) and a second frontend that joins it
// through a gateway (as `bifrost frontend` does), with the status page of
// the standalone served on loopback.
type testCluster struct {
	node    *ranges.Node
	front   *mqtt.Server // the standalone's frontend
	gwFront *mqtt.Server // the second frontend's
	gwName  string
	// page serves the standalone's status page, gwPage the frontend's.
	page, gwPage *httptest.Server
}

func testLogger() *slog.Logger {
	if os.Getenv("BIFROST_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

func frontendAddrs(ms func() *ranges.Membership) func() []string {
	return func() []string {
		m := ms()
		if m == nil {
			return nil
		}
		var out []string
		for _, mem := range m.Members() {
			if mem.Meta.MQTT && mem.Meta.GRPC != "" {
				out = append(out, mem.Meta.GRPC)
			}
		}
		return out
	}
}

func startCluster(t *testing.T) *testCluster {
	t.Helper()
	log := testLogger()
	reg := prometheus.NewRegistry()
	tc := &testCluster{}
	cfg := ranges.NodeConfig{
		Store: kvstore.Config{DataDir: filepath.Join(t.TempDir(), "data"), RaftAddr: rangestest.FreeAddr(t), RTTMillisecond: 20,
			SmallLogDB: true, Coprocessors: map[kvpb.Keyspace]kvstore.CoprocessorFactory{
				kvpb.Keyspace_KEYSPACE_DIST: dist.New, kvpb.Keyspace_KEYSPACE_INBOX: inbox.New, kvpb.Keyspace_KEYSPACE_RETAIN: retain.New,
			}},
		GossipAddr: rangestest.FreeAddr(t), GRPCAddr: rangestest.FreeAddr(t), BootstrapExpect: 1, FastGossip: true, MQTT: true,
		Logger: log, Registerer: reg,
		Services: func(s *grpc.Server, n *ranges.Node) {
			front, err := mqtt.New(mqtt.Config{
				ReceiverID: mqtt.NewReceiverID(n.GRPCAddr()), NodeName: n.Name(),
				Listeners: []listener.Config{{Kind: listener.TCP, Addr: "127.0.0.1:0"}},
				Dist:      dist.NewClient(n.Router()), Retain: retain.NewClient(n.Router()), Inbox: inbox.NewClient(n.Router()),
				Frontends: frontendAddrs(n.Membership), SysInterval: sysInterval, Logger: log, Registerer: reg,
			})
			if err != nil {
				panic(err)
			}
			front.RegisterService(s)
			tc.front = front
		},
	}
	node, err := ranges.StartNode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tc.node = node
	t.Cleanup(func() { node.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	select {
	case <-node.Bootstrapped():
	case <-ctx.Done():
		t.Fatal("the node did not bootstrap")
	}
	startFrontend(t, ctx, tc.front)

	// The second frontend: a gateway, its Frontend service and listeners.
	tc.gwName = "frontend-b"
	gwReg := prometheus.NewRegistry()
	gwGRPC, err := net.Listen("tcp", rangestest.FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	gw, err := ranges.StartGateway(ranges.GatewayConfig{Name: tc.gwName, GossipAddr: rangestest.FreeAddr(t),
		Join: []string{cfg.GossipAddr}, GRPCAddr: gwGRPC.Addr().String(), MQTT: true, FastGossip: true, Logger: log})
	if err != nil {
		gwGRPC.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	if err := gw.WaitReady(ctx); err != nil {
		gwGRPC.Close()
		t.Fatal(err)
	}
	tc.gwFront, err = mqtt.New(mqtt.Config{
		ReceiverID: mqtt.NewReceiverID(gwGRPC.Addr().String()), NodeName: tc.gwName,
		Listeners: []listener.Config{{Kind: listener.TCP, Addr: "127.0.0.1:0"}},
		Dist:      dist.NewClient(gw.Router()), Retain: retain.NewClient(gw.Router()), Inbox: inbox.NewClient(gw.Router()),
		Frontends: frontendAddrs(gw.Membership), SysInterval: sysInterval, Logger: log, Registerer: gwReg,
	})
	if err != nil {
		gwGRPC.Close()
		t.Fatal(err)
	}
	g := grpc.NewServer()
	tc.gwFront.RegisterService(g)
	served := make(chan struct{})
	go func() { defer close(served); _ = g.Serve(gwGRPC) }()
	t.Cleanup(func() { g.Stop(); <-served })
	startFrontend(t, ctx, tc.gwFront)

	src, err := ui.NewNodeSource(ui.NodeConfig{Name: node.Name(), Membership: node.Membership, Table: node.Router().Table(),
		Refresh: node.Refresh, Retain: retain.NewClient(node.Router()), Gatherer: reg})
	if err != nil {
		t.Fatal(err)
	}
	tc.page = httptest.NewServer(ui.Handler(src, log))
	t.Cleanup(tc.page.Close)
	gwSrc, err := ui.NewNodeSource(ui.NodeConfig{Name: tc.gwName, Membership: gw.Membership, Table: gw.Router().Table(),
		Refresh: gw.Refresh, Retain: retain.NewClient(gw.Router()), Gatherer: gwReg})
	if err != nil {
		t.Fatal(err)
	}
	tc.gwPage = httptest.NewServer(ui.Handler(gwSrc, log))
	t.Cleanup(tc.gwPage.Close)
	return tc
}

// startFrontend opens a frontend's listeners once the cluster answers its
// probe, as bifrost does once it is ready, and closes it when the test ends.
func startFrontend(t *testing.T, ctx context.Context, f *mqtt.Server) {
	t.Helper()
	for {
		err := f.Probe(ctx)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("frontend not ready: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
}

// split splits the kv keyspace at each key through the admin service, as
// `bifrost admin split --keyspace kv --key K` does.
func (tc *testCluster) split(t *testing.T, keys ...string) {
	t.Helper()
	c, err := ranges.Dial(tc.node.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, k := range keys {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := c.Admin.Split(ctx, &rangespb.SplitRequest{Keyspace: "kv", Key: []byte(k)})
		cancel()
		if err != nil {
			t.Fatalf("split at %q: %v", k, ranges.FromStatus(err))
		}
	}
}

// adminRanges lists the ranges as `bifrost admin ranges` does.
func (tc *testCluster) adminRanges(t *testing.T) []*rangespb.RangeInfo {
	t.Helper()
	c, err := ranges.Dial(tc.node.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.Admin.Ranges(ctx, &rangespb.RangesRequest{})
	if err != nil {
		t.Fatal(ranges.FromStatus(err))
	}
	return resp.Ranges
}

// connect connects an MQTT 3.1.1 client to a frontend and disconnects it
// when the test ends.
func connect(t *testing.T, f *mqtt.Server, clientID string) pahov3.Client {
	t.Helper()
	o := pahov3.NewClientOptions().AddBroker("tcp://" + f.Addrs()[0].String()).SetClientID(clientID).
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second)
	c := pahov3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: connect: %v", clientID, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// waitFor polls cond until it holds, failing the test with what it last
// said after the timeout.
func waitFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
