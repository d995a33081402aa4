package ranges

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// Bootstrap, the Consul way: stores started with bootstrap-expect N wait until
// N stores are members and the view has been stable for a second; then the
// store with the lowest ID, and only it, creates one range per keyspace on the
// min(N, 3) lowest stores. It never happens twice: a store that holds or held
// a range announces it, and a store that sees such an announcement joins
// instead; the plan is a function of the member set, so a bootstrapper that
// crashes halfway repeats the same plan on restart.

// FirstRanges are the ranges a new cluster starts with, one per keyspace.
var FirstRanges = []struct {
	ID       uint64
	Keyspace kvpb.Keyspace
}{
	{1, kvpb.Keyspace_KEYSPACE_KV},
	{2, kvpb.Keyspace_KEYSPACE_DIST},
	{3, kvpb.Keyspace_KEYSPACE_INBOX},
	{4, kvpb.Keyspace_KEYSPACE_RETAIN},
}

// MaxInitialReplicas caps the replicas of the first ranges.
const MaxInitialReplicas = 3

func (n *Node) bootstrapLoop() {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var lastView string
	var stableSince time.Time
	waiting := false
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if n.isBootstrapped() {
			return
		}
		stores := n.members.Stores()
		for _, m := range stores {
			if m.Meta.Bootstrapped {
				n.log.Info("joining the existing cluster", "seen", m.Name)
				return
			}
		}
		if len(stores) < n.cfg.BootstrapExpect {
			if !waiting {
				n.log.Info("waiting for stores to bootstrap", "expect", n.cfg.BootstrapExpect, "have", len(stores))
				waiting = true
			}
			continue
		}
		sort.Slice(stores, func(i, j int) bool { return stores[i].Meta.StoreID < stores[j].Meta.StoreID })
		var ids []string
		for _, m := range stores {
			ids = append(ids, fmt.Sprint(m.Meta.StoreID))
		}
		view := strings.Join(ids, ",")
		if view != lastView {
			lastView, stableSince = view, time.Now()
			continue
		}
		if time.Since(stableSince) < time.Second || stores[0].Meta.StoreID != n.store.ID() {
			continue
		}
		plan := stores[:min(n.cfg.BootstrapExpect, MaxInitialReplicas, len(stores))]
		ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
		err := n.bootstrap(ctx, plan)
		cancel()
		if err != nil {
			n.log.Warn("bootstrap attempt failed, retrying", "err", err)
			continue
		}
		return
	}
}

func (n *Node) bootstrap(ctx context.Context, plan []Member) error {
	members := map[uint64]string{}
	var replicas []*kvpb.Replica
	for i, m := range plan {
		id := uint64(i + 1)
		members[id] = m.Meta.Raft
		replicas = append(replicas, &kvpb.Replica{ReplicaId: id, StoreId: m.Meta.StoreID, RaftAddr: m.Meta.Raft})
	}
	n.log.Info("bootstrapping the cluster", "stores", len(plan))
	for _, fr := range FirstRanges {
		for i, m := range plan {
			boot := &kvpb.BootRecord{RangeId: fr.ID, ReplicaId: uint64(i + 1), InitialMembers: members}
			if err := n.startOn(ctx, m.Meta.StoreID, boot); err != nil {
				return fmt.Errorf("start range %d on store %d: %w", fr.ID, m.Meta.StoreID, err)
			}
		}
	}
	for _, fr := range FirstRanges {
		desc := &kvpb.RangeDescriptor{
			Id: fr.ID, Keyspace: fr.Keyspace, Ver: 1, ConfVer: 1, Replicas: replicas,
			NextReplicaId: uint64(len(plan) + 1),
		}
		cmd := &kvpb.Command{Payload: &kvpb.Command_Init{Init: &kvpb.InitRange{Range: desc}}}
		for {
			res, err := n.store.Propose(ctx, fr.ID, cmd)
			if err == nil && res.Status == kvpb.Status_STATUS_OK {
				break
			}
			if err == nil {
				return fmt.Errorf("init range %d: %s", fr.ID, res.Message)
			}
			if !errors.Is(err, kvstore.ErrNotReady) && !errors.Is(err, kvstore.ErrTimeout) {
				return fmt.Errorf("init range %d: %w", fr.ID, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	n.log.Info("cluster bootstrapped", "ranges", len(FirstRanges))
	return nil
}
