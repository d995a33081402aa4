package nemesis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"time"

	"github.com/bifrost-mq/bifrost/jepsen/cluster"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// admin dials a random store that runs and is not paused.
func admin(c *cluster.Cluster, rng *rand.Rand) (*ranges.Client, error) {
	for _, n := range shuffled(rng, c.Stores()) {
		if n.Running() && !n.Paused() {
			return ranges.Dial(n.GRPCAddr())
		}
	}
	return nil, errors.New("no store is up")
}

// Keyspace names a keyspace the admin nemeses act on: "kv" (the default,
// for ""), "dist" or "inbox".
type Keyspace string

func (k Keyspace) name() string {
	if k == "" {
		return "kv"
	}
	return string(k)
}

func (k Keyspace) proto() kvpb.Keyspace {
	switch k {
	case "dist":
		return kvpb.Keyspace_KEYSPACE_DIST
	case "inbox":
		return kvpb.Keyspace_KEYSPACE_INBOX
	case "retain":
		return kvpb.Keyspace_KEYSPACE_RETAIN
	}
	return kvpb.Keyspace_KEYSPACE_KV
}

// keyspaceRanges lists the normal ranges of a keyspace, ordered by start key.
func keyspaceRanges(ctx context.Context, cl *ranges.Client, ks Keyspace) ([]*rangespb.RangeInfo, error) {
	resp, err := cl.Admin.Ranges(ctx, &rangespb.RangesRequest{})
	if err != nil {
		return nil, ranges.FromStatus(err)
	}
	var out []*rangespb.RangeInfo
	for _, r := range resp.Ranges {
		if r.Range.GetKeyspace() == ks.proto() && r.Range.GetState() == kvpb.RangeState_RANGE_STATE_NORMAL {
			out = append(out, r)
		}
	}
	return out, nil
}

// kvLeader returns the store that leads the first kv range, nil when none
// answers or no leader is known. It draws nothing from the schedule's rng.
func kvLeader(ctx context.Context, c *cluster.Cluster) *cluster.Node {
	for _, n := range c.Stores() {
		if !n.Running() || n.Paused() {
			continue
		}
		cl, err := ranges.Dial(n.GRPCAddr())
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		rs, err := keyspaceRanges(cctx, cl, "")
		cancel()
		cl.Close()
		if err != nil || len(rs) == 0 {
			continue
		}
		for _, rep := range rs[0].Range.Replicas {
			if rep.ReplicaId != rs[0].LeaderReplicaId {
				continue
			}
			host, _, _ := net.SplitHostPort(rep.RaftAddr)
			for _, s := range c.Stores() {
				if s.IP == host {
					return s
				}
			}
		}
		return nil
	}
	return nil
}

// LeaderTransfer moves the leadership of a random range of its keyspace
// (kv by default) to a random other replica.
type LeaderTransfer struct{ Keyspace Keyspace }

func (LeaderTransfer) Name() string    { return "leader-transfer" }
func (LeaderTransfer) Momentary() bool { return true }

func (l LeaderTransfer) Start(ctx context.Context, c *cluster.Cluster, rng *rand.Rand) (string, error) {
	cl, err := admin(c, rng)
	if err != nil {
		return "", err
	}
	defer cl.Close()
	rs, err := keyspaceRanges(ctx, cl, l.Keyspace)
	if err != nil || len(rs) == 0 {
		return "", fmt.Errorf("list %s ranges: %v", l.Keyspace.name(), err)
	}
	r := rs[rng.IntN(len(rs))]
	var others []*kvpb.Replica
	for _, rep := range r.Range.Replicas {
		if rep.ReplicaId != r.LeaderReplicaId {
			others = append(others, rep)
		}
	}
	if len(others) == 0 {
		return "", fmt.Errorf("range %d has no replica but its leader", r.Range.Id)
	}
	to := others[rng.IntN(len(others))]
	_, err = cl.Admin.TransferLeader(ctx, &rangespb.TransferLeaderRequest{RangeId: r.Range.Id, StoreId: to.StoreId})
	return fmt.Sprintf("%s range %d leader to store %d", l.Keyspace.name(), r.Range.Id, to.StoreId), ranges.FromStatus(err)
}

func (LeaderTransfer) Stop(context.Context, *cluster.Cluster) error { return nil }

// Split splits a keyspace (kv by default) at a key the workload picks.
type Split struct {
	Key      SplitKeyFunc
	Keyspace Keyspace
}

func (*Split) Name() string    { return "split" }
func (*Split) Momentary() bool { return true }

func (s *Split) Start(ctx context.Context, c *cluster.Cluster, rng *rand.Rand) (string, error) {
	_, did, err := split(ctx, c, rng, s.Key, s.Keyspace)
	return did, err
}

// split splits the kv keyspace, through a random store, at a key pick
// chooses; it returns the split's answer and what it did.
func split(ctx context.Context, c *cluster.Cluster, rng *rand.Rand, pick SplitKeyFunc, ks Keyspace) (*rangespb.SplitResponse, string, error) {
	if pick == nil {
		return nil, "", errors.New("split: the workload gives no split keys")
	}
	cl, err := admin(c, rng)
	if err != nil {
		return nil, "", err
	}
	defer cl.Close()
	key := pick(rng)
	resp, err := cl.Admin.Split(ctx, &rangespb.SplitRequest{Keyspace: ks.name(), Key: []byte(key)})
	if err != nil {
		return nil, fmt.Sprintf("split %s at %q", ks.name(), key), ranges.FromStatus(err)
	}
	return resp, fmt.Sprintf("split %s range %d at %q: new range %d", ks.name(), resp.Left.GetId(), key, resp.Right.GetId()), nil
}

func (*Split) Stop(context.Context, *cluster.Cluster) error { return nil }

// Merge merges a random range of its keyspace (kv by default) with its
// right neighbour.
type Merge struct{ Keyspace Keyspace }

func (Merge) Name() string    { return "merge" }
func (Merge) Momentary() bool { return true }

func (m Merge) Start(ctx context.Context, c *cluster.Cluster, rng *rand.Rand) (string, error) {
	cl, err := admin(c, rng)
	if err != nil {
		return "", err
	}
	defer cl.Close()
	rs, err := keyspaceRanges(ctx, cl, m.Keyspace)
	if err != nil {
		return "", err
	}
	if len(rs) < 2 {
		return "one " + m.Keyspace.name() + " range: nothing to merge", nil
	}
	// Any range but the last has a right neighbour in the keyspace.
	var left *rangespb.RangeInfo
	for _, r := range rs {
		if len(r.Range.End) > 0 {
			if left == nil || rng.IntN(2) == 0 {
				left = r
			}
		}
	}
	if left == nil {
		return "no " + m.Keyspace.name() + " range has a right neighbour", nil
	}
	resp, err := cl.Admin.Merge(ctx, &rangespb.MergeRequest{RangeId: left.Range.Id})
	if err != nil {
		return fmt.Sprintf("merge %s range %d with its right neighbour", m.Keyspace.name(), left.Range.Id), ranges.FromStatus(err)
	}
	return fmt.Sprintf("merged into %s range %d [%q, %q)", m.Keyspace.name(), resp.Range.Id, resp.Range.Start, resp.Range.End), nil
}

func (Merge) Stop(context.Context, *cluster.Cluster) error { return nil }

// Move moves a replica of a random range of its keyspace (kv by default)
// to a store that has none (with more stores than replicas); when every
// store holds one, it removes a random follower's replica and adds a new
// replica on that store again.
type Move struct{ Keyspace Keyspace }

func (Move) Name() string    { return "move" }
func (Move) Momentary() bool { return true }

func (mv Move) Start(ctx context.Context, c *cluster.Cluster, rng *rand.Rand) (string, error) {
	cl, err := admin(c, rng)
	if err != nil {
		return "", err
	}
	defer cl.Close()
	rs, err := keyspaceRanges(ctx, cl, mv.Keyspace)
	if err != nil || len(rs) == 0 {
		return "", fmt.Errorf("list %s ranges: %v", mv.Keyspace.name(), err)
	}
	r := rs[rng.IntN(len(rs))]
	members, err := cl.Admin.Cluster(ctx, &rangespb.ClusterRequest{})
	if err != nil {
		return "", ranges.FromStatus(err)
	}
	holds := map[uint64]bool{}
	var followers []uint64
	for _, rep := range r.Range.Replicas {
		holds[rep.StoreId] = true
		if rep.ReplicaId != r.LeaderReplicaId {
			followers = append(followers, rep.StoreId)
		}
	}
	var free []uint64
	nodeOf := map[uint64]*cluster.Node{}
	for _, m := range members.Members {
		if m.Role != "store" || m.StoreId == 0 {
			continue
		}
		if n := c.Node(m.Name); n != nil {
			nodeOf[m.StoreId] = n
		}
		if !holds[m.StoreId] {
			free = append(free, m.StoreId)
		}
	}
	if len(followers) == 0 {
		return "", fmt.Errorf("range %d has no follower", r.Range.Id)
	}
	sort.Slice(free, func(i, j int) bool { return free[i] < free[j] })
	sort.Slice(followers, func(i, j int) bool { return followers[i] < followers[j] })
	from := followers[rng.IntN(len(followers))]
	// A store refuses to remove its own replica: the changes go through
	// another store, one that is up.
	var via *ranges.Client
	for _, n := range shuffled(rng, c.Stores()) {
		if n != nodeOf[from] && n.Running() && !n.Paused() {
			if via, err = ranges.Dial(n.GRPCAddr()); err != nil {
				return "", err
			}
			break
		}
	}
	if via == nil {
		return "", errors.New("no other store is up")
	}
	defer via.Close()
	id := r.Range.Id
	ksName := mv.Keyspace.name()
	label := func(id uint64) string {
		if n := nodeOf[id]; n != nil {
			return n.Name
		}
		return fmt.Sprintf("store %d", id)
	}
	if len(free) > 0 {
		to := free[rng.IntN(len(free))]
		if _, err := via.Admin.AddReplica(ctx, &rangespb.AddReplicaRequest{RangeId: id, StoreId: to}); err != nil {
			return fmt.Sprintf("%s range %d: add a replica on %s", ksName, id, label(to)), ranges.FromStatus(err)
		}
		if _, err := via.Admin.RemoveReplica(ctx, &rangespb.RemoveReplicaRequest{RangeId: id, StoreId: from}); err != nil {
			return fmt.Sprintf("%s range %d: added %s, remove %s", ksName, id, label(to), label(from)), ranges.FromStatus(err)
		}
		return fmt.Sprintf("%s range %d moved from %s to %s", ksName, id, label(from), label(to)), nil
	}
	if _, err := via.Admin.RemoveReplica(ctx, &rangespb.RemoveReplicaRequest{RangeId: id, StoreId: from}); err != nil {
		return fmt.Sprintf("%s range %d: remove %s", ksName, id, label(from)), ranges.FromStatus(err)
	}
	if _, err := via.Admin.AddReplica(ctx, &rangespb.AddReplicaRequest{RangeId: id, StoreId: from}); err != nil {
		return fmt.Sprintf("%s range %d: removed %s, add it back", ksName, id, label(from)), ranges.FromStatus(err)
	}
	return fmt.Sprintf("%s range %d: replica on %s removed and added anew", ksName, id, label(from)), nil
}

func (Move) Stop(context.Context, *cluster.Cluster) error { return nil }

// SplitScatter splits the kv keyspace at a key the workload picks and then
// scatters the new right range, as the balancer does after a load split:
// it gets a replica on a store the parent has none on, that replica takes
// its leadership, and one of the replicas it shares with the parent goes.
// The two halves then answer from different stores, so a command that a
// stale route sends to the parent for a key of the child is visible to the
// child's reads only if the parent refused it.
type SplitScatter struct {
	Key      SplitKeyFunc
	Keyspace Keyspace
}

func (*SplitScatter) Name() string    { return "split-scatter" }
func (*SplitScatter) Momentary() bool { return true }

func (s *SplitScatter) Start(ctx context.Context, c *cluster.Cluster, rng *rand.Rand) (string, error) {
	resp, did, err := split(ctx, c, rng, s.Key, s.Keyspace)
	if err != nil {
		return did, err
	}
	right := resp.Right
	cl, err := admin(c, rng)
	if err != nil {
		return did, err
	}
	defer cl.Close()
	members, err := cl.Admin.Cluster(ctx, &rangespb.ClusterRequest{})
	if err != nil {
		return did, ranges.FromStatus(err)
	}
	holds := map[uint64]bool{}
	for _, rep := range right.Replicas {
		holds[rep.StoreId] = true
	}
	var free []uint64
	nodeOf := map[uint64]*cluster.Node{}
	for _, m := range members.Members {
		if m.Role != "store" || m.StoreId == 0 {
			continue
		}
		n := c.Node(m.Name)
		if n == nil || !n.Running() || n.Paused() {
			continue
		}
		nodeOf[m.StoreId] = n
		if !holds[m.StoreId] {
			free = append(free, m.StoreId)
		}
	}
	if len(free) == 0 {
		return did + "; no store without a replica to scatter it to", nil
	}
	sort.Slice(free, func(i, j int) bool { return free[i] < free[j] })
	to := free[rng.IntN(len(free))]
	via, err := ranges.Dial(nodeOf[to].GRPCAddr())
	if err != nil {
		return did, err
	}
	defer via.Close()
	if _, err := via.Admin.AddReplica(ctx, &rangespb.AddReplicaRequest{RangeId: right.Id, StoreId: to}); err != nil {
		return fmt.Sprintf("%s; add a replica on %s", did, nodeOf[to].Name), ranges.FromStatus(err)
	}
	if _, err := via.Admin.TransferLeader(ctx, &rangespb.TransferLeaderRequest{RangeId: right.Id, StoreId: to}); err != nil {
		return fmt.Sprintf("%s; added a replica on %s, make it leader", did, nodeOf[to].Name), ranges.FromStatus(err)
	}
	from := right.Replicas[rng.IntN(len(right.Replicas))].StoreId
	if _, err := via.Admin.RemoveReplica(ctx, &rangespb.RemoveReplicaRequest{RangeId: right.Id, StoreId: from}); err != nil {
		return fmt.Sprintf("%s; replica and leader on %s, remove store %d's", did, nodeOf[to].Name, from), ranges.FromStatus(err)
	}
	label := fmt.Sprintf("store %d", from)
	if n := nodeOf[from]; n != nil {
		label = n.Name
	}
	return fmt.Sprintf("%s; its leader is now on %s, its replica on %s removed", did, nodeOf[to].Name, label), nil
}

func (*SplitScatter) Stop(context.Context, *cluster.Cluster) error { return nil }
