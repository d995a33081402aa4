package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox"
	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/listener"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// startBifrost starts a one-store Bifrost in this process (Dragonboat,
// Pebble, gRPC and the MQTT frontend on loopback), wired as bifrost
// standalone is, and returns the frontend's MQTT address.
func startBifrost(t *testing.T) string {
	t.Helper()
	var front *mqtt.Server
	rangestest.Start(t, 1, rangestest.Options{
		Coprocessors: map[kvpb.Keyspace]kvstore.CoprocessorFactory{
			kvpb.Keyspace_KEYSPACE_DIST: dist.New, kvpb.Keyspace_KEYSPACE_RETAIN: retain.New,
			kvpb.Keyspace_KEYSPACE_INBOX: inbox.New,
		},
		Services: func(g *grpc.Server, n *ranges.Node) {
			s, err := mqtt.New(mqtt.Config{
				ReceiverID: mqtt.NewReceiverID(n.GRPCAddr()),
				Listeners:  []listener.Config{{Kind: listener.TCP, Addr: "127.0.0.1:0"}},
				Dist:       dist.NewClient(n.Router()),
				Retain:     retain.NewClient(n.Router()),
				Inbox:      inbox.NewClient(n.Router()),
				Frontends:  func() []string { return []string{n.GRPCAddr()} },
				Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			s.RegisterService(g)
			front = s
		},
		// The listeners open once the node is whole, as in bifrost
		// standalone.
		Started: func(int, *ranges.Node) {
			if err := front.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { front.Close() })
		},
	})
	return front.Addrs()[0].String()
}

// The persistent-session scenarios against a real Bifrost: every message
// queued for an offline session is delivered exactly once, nothing is lost
// on the way to persistent subscribers, and no scenario leaves a session
// behind.
func TestPersistentScenariosOnBifrost(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Bifrost store")
	}
	addr := startBifrost(t)
	args := append([]string{"--addr", addr, "--name", "bifrost", "--scenarios", "persistent,fanin,offline",
		"--stall-timeout", "30s"}, fastArgs...)
	var stdout, stderr bytes.Buffer
	cfg, err := parseFlags(args, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	cfg.runID = "test"
	cfg.jsonPath = filepath.Join(t.TempDir(), "out.json")
	if err := bench(context.Background(), cfg, &stdout, &stderr); err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}
	t.Logf("\n%s", &stdout)
	rep, err := loadReport(cfg.jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		if r.Lost != 0 || r.Duplicated != 0 || r.Sent != r.Received || r.Sent == 0 {
			t.Errorf("%s: %d published, %d received, %d lost, %d duplicated", r.Scenario, r.Sent, r.Received, r.Lost, r.Duplicated)
		}
	}
	if r := rep.find("offline"); r == nil || r.Sent != 5*40 || r.Rate <= 0 || r.DrainRate <= 0 {
		t.Errorf("offline: %+v", r)
	}

	// A session a scenario made is gone: a connect with clean session 0
	// finds none (and its own is discarded again).
	ids := []string{cfg.clientID("probe", "", 0)}
	for scenario, n := range map[string]int{"persistent": 2, "fanin": 7, "offline": 5} {
		for i := range n {
			ids = append(ids, cfg.clientID(scenario, "sub", i))
		}
	}
	for _, id := range ids {
		c, err := dialSession(context.Background(), addr, id, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		present := c.sessionPresent
		c.disconnect()
		if d, err := dial(context.Background(), addr, id, 0); err == nil {
			d.disconnect()
		}
		if present {
			t.Errorf("session %s left behind", id)
		}
	}
}
