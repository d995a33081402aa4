package ranges

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// Bootstrap, the Consul way: stores started with bootstrap-expect N wait until
// N stores are members and the view has been stable for a second; then the
// store with the lowest ID, and only it, creates one range per keyspace on the
// min(N, 3) lowest stores. It never happens twice: a store that holds or held
// a range announces it, and a store that sees such an announcement joins
// instead.
//
// The bootstrapper writes its plan (the ranges, their replica IDs, stores and
// Raft addresses) to its data directory, synced, before it starts anything,
// and removes it only once every first range is initialised. While the plan
// is there (a failed attempt, or a crash and restart halfway) the store
// finishes that same plan, whatever the member view says now and although it
// already announces itself as bootstrapped: it starts each range's replicas
// (idempotent for a replica that runs) and proposes the range's Init
// (idempotent for an initialised range), range after range, skipping a range
// its local replica already holds the descriptor of. A plan of which nothing
// was started (no local boot record of its first range: the local replica is
// always started first) is dropped, and the bootstrap starts over as if it
// had never been tried, so the checks above still guard it.

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

// Failpoint steps of the bootstrap (NodeConfig.Failpoint): after the replicas
// of one first range have started on every planned store, and after one first
// range was initialised.
const (
	FailBootstrapAfterStart = "bootstrap-after-start"
	FailBootstrapAfterInit  = "bootstrap-after-init"
)

// MaxInitialReplicas caps the replicas of the first ranges.
const MaxInitialReplicas = 3

// bootstrapPlanFile, in the store's data directory, holds the plan of a
// bootstrap this store began and has not finished.
const bootstrapPlanFile = "bootstrap-plan.json"

type bootstrapPlan struct {
	Ranges   []plannedRange   `json:"ranges"`
	Replicas []plannedReplica `json:"replicas"`
}

type plannedRange struct {
	ID       uint64        `json:"id"`
	Keyspace kvpb.Keyspace `json:"keyspace"`
}

type plannedReplica struct {
	ReplicaID uint64 `json:"replica_id"`
	StoreID   uint64 `json:"store_id"`
	Raft      string `json:"raft"`
}

func newBootstrapPlan(stores []Member) *bootstrapPlan {
	p := &bootstrapPlan{}
	for _, fr := range FirstRanges {
		p.Ranges = append(p.Ranges, plannedRange{ID: fr.ID, Keyspace: fr.Keyspace})
	}
	for i, m := range stores {
		p.Replicas = append(p.Replicas, plannedReplica{ReplicaID: uint64(i + 1), StoreID: m.Meta.StoreID, Raft: m.Meta.Raft})
	}
	return p
}

func bootstrapPlanPath(dataDir string) string { return filepath.Join(dataDir, bootstrapPlanFile) }

// hasBootstrapPlan reports whether a store's data directory holds an
// unfinished bootstrap plan.
func hasBootstrapPlan(dataDir string) bool {
	_, err := os.Stat(bootstrapPlanPath(dataDir))
	return err == nil
}

// loadBootstrapPlan returns the unfinished plan, or nil.
func (n *Node) loadBootstrapPlan() (*bootstrapPlan, error) {
	b, err := os.ReadFile(bootstrapPlanPath(n.cfg.Store.DataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read bootstrap plan: %w", err)
	}
	p := &bootstrapPlan{}
	if err := json.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("corrupt bootstrap plan %s: %w", bootstrapPlanPath(n.cfg.Store.DataDir), err)
	}
	if len(p.Ranges) == 0 || len(p.Replicas) == 0 || p.Replicas[0].StoreID != n.store.ID() {
		return nil, fmt.Errorf("bootstrap plan %s is not this store's", bootstrapPlanPath(n.cfg.Store.DataDir))
	}
	return p, nil
}

// saveBootstrapPlan writes the plan durably (temporary file, fsync, rename,
// fsync of the directory).
func (n *Node) saveBootstrapPlan(p *bootstrapPlan) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	path := bootstrapPlanPath(n.cfg.Store.DataDir)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("write bootstrap plan: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(n.cfg.Store.DataDir)
	}
	if err != nil {
		return fmt.Errorf("write bootstrap plan: %w", err)
	}
	return nil
}

func (n *Node) removeBootstrapPlan() error {
	if err := os.Remove(bootstrapPlanPath(n.cfg.Store.DataDir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove bootstrap plan: %w", err)
	}
	return syncDir(n.cfg.Store.DataDir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func (n *Node) bootstrapLoop() {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var lastView string
	var stableSince, lastWarn time.Time
	waiting := false
	warn := func(msg string, err error) {
		if time.Since(lastWarn) >= 5*time.Second {
			n.log.Warn(msg, "err", err)
			lastWarn = time.Now()
		}
	}
	for first := true; ; first = false {
		// The first look is at once: a store that bootstraps alone need
		// not wait a tick.
		if !first {
			select {
			case <-n.ctx.Done():
				return
			case <-t.C:
			}
		}
		plan, err := n.loadBootstrapPlan()
		if err != nil {
			warn("bootstrap plan unreadable; not bootstrapping", err)
			continue
		}
		if plan != nil && !n.store.HasBootRecord(plan.Ranges[0].ID) {
			// Nothing of it was started: forget it and start over.
			if err := n.removeBootstrapPlan(); err != nil {
				warn("bootstrap plan", err)
				continue
			}
			plan = nil
		}
		if plan != nil {
			if !n.runBootstrapPlan(plan, warn) {
				continue
			}
			return
		}
		if n.isBootstrapped() || n.cfg.BootstrapExpect == 0 {
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
			if n.cfg.BootstrapExpect != 1 {
				continue
			}
		}
		// A view of several stores must hold still a while (more may be
		// joining); a cluster of one expected store is this one.
		settled := n.cfg.BootstrapExpect == 1 || time.Since(stableSince) >= time.Second
		if !settled || stores[0].Meta.StoreID != n.store.ID() {
			continue
		}
		plan = newBootstrapPlan(stores[:min(n.cfg.BootstrapExpect, MaxInitialReplicas, len(stores))])
		if err := n.saveBootstrapPlan(plan); err != nil {
			warn("bootstrap attempt failed, retrying", err)
			continue
		}
		n.log.Info("bootstrapping the cluster", "stores", len(plan.Replicas))
		if n.runBootstrapPlan(plan, warn) {
			return
		}
	}
}

// runBootstrapPlan makes one attempt at the plan and, once it is done,
// removes it. It reports whether the bootstrap is finished.
func (n *Node) runBootstrapPlan(plan *bootstrapPlan, warn func(string, error)) bool {
	ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	err := n.bootstrap(ctx, plan)
	cancel()
	if err == nil {
		err = n.removeBootstrapPlan()
	}
	if err != nil {
		warn("bootstrap attempt failed, retrying the same plan", err)
		return false
	}
	n.log.Info("cluster bootstrapped", "ranges", len(plan.Ranges))
	return true
}

// bootstrap creates and initialises the plan's ranges: it starts them on
// every store, the first before the others (a plan is abandoned only while
// its first range has no boot record), then initialises them all at once, so
// that their elections overlap (one range after the other cost an election
// timeout each: 4 s from a fresh start to the first PUBACK in standalone).
// Every step is idempotent, so that an attempt that failed or a bootstrapper
// that crashed halfway can run it again.
func (n *Node) bootstrap(ctx context.Context, plan *bootstrapPlan) error {
	members := map[uint64]string{}
	var replicas []*kvpb.Replica
	for _, r := range plan.Replicas {
		members[r.ReplicaID] = r.Raft
		replicas = append(replicas, &kvpb.Replica{ReplicaId: r.ReplicaID, StoreId: r.StoreID, RaftAddr: r.Raft})
	}
	var todo []plannedRange
	for _, pr := range plan.Ranges {
		if d, err := n.store.Descriptor(pr.ID); err == nil && d != nil {
			continue // initialised by an earlier attempt
		}
		todo = append(todo, pr)
	}
	// start starts the ranges on every store, then initialises them in
	// parallel.
	start := func(rs []plannedRange) error {
		for _, pr := range rs {
			for _, r := range plan.Replicas {
				boot := &kvpb.BootRecord{RangeId: pr.ID, ReplicaId: r.ReplicaID, InitialMembers: members}
				if err := n.startOn(ctx, r.StoreID, boot, nil); err != nil {
					return fmt.Errorf("start range %d on store %d: %w", pr.ID, r.StoreID, err)
				}
			}
		}
		return nil
	}
	initAll := func(rs []plannedRange) error {
		errs := make([]error, len(rs))
		var wg sync.WaitGroup
		for i, pr := range rs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = n.initRange(ctx, &kvpb.RangeDescriptor{
					Id: pr.ID, Keyspace: pr.Keyspace, Ver: 1, ConfVer: 1, Replicas: replicas,
					NextReplicaId: uint64(len(plan.Replicas) + 1),
				})
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	if len(todo) == 0 {
		return nil
	}
	first, rest := todo[:1], todo[1:]
	if err := start(first); err != nil {
		return err
	}
	if err := n.failpoint(FailBootstrapAfterStart); err != nil {
		return err
	}
	if err := start(rest); err != nil {
		return err
	}
	if err := initAll(first); err != nil {
		return err
	}
	if err := n.failpoint(FailBootstrapAfterInit); err != nil {
		return err
	}
	return initAll(rest)
}

// initRange proposes a first range's Init until it is applied. A range
// already initialised (by an earlier attempt whose answer was lost; it may
// have changed since) is done.
func (n *Node) initRange(ctx context.Context, desc *kvpb.RangeDescriptor) error {
	cmd := &kvpb.Command{Payload: &kvpb.Command_Init{Init: &kvpb.InitRange{Range: desc}}}
	for {
		res, err := n.store.Propose(ctx, desc.Id, cmd)
		if err == nil && res.Status == kvpb.Status_STATUS_OK {
			return nil
		}
		if err == nil && res.Status == kvpb.Status_STATUS_BAD_REQUEST && res.GetRange().GetId() == desc.Id {
			return nil
		}
		if err == nil {
			return fmt.Errorf("init range %d: %s", desc.Id, res.Message)
		}
		if !transient(err) {
			return fmt.Errorf("init range %d: %w", desc.Id, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
