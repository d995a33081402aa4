// Package nemesis holds the harness's faults (jepsen.Nemesis): network
// partitions made with iptables inside the receiving node's namespace
// (one node isolated, random halves, a ring of majorities, a bridge),
// process kills and pauses, and the store's own disruptions through its
// admin API (leader transfer, split, merge, replica move) done while the
// clients run. Each chooses its targets with the schedule's seeded rng.
package nemesis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/bifrost-mq/bifrost/jepsen/cluster"
)

// Names lists every nemesis New knows.
var Names = []string{"partition-one", "partition-halves", "partition-ring", "partition-bridge",
	"kill", "kill-minority", "pause", "delay", "leader-transfer", "split", "split-scatter", "merge", "move", "split-merge-move",
	"kill-frontend", "pause-frontend", "partition-frontend", "kill-any", "split-merge-move-mqtt", "clock-skew", "kill-leader", "delay-leader"}

// SplitKeyFunc picks a split point for the split nemesis.
type SplitKeyFunc func(rng *rand.Rand) string

// SplitKeys are the workload's split points per keyspace.
type SplitKeys struct {
	// KV is needed by split, split-scatter and split-merge-move; Dist and
	// Inbox by split-merge-move-mqtt.
	KV, Dist, Inbox SplitKeyFunc
}

// New returns the named nemesis.
func New(name string, keys SplitKeys) (Nemesis, error) {
	splitKey := keys.KV
	switch name {
	case "kill-frontend":
		return &Kill{Target: Frontends}, nil
	case "kill-any":
		return &Kill{Target: Any}, nil
	case "pause-frontend":
		return &Pause{Target: Frontends}, nil
	case "partition-frontend":
		return &PartitionFrontend{}, nil
	case "split-merge-move-mqtt":
		var of []Nemesis
		for _, ks := range []struct {
			ks  Keyspace
			key SplitKeyFunc
		}{{"dist", keys.Dist}, {"inbox", keys.Inbox}} {
			of = append(of, &Split{Key: ks.key, Keyspace: ks.ks}, &SplitScatter{Key: ks.key, Keyspace: ks.ks},
				Merge{Keyspace: ks.ks}, Move{Keyspace: ks.ks}, LeaderTransfer{Keyspace: ks.ks})
		}
		return &Mix{Label: name, Of: of}, nil
	case "partition-one", "partition-halves", "partition-ring", "partition-bridge":
		return &Partition{Mode: strings.TrimPrefix(name, "partition-")}, nil
	case "kill":
		return &Kill{}, nil
	case "kill-minority":
		return &Kill{Minority: true}, nil
	case "kill-leader":
		return &Kill{Leader: true}, nil
	case "pause":
		return &Pause{}, nil
	case "delay":
		return &Delay{}, nil
	case "delay-leader":
		return &Delay{Leader: true}, nil
	case "clock-skew":
		return &ClockSkew{}, nil
	case "leader-transfer":
		return LeaderTransfer{}, nil
	case "split":
		return &Split{Key: splitKey}, nil
	case "split-scatter":
		return &SplitScatter{Key: splitKey}, nil
	case "merge":
		return Merge{}, nil
	case "move":
		return Move{}, nil
	case "split-merge-move":
		return &Mix{Label: name, Of: []Nemesis{&Split{Key: splitKey}, &SplitScatter{Key: splitKey}, Merge{}, Move{}, LeaderTransfer{}}}, nil
	}
	return nil, fmt.Errorf("unknown nemesis %q (known: %s)", name, strings.Join(Names, ", "))
}

// Nemesis is jepsen.Nemesis, restated here so this package stands alone.
type Nemesis interface {
	Name() string
	Start(ctx context.Context, c *cluster.Cluster, rng *rand.Rand) (string, error)
	Stop(ctx context.Context, c *cluster.Cluster) error
}

func shuffled(rng *rand.Rand, nodes []*cluster.Node) []*cluster.Node {
	out := append([]*cluster.Node(nil), nodes...)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func names(nodes []*cluster.Node) string {
	var s []string
	for _, n := range nodes {
		s = append(s, n.Name)
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

// Partition cuts the stores' network. Mode:
//   - one: a random store is cut off from every other (both directions);
//   - halves: the stores split at random into a minority and a majority;
//   - ring: a ring of majorities: in a random ring, each store receives
//     only from itself and the next ⌊n/2⌋ stores, so each sees a majority
//     and no two see the same one (the cuts are one-way);
//   - bridge: two halves that cannot talk, and one store that talks to both.
type Partition struct{ Mode string }

func (p *Partition) Name() string { return "partition-" + p.Mode }

// Grudge computes the partition: for each receiver, the senders whose
// packets it drops.
func (p *Partition) Grudge(rng *rand.Rand, stores []*cluster.Node) (map[*cluster.Node][]*cluster.Node, string) {
	nodes := shuffled(rng, stores)
	n := len(nodes)
	drops := map[*cluster.Node][]*cluster.Node{}
	cut := func(a, b []*cluster.Node) {
		for _, x := range a {
			for _, y := range b {
				drops[x] = append(drops[x], y)
				drops[y] = append(drops[y], x)
			}
		}
	}
	switch p.Mode {
	case "one":
		cut(nodes[:1], nodes[1:])
		return drops, nodes[0].Name + " isolated"
	case "halves":
		cut(nodes[:n/2], nodes[n/2:])
		return drops, fmt.Sprintf("{%s} | {%s}", names(nodes[:n/2]), names(nodes[n/2:]))
	case "bridge":
		if n < 3 {
			cut(nodes[:n/2], nodes[n/2:])
			return drops, fmt.Sprintf("{%s} | {%s}", names(nodes[:n/2]), names(nodes[n/2:]))
		}
		// nodes[0] is the bridge; the rest split in two.
		rest := nodes[1:]
		cut(rest[:len(rest)/2], rest[len(rest)/2:])
		return drops, fmt.Sprintf("{%s} | {%s}, bridged by %s", names(rest[:len(rest)/2]), names(rest[len(rest)/2:]), nodes[0].Name)
	default: // ring
		var desc []string
		for i, recv := range nodes {
			var sees []string
			for j := 1; j < n; j++ {
				sender := nodes[(i+j)%n]
				if j <= n/2 {
					sees = append(sees, sender.Name)
					continue
				}
				drops[recv] = append(drops[recv], sender)
			}
			desc = append(desc, fmt.Sprintf("%s hears %s", recv.Name, strings.Join(sees, ",")))
		}
		return drops, strings.Join(desc, "; ")
	}
}

func (p *Partition) Start(ctx context.Context, c *cluster.Cluster, rng *rand.Rand) (string, error) {
	drops, desc := p.Grudge(rng, c.Stores())
	return desc, c.Partition(ctx, drops)
}

func (p *Partition) Stop(ctx context.Context, c *cluster.Cluster) error { return c.Heal(ctx) }

// Target says which nodes a process nemesis chooses among.
type Target int

const (
	// Stores (the default) are the storage nodes.
	Stores Target = iota
	// Frontends are the MQTT frontends: their clients reconnect to another.
	Frontends
	// Any is every node, stores and frontends.
	Any
)

func (t Target) nodes(c *cluster.Cluster) []*cluster.Node {
	switch t {
	case Frontends:
		return c.Frontends()
	case Any:
		return c.Nodes()
	}
	return c.Stores()
}

func (t Target) suffix() string {
	switch t {
	case Frontends:
		return "-frontend"
	case Any:
		return "-any"
	}
	return ""
}

// PartitionFrontend cuts a random frontend off from every store, both
// directions; its clients (on the host) still reach it, and it cannot reach
// dist, inbox or retain until the partition heals.
type PartitionFrontend struct{}

func (PartitionFrontend) Name() string { return "partition-frontend" }

func (PartitionFrontend) Start(ctx context.Context, c *cluster.Cluster, rng *rand.Rand) (string, error) {
	if len(c.Frontends()) == 0 {
		return "", fmt.Errorf("partition-frontend: the cluster has no frontend")
	}
	f := shuffled(rng, c.Frontends())[0]
	drops := map[*cluster.Node][]*cluster.Node{f: c.Stores()}
	for _, s := range c.Stores() {
		drops[s] = []*cluster.Node{f}
	}
	return f.Name + " cut off from the stores", c.Partition(ctx, drops)
}

func (PartitionFrontend) Stop(ctx context.Context, c *cluster.Cluster) error { return c.Heal(ctx) }

// Kill sends SIGKILL to a random store (or a random minority; or a random
// node of its Target; or, with Leader, the leader of a kv range, whose
// commands in flight the clients then retry elsewhere) and restarts it when
// stopped.
type Kill struct {
	Minority bool
	Target   Target
	Leader   bool
	killed   []*cluster.Node
}

func (k *Kill) Name() string {
	if k.Minority {
		return "kill-minority"
	}
	if k.Leader {
		return "kill-leader"
	}
	return "kill" + k.Target.suffix()
}

func minority(rng *rand.Rand, stores []*cluster.Node, want bool) []*cluster.Node {
	count := 1
	if want {
		count = 1 + rng.IntN(max(1, (len(stores)-1)/2))
	}
	return shuffled(rng, stores)[:count]
}

func (k *Kill) Start(ctx context.Context, c *cluster.Cluster, rng *rand.Rand) (string, error) {
	k.killed = minority(rng, k.Target.nodes(c), k.Minority)
	if k.Leader {
		if leader := kvLeader(ctx, c); leader != nil {
			k.killed = []*cluster.Node{leader}
		}
	}
	for _, n := range k.killed {
		if err := n.Kill(); err != nil {
			return "", err
		}
	}
	return "killed " + names(k.killed), nil
}

func (k *Kill) Stop(ctx context.Context, _ *cluster.Cluster) error {
	for _, n := range k.killed {
		if err := n.Start(ctx); err != nil {
			return err
		}
	}
	k.killed = nil
	return nil
}

// Pause stops a random store (or node of its Target) with SIGSTOP and
// continues it when stopped.
type Pause struct {
	Target Target
	paused []*cluster.Node
}

func (p *Pause) Name() string { return "pause" + p.Target.suffix() }

func (p *Pause) Start(_ context.Context, c *cluster.Cluster, rng *rand.Rand) (string, error) {
	p.paused = minority(rng, p.Target.nodes(c), false)
	for _, n := range p.paused {
		if err := n.Pause(); err != nil {
			return "", err
		}
	}
	return "paused " + names(p.paused), nil
}

func (p *Pause) Stop(context.Context, *cluster.Cluster) error {
	for _, n := range p.paused {
		if err := n.Resume(); err != nil {
			return err
		}
	}
	p.paused = nil
	return nil
}

// Delay slows a random store's links to and from every other store by
// 100-300 ms through the delay proxy (the cluster needs DelayProxy). With
// Leader, it slows the links of the store that leads a kv range by 300-500
// ms: a commit then takes longer than the routers' hedge (500 ms), so they
// send each command again through another replica, and only its request ID
// keeps the second copy from applying.
type Delay struct{ Leader bool }

func (d Delay) Name() string {
	if d.Leader {
		return "delay-leader"
	}
	return "delay"
}

func (d Delay) Start(ctx context.Context, c *cluster.Cluster, rng *rand.Rand) (string, error) {
	slow := shuffled(rng, c.Stores())[0]
	delay := time.Duration(100+rng.IntN(201)) * time.Millisecond
	if d.Leader {
		delay += 200 * time.Millisecond
		if leader := kvLeader(ctx, c); leader != nil {
			slow = leader
		}
	}
	for _, other := range c.Stores() {
		if other == slow {
			continue
		}
		if err := c.SetDelay(slow, other, delay); err != nil {
			return "", err
		}
		if err := c.SetDelay(other, slow, delay); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%s's links delayed %v", slow.Name, delay), nil
}

func (Delay) Stop(_ context.Context, c *cluster.Cluster) error {
	c.ClearDelays()
	return nil
}

// ClockSkew sets the wall clock of the leader of a kv range 11 minutes fast
// (a random store's when no leader is known) and another store's 11 minutes
// slow, beyond the 10-minute dedupe window either way, through the stores'
// test-only clock offset (cluster.Node.SetClockOffset), and puts them right
// when stopped. A store that stamped commands with its wall clock (the bug
// zoo's bugzoo_wall_clock_dedupe) expires dedupe records under it, and a
// retried write applies twice. The leader is the one that stamps most
// commands, so it is the one whose clock hurts most.
type ClockSkew struct {
	skewed []*cluster.Node
}

// ClockSkewOffset is how far ClockSkew sets a clock off.
const ClockSkewOffset = 11 * time.Minute

func (*ClockSkew) Name() string { return "clock-skew" }

func (k *ClockSkew) Start(ctx context.Context, c *cluster.Cluster, rng *rand.Rand) (string, error) {
	stores := shuffled(rng, c.Stores())
	if leader := kvLeader(ctx, c); leader != nil {
		for i, n := range stores {
			if n == leader {
				stores[0], stores[i] = stores[i], stores[0]
			}
		}
	}
	var desc []string
	for i, n := range stores[:min(2, len(stores))] {
		off := ClockSkewOffset
		if i == 1 {
			off = -off
		}
		k.skewed = append(k.skewed, n)
		if err := n.SetClockOffset(off); err != nil {
			return "", err
		}
		sign := "+"
		if off < 0 {
			sign = ""
		}
		desc = append(desc, fmt.Sprintf("%s's clock %s%v", n.Name, sign, off))
	}
	return strings.Join(desc, ", "), nil
}

func (k *ClockSkew) Stop(context.Context, *cluster.Cluster) error {
	for _, n := range k.skewed {
		if err := n.SetClockOffset(0); err != nil {
			return err
		}
	}
	k.skewed = nil
	return nil
}

// Mix runs one of its nemeses, chosen at random, each time it starts.
type Mix struct {
	Label  string
	Of     []Nemesis
	active Nemesis
}

func (m *Mix) Name() string    { return m.Label }
func (m *Mix) Momentary() bool { return true }

func (m *Mix) Start(ctx context.Context, c *cluster.Cluster, rng *rand.Rand) (string, error) {
	m.active = m.Of[rng.IntN(len(m.Of))]
	desc, err := m.active.Start(ctx, c, rng)
	return m.active.Name() + ": " + desc, err
}

func (m *Mix) Stop(ctx context.Context, c *cluster.Cluster) error {
	if m.active == nil {
		return nil
	}
	err := m.active.Stop(ctx, c)
	m.active = nil
	return err
}
