// Package cluster runs a Bifrost cluster as real processes for the
// consistency harness: every node is a `bifrost store` (or `bifrost
// frontend`) process in its own Linux network namespace, joined to the host
// by a veth pair on a bridge, so faults are real: SIGKILL, SIGSTOP/SIGCONT,
// and iptables rules inside a node's namespace.
//
// Invariants: everything the package creates is named NamePrefix + a
// five-character cluster ID, and the ID's owner file names the PID of the
// harness, so CleanLeftovers can remove what a crashed harness left and
// nothing else; Close removes every process, namespace, link and the
// bridge, and is safe to call more than once. A node's process exit that
// the harness did not cause is recorded (Crashes).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/bifrost-mq/bifrost/ranges"
)

// Ports every store binds on its own address.
const (
	GossipPort = 7946
	RaftPort   = 7947
	GRPCPort   = 7948
	HTTPPort   = 8091
	// Frontends use their own ports.
	FrontendGossipPort = 7956
	FrontendGRPCPort   = 7958
	FrontendHTTPPort   = 8092
	MQTTPort           = 1883
)

// Config describes a cluster.
type Config struct {
	// Binary is the bifrost binary (required).
	Binary string
	// Dir holds each node's data and log (required).
	Dir string
	// Stores is the number of storage nodes (default 3).
	Stores int
	// Frontends is the number of MQTT frontends (default 0).
	Frontends int
	// StoreArgs are extra arguments for every store, after the harness's
	// own (for example --raft-rtt-ms 50).
	StoreArgs []string
	// DelayProxy routes every store's Raft and gRPC connections to the
	// other stores through the harness's delay proxy (see SetDelay).
	DelayProxy bool
	// Logger gets the cluster's events (default: discard).
	Logger *slog.Logger
}

// Validate fills defaults and checks the config.
func (c *Config) Validate() error {
	if c.Binary == "" {
		return errors.New("cluster: Binary is required")
	}
	if _, err := os.Stat(c.Binary); err != nil {
		return fmt.Errorf("cluster: binary: %w", err)
	}
	if c.Dir == "" {
		return errors.New("cluster: Dir is required")
	}
	if c.Stores == 0 {
		c.Stores = 3
	}
	if c.Stores < 1 || c.Stores > 50 || c.Frontends < 0 || c.Frontends > 50 {
		return fmt.Errorf("cluster: %d stores and %d frontends: want 1..50 and 0..50", c.Stores, c.Frontends)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Cluster is a running set of nodes on one bridge.
type Cluster struct {
	cfg    Config
	id     string
	subnet string // "10.77.X"
	bridge string
	hostIP string
	nodes  []*Node
	log    *slog.Logger

	proxy *proxy

	mu      sync.Mutex
	closed  bool
	crashes []Crash
}

// Crash is a node process that exited although nobody stopped it.
type Crash struct {
	Node string    `json:"node"`
	Time time.Time `json:"time"`
	Err  string    `json:"err"`
}

// New creates the network (bridge, one namespace and veth pair per node)
// and starts no process. On error, what was created is removed.
func New(ctx context.Context, cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := RequireTools(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	id := newID()
	subnet, err := pickSubnet(ctx, id)
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, id: id, subnet: subnet, bridge: NamePrefix + id + "br", hostIP: subnet + ".254", log: cfg.Logger}
	if err := writeOwner(id); err != nil {
		return nil, err
	}
	if err := c.setupNetwork(ctx); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	if cfg.DelayProxy {
		if err := c.startProxy(ctx); err != nil {
			return nil, errors.Join(err, c.Close())
		}
	}
	return c, nil
}

func (c *Cluster) setupNetwork(ctx context.Context) error {
	steps := [][]string{
		{"link", "add", c.bridge, "type", "bridge"},
		{"addr", "add", c.hostIP + "/24", "dev", c.bridge},
		{"link", "set", c.bridge, "up"},
	}
	for _, s := range steps {
		if err := run(ctx, "ip", s...); err != nil {
			return err
		}
	}
	total := c.cfg.Stores + c.cfg.Frontends
	for i := 1; i <= total; i++ {
		role, name := RoleStore, fmt.Sprintf("n%d", i)
		if i > c.cfg.Stores {
			role, name = RoleFrontend, fmt.Sprintf("f%d", i-c.cfg.Stores)
		}
		n := &Node{
			c: c, Name: name, Role: role, Index: len(c.nodes),
			NS:  fmt.Sprintf("%s%sn%d", NamePrefix, c.id, i),
			IP:  fmt.Sprintf("%s.%d", c.subnet, i),
			dir: filepath.Join(c.cfg.Dir, name),
		}
		hostEnd := fmt.Sprintf("%s%sh%d", NamePrefix, c.id, i)
		nsEnd := fmt.Sprintf("%s%sp%d", NamePrefix, c.id, i)
		n.hostLink = hostEnd
		c.nodes = append(c.nodes, n)
		if err := run(ctx, "ip", "netns", "add", n.NS); err != nil {
			return err
		}
		for _, s := range [][]string{
			{"ip", "link", "add", hostEnd, "type", "veth", "peer", "name", nsEnd},
			{"ip", "link", "set", nsEnd, "netns", n.NS},
			{"ip", "link", "set", hostEnd, "master", c.bridge},
			{"ip", "link", "set", hostEnd, "up"},
			{"ip", "-n", n.NS, "addr", "add", n.IP + "/24", "dev", nsEnd},
			{"ip", "-n", n.NS, "link", "set", nsEnd, "up"},
			{"ip", "-n", n.NS, "link", "set", "lo", "up"},
		} {
			if err := run(ctx, s[0], s[1:]...); err != nil {
				return err
			}
		}
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			return err
		}
	}
	c.log.Info("network up", "cluster", c.id, "bridge", c.bridge, "subnet", c.subnet+".0/24", "nodes", total)
	return nil
}

// ID is the cluster's five-character ID.
func (c *Cluster) ID() string { return c.id }

// Nodes returns every node, stores first.
func (c *Cluster) Nodes() []*Node { return append([]*Node(nil), c.nodes...) }

// Stores returns the storage nodes.
func (c *Cluster) Stores() []*Node { return c.nodes[:c.cfg.Stores] }

// Frontends returns the MQTT frontends.
func (c *Cluster) Frontends() []*Node { return c.nodes[c.cfg.Stores:] }

// Node returns the node with that name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// joinList is every store's gossip address but except's.
func (c *Cluster) joinList(except *Node) string {
	var addrs []string
	for _, n := range c.Stores() {
		if n != except {
			addrs = append(addrs, fmt.Sprintf("%s:%d", n.IP, GossipPort))
		}
	}
	return strings.Join(addrs, ",")
}

// Start starts every node's process.
func (c *Cluster) Start(ctx context.Context) error {
	for _, n := range c.nodes {
		if err := n.Start(ctx); err != nil {
			return err
		}
	}
	return nil
}

// WaitReady waits until a linearizable read of probeKey succeeds through
// every store that runs.
func (c *Cluster) WaitReady(ctx context.Context, probeKey string) error {
	for _, n := range c.Stores() {
		if !n.Running() {
			continue
		}
		if err := n.WaitReady(ctx, probeKey); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) recordCrash(n *Node, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	msg := "exited with status 0"
	if err != nil {
		msg = err.Error()
	}
	if p := lastPanic(n.LogPath()); p != "" {
		msg += ": " + p
	}
	c.crashes = append(c.crashes, Crash{Node: n.Name, Time: time.Now(), Err: msg})
	c.log.Error("node exited on its own", "node", n.Name, "err", msg)
}

// lastPanic returns the last "panic: " line of a log, cut short, and the
// first bifrost function of its stack.
func lastPanic(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	i := strings.LastIndex(string(b), "\npanic: ")
	if i < 0 {
		return ""
	}
	lines := strings.SplitN(string(b[i+1:]), "\n", 60)
	msg := lines[0]
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, "github.com/bifrost-mq/bifrost/") {
			fn, _, _ := strings.Cut(strings.TrimPrefix(l, "github.com/bifrost-mq/bifrost/"), "(0x")
			return msg + " at " + fn
		}
	}
	return msg
}

// Crashes returns the node exits nobody caused.
func (c *Cluster) Crashes() []Crash {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Crash(nil), c.crashes...)
}

// Partition installs a partition: for each receiver, packets from the
// listed senders are dropped inside the receiver's namespace. It replaces
// any partition in force.
func (c *Cluster) Partition(ctx context.Context, drops map[*Node][]*Node) error {
	if err := c.Heal(ctx); err != nil {
		return err
	}
	for recv, senders := range drops {
		for _, s := range senders {
			if err := run(ctx, "ip", "netns", "exec", recv.NS, "iptables", "-w", "-A", "INPUT", "-s", s.IP, "-j", "DROP"); err != nil {
				return err
			}
		}
	}
	return nil
}

// Heal removes every partition rule.
func (c *Cluster) Heal(ctx context.Context) error {
	var errs []error
	for _, n := range c.nodes {
		if err := run(ctx, "ip", "netns", "exec", n.NS, "iptables", "-w", "-F", "INPUT"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close stops every process and removes the namespaces, links and bridge.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	// Heal first: the connections of the processes about to be killed then
	// finish closing. Behind a partition their orphaned sockets retransmit
	// for minutes, and keep their namespace, and its veth pair, alive.
	_ = c.Heal(ctx)
	for _, n := range c.nodes {
		n.stop()
	}
	if c.proxy != nil {
		c.proxy.close()
	}
	for _, n := range c.nodes {
		killNamespace(ctx, n.NS)
		if err := run(ctx, "ip", "netns", "del", n.NS); err != nil && !gone(err) {
			errs = append(errs, err)
		}
		// A veth pair goes with its namespace, unless something still holds
		// the namespace: delete the host end, which takes the pair.
		if err := run(ctx, "ip", "link", "del", n.hostLink); err != nil && !gone(err) {
			errs = append(errs, err)
		}
	}
	if err := run(ctx, "ip", "link", "del", c.bridge); err != nil && !gone(err) {
		errs = append(errs, err)
	}
	removeOwner(c.id)
	c.log.Info("cluster removed", "cluster", c.id)
	return errors.Join(errs...)
}

// dial opens a client of a store's gRPC services.
func dial(n *Node) (*ranges.Client, error) { return ranges.Dial(n.GRPCAddr()) }
