// Package rangestest starts real storage nodes (Dragonboat, Pebble, gRPC and
// gossip on loopback) for tests of anything distributed.
package rangestest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/bifrost-mq/bifrost/internal/clustertls"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
)

// Cluster is a set of storage nodes in this process, each with its own data
// directory and loopback ports. A stopped node keeps its directory and ports
// so that it can restart as the same store.
type Cluster struct {
	t     testing.TB
	Nodes []*ranges.Node
	cfgs  []ranges.NodeConfig
	// started is Options.Started.
	started func(i int, n *ranges.Node)
	// storeFailpoint is Options.StoreFailpoint, for the nodes AddNode adds.
	storeFailpoint func(node int, step string) error
}

// Options tune a test cluster.
type Options struct {
	// RTTMillisecond is the Raft tick; default 20.
	RTTMillisecond uint64
	// SnapshotEntries and CompactionOverhead; defaults 10000 and 5000.
	SnapshotEntries, CompactionOverhead uint64
	// Logger; default discards.
	Logger *slog.Logger
	// MergeResolveAfter; default 3s.
	MergeResolveAfter time.Duration
	// Failpoint, if set, is called at split and merge steps on every node.
	Failpoint func(step string) error
	// StoreFailpoint, if set, is called at a store's own split steps
	// (kvstore.Fail*) with the node's index.
	StoreFailpoint func(node int, step string) error
	// Coprocessors and Services are passed to every node.
	Coprocessors map[kvpb.Keyspace]kvstore.CoprocessorFactory
	Services     func(s *grpc.Server, n *ranges.Node)
	// Started, if set, is called after node i (re)started: what runs on a
	// node, as opposed to serving it, starts here (Services is called
	// before the node is whole; its router cannot route yet).
	Started func(i int, n *ranges.Node)
	// TLS, if set, is every node's cluster identity (mutual TLS for gRPC
	// and Raft), and the one Client dials with.
	TLS *clustertls.Credentials
}

// FreeAddr returns a loopback address whose port was free (TCP and UDP)
// just now and is reserved for this test. Ports come from below the kernel's
// ephemeral range (32768 and up here), so outgoing connections cannot take
// them; a reservation file per port keeps test processes that run at the
// same time (go test runs packages in parallel) from picking the same one
// while a node is down between a stop and a restart.
func FreeAddr(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "bifrost-test-ports")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for attempt := 0; attempt < 1000; attempt++ {
		port := 20000 + rand.IntN(12000)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if !reserve(filepath.Join(dir, fmt.Sprint(port))) {
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err == nil {
			var u net.PacketConn
			u, err = net.ListenPacket("udp", addr)
			l.Close()
			if err == nil {
				u.Close()
			}
		}
		if err != nil {
			os.Remove(filepath.Join(dir, fmt.Sprint(port)))
			continue
		}
		t.Cleanup(func() { os.Remove(filepath.Join(dir, fmt.Sprint(port))) })
		return addr
	}
	t.Fatal("no free loopback port")
	return ""
}

// reserve creates a port's reservation file; one older than an hour was
// left by a test process that died, and is taken over.
func reserve(path string) bool {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err == nil {
		f.Close()
		return true
	}
	if st, serr := os.Stat(path); serr == nil && time.Since(st.ModTime()) > time.Hour {
		now := time.Now()
		return os.Chtimes(path, now, now) == nil
	}
	return false
}

// Start starts n stores that bootstrap together (bootstrap-expect n) and
// waits until the first ranges serve.
func Start(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	if opts.RTTMillisecond == 0 {
		opts.RTTMillisecond = 20
	}
	if opts.MergeResolveAfter == 0 {
		opts.MergeResolveAfter = 3 * time.Second
	}
	if opts.Logger == nil {
		if os.Getenv("BIFROST_TEST_LOG") != "" {
			opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
		} else {
			opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		}
	}
	c := &Cluster{t: t, storeFailpoint: opts.StoreFailpoint, started: opts.Started}
	base := t.TempDir()
	var seed string
	for i := 0; i < n; i++ {
		cfg := ranges.NodeConfig{
			Store: kvstore.Config{
				DataDir:            filepath.Join(base, fmt.Sprintf("store%d", i)),
				RaftAddr:           FreeAddr(t),
				RTTMillisecond:     opts.RTTMillisecond,
				SnapshotEntries:    opts.SnapshotEntries,
				CompactionOverhead: opts.CompactionOverhead,
				SmallLogDB:         true,
				Coprocessors:       opts.Coprocessors,
				Failpoint:          storeFailpoint(opts.StoreFailpoint, i),
			},
			Services:          opts.Services,
			GossipAddr:        FreeAddr(t),
			GRPCAddr:          FreeAddr(t),
			BootstrapExpect:   n,
			FastGossip:        true,
			ReconcileInterval: 500 * time.Millisecond,
			MergeResolveAfter: opts.MergeResolveAfter,
			Failpoint:         opts.Failpoint,
			TLS:               opts.TLS,
			Logger:            opts.Logger.With("node", i),
		}
		if seed != "" {
			cfg.Join = []string{seed}
		} else {
			seed = cfg.GossipAddr
		}
		c.cfgs = append(c.cfgs, cfg)
		c.Nodes = append(c.Nodes, nil)
	}
	t.Cleanup(c.Close)
	for i := range c.cfgs {
		c.StartNode(i)
	}
	c.WaitReady()
	return c
}

// AddNode starts one more store that joins the cluster (no bootstrap).
func (c *Cluster) AddNode() int {
	c.t.Helper()
	return c.AddNodeTLS(c.cfgs[0].TLS)
}

// AddNodeTLS is AddNode with the new store's own cluster identity (say, a
// certificate from another CA).
func (c *Cluster) AddNodeTLS(creds *clustertls.Credentials) int {
	c.t.Helper()
	cfg := c.cfgs[0]
	cfg.TLS = creds
	cfg.Store.DataDir = filepath.Join(filepath.Dir(cfg.Store.DataDir), fmt.Sprintf("store%d", len(c.cfgs)))
	cfg.Store.RaftAddr = FreeAddr(c.t)
	cfg.GossipAddr = FreeAddr(c.t)
	cfg.GRPCAddr = FreeAddr(c.t)
	cfg.BootstrapExpect = 0
	cfg.Join = []string{c.liveGossipAddr()}
	cfg.Logger = c.cfgs[0].Logger
	cfg.Store.Failpoint = storeFailpoint(c.storeFailpoint, len(c.cfgs))
	c.cfgs = append(c.cfgs, cfg)
	c.Nodes = append(c.Nodes, nil)
	c.StartNode(len(c.cfgs) - 1)
	return len(c.cfgs) - 1
}

func (c *Cluster) liveGossipAddr() string {
	for i, n := range c.Nodes {
		if n != nil {
			return c.cfgs[i].GossipAddr
		}
	}
	return c.cfgs[0].GossipAddr
}

// StartNode (re)starts node i on its directory and ports.
func (c *Cluster) StartNode(i int) {
	c.t.Helper()
	if c.Nodes[i] != nil {
		return
	}
	cfg := c.cfgs[i]
	if i != 0 || c.Nodes[0] == nil {
		if live := c.liveGossipAddr(); live != cfg.GossipAddr {
			cfg.Join = []string{live}
		}
	}
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		var n *ranges.Node
		n, err = ranges.StartNode(cfg)
		if err == nil {
			c.Nodes[i] = n
			if c.started != nil {
				c.started(i, n)
			}
			return
		}
		// A port of a stopped node can take a moment to be free again.
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("start node %d: %v", i, err)
}

// StopNode stops node i as a crash would: its process state goes, its disk stays.
func (c *Cluster) StopNode(i int) {
	if n := c.Nodes[i]; n != nil {
		_ = n.Close()
		c.Nodes[i] = nil
	}
}

// Close stops every node.
func (c *Cluster) Close() {
	for i := range c.Nodes {
		c.StopNode(i)
	}
}

// GossipAddr returns node i's gossip address.
func (c *Cluster) GossipAddr(i int) string { return c.cfgs[i].GossipAddr }

// Addr returns node i's gRPC address.
func (c *Cluster) Addr(i int) string { return c.cfgs[i].GRPCAddr }

// Client dials node i.
func (c *Cluster) Client(i int) *ranges.Client {
	c.t.Helper()
	cl, err := ranges.DialTLS(c.Addr(i), c.cfgs[i].TLS)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// WaitReady waits until a write through a live node succeeds and every live
// node routes every keyspace.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	c.waitWrite(deadline)
	for _, n := range c.Nodes {
		for n != nil && !routesAll(n) {
			if time.Now().After(deadline) {
				c.t.Fatal("cluster did not route every keyspace in 60s")
			}
			_ = n.Refresh(context.Background())
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func routesAll(n *ranges.Node) bool {
	for _, fr := range ranges.FirstRanges {
		if n.Router().Table().Lookup(fr.Keyspace, nil) == nil {
			return false
		}
	}
	return true
}

func (c *Cluster) waitWrite(deadline time.Time) {
	for time.Now().Before(deadline) {
		for i, n := range c.Nodes {
			if n == nil {
				continue
			}
			cl, err := ranges.DialTLS(c.Addr(i), c.cfgs[i].TLS)
			if err != nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err = cl.Put(ctx, []byte("__ready"), []byte("1"))
			cancel()
			cl.Close()
			if err == nil {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatal("cluster did not become ready in 60s")
}

// LeaderNode returns the index of the node whose replica leads the range, or -1.
func (c *Cluster) LeaderNode(rangeID uint64) int {
	for i, n := range c.Nodes {
		if n != nil && n.Store().IsLeader(rangeID) {
			return i
		}
	}
	return -1
}

// WaitLeader waits until some live node leads the range.
func (c *Cluster) WaitLeader(rangeID uint64) int {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if i := c.LeaderNode(rangeID); i >= 0 {
			return i
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("range %d has no leader after 30s", rangeID)
	return -1
}

func storeFailpoint(f func(int, string) error, node int) func(string) error {
	if f == nil {
		return nil
	}
	return func(step string) error { return f(node, step) }
}
