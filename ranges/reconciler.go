package ranges

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// The store reconciler (DESIGN section 3, split step 6) makes the replicas a
// store runs match the descriptors that list it. A store that caught a parent
// range up by a snapshot taken after a split never applied the split, so
// nothing started its replica of the child; a store that was down while it
// was removed from a range, or while a range was merged into one it is not
// part of, still runs a replica nobody talks to. Every ReconcileInterval each
// store, leader or not:
//
//   - Start: for a range whose descriptor (gossip, the routing table) lists
//     this store but that the store does not run, has no boot record for (a
//     split applied here writes one and starts the child itself) and never
//     tombstoned, it
//     reads the descriptor linearizably from the range's other replicas
//     (leader first). Only if that descriptor is no older than the one this
//     store knows, is normal, still lists this store, no local replica of
//     another range overlaps it (newer: the descriptor is stale; older: that
//     replica has yet to catch up, and its old writes would land on the
//     child's keys), and every other replica has compacted its bootstrap log (a
//     joiner must get a snapshot, never a replay onto empty state), does it
//     start the replica with the descriptor's replica ID as a joiner, the
//     way AddReplica starts one: Raft already counts it, and the leader
//     brings it up to date by snapshot. The same answer must be seen twice,
//     at least two intervals apart.
//   - Remove: a local replica whose range's current descriptor, read
//     linearizably from the other replicas at a higher version, no longer
//     lists it (not even as pending), or whose span a range it is no member
//     of now covers at a higher version (merged away), is destroyed once
//     the same answer was seen twice at least two intervals apart. A store
//     that is a member of the covering range leaves the retirement to that
//     replica (its merge commit checks the local right replica). The store
//     deletes only the parts of the destroyed replica's span that no other
//     local replica holds (kvstore's span index).
//
// Actions are rate-limited per tick and a range is not checked again for a
// few intervals after a check, whatever it found.

const (
	// reconcileChecksPerTick bounds the ranges checked remotely per tick.
	reconcileChecksPerTick = 4
	// reconcileActionsPerTick bounds the replicas started or removed per tick.
	reconcileActionsPerTick = 2
	// reconcileRecheckTicks is how many ticks a checked range waits before
	// it is checked again.
	reconcileRecheckTicks = 3
)

// seenAt is a descriptor version the reconciler saw calling for an action,
// and when it first saw it.
type seenAt struct {
	ver, confVer uint64
	since        time.Time
}

type storeReconciler struct {
	actions *prometheus.CounterVec

	mu     sync.Mutex
	counts map[string]uint64

	// Owned by the loop's goroutine.
	nextCheck map[uint64]time.Time
	removals  map[uint64]seenAt
	starts    map[uint64]seenAt
}

func newStoreReconciler(reg prometheus.Registerer) *storeReconciler {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bifrost_ranges_reconciler_actions_total",
		Help: "Replicas the store reconciler started or removed on this store (and failures to), by action.",
	}, []string{"action"})
	if reg != nil {
		reg.MustRegister(c)
	}
	return &storeReconciler{actions: c, counts: map[string]uint64{},
		nextCheck: map[uint64]time.Time{}, removals: map[uint64]seenAt{}, starts: map[uint64]seenAt{}}
}

func (r *storeReconciler) count(action string) {
	r.actions.WithLabelValues(action).Inc()
	r.mu.Lock()
	r.counts[action]++
	r.mu.Unlock()
}

// ReconcilerActions returns how many times this store's reconciler took an
// action: "start", "remove", "start_error" or "remove_error".
func (n *Node) ReconcilerActions(action string) float64 {
	n.recon.mu.Lock()
	defer n.recon.mu.Unlock()
	return float64(n.recon.counts[action])
}

func (n *Node) storeReconcileLoop() {
	t := time.NewTicker(n.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if !n.isBootstrapped() {
			continue
		}
		n.reconcileStore()
	}
}

// reconcileStore runs one tick of the store reconciler.
func (n *Node) reconcileStore() {
	r := n.recon
	now := time.Now()
	checks, actions := 0, 0
	due := func(rangeID uint64) bool {
		if checks >= reconcileChecksPerTick || actions >= reconcileActionsPerTick || now.Before(r.nextCheck[rangeID]) {
			return false
		}
		checks++
		r.nextCheck[rangeID] = now.Add(reconcileRecheckTicks * n.cfg.ReconcileInterval)
		return true
	}
	self := n.store.ID()
	local := n.store.Replicas()

	// Ranges that list this store and that it does not run.
	for _, rt := range n.table.All() {
		rep := replicaOnStore(rt.Desc, self)
		if rep == nil || rt.Desc.State != kvpb.RangeState_RANGE_STATE_NORMAL || n.holds(rt.Desc.Id) ||
			n.store.HasBootRecord(rt.Desc.Id) || n.store.Tombstoned(rt.Desc.Id) {
			delete(r.starts, rt.Desc.Id)
			continue
		}
		if overlappingLocal(local, rt.Desc) != nil || !due(rt.Desc.Id) {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
		started, err := n.startMissing(ctx, rt)
		cancel()
		if started {
			actions++
		}
		if err != nil {
			n.log.Warn("reconciler: start replica", "range", rt.Desc.Id, "err", err)
		}
	}

	// Local replicas whose range no longer lists this store, or is gone.
	seen := map[uint64]bool{}
	for _, lr := range local {
		d := lr.Descriptor
		seen[lr.RangeID] = true
		if d == nil || n.store.IsLeader(lr.RangeID) {
			delete(r.removals, lr.RangeID)
			continue
		}
		rt := n.table.Get(lr.RangeID)
		var cover *Route
		if rt == nil {
			cover = coveringRoute(n.table, d)
			if cover == nil {
				delete(r.removals, lr.RangeID)
				continue
			}
		} else if !newer(rt.Desc, d) || replicaOnStore(rt.Desc, self) != nil {
			delete(r.removals, lr.RangeID)
			continue
		}
		if !due(lr.RangeID) {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
		removed, err := n.removeStale(ctx, lr, rt, cover)
		cancel()
		if removed {
			actions++
		}
		if err != nil {
			n.log.Warn("reconciler: remove replica", "range", lr.RangeID, "err", err)
		}
	}
	for id := range r.removals {
		if !seen[id] {
			delete(r.removals, id)
		}
	}
	for id, s := range r.starts {
		if now.Sub(s.since) > time.Minute {
			delete(r.starts, id)
		}
	}
	for id, t := range r.nextCheck {
		if now.Sub(t) > time.Minute {
			delete(r.nextCheck, id)
		}
	}
}

// startMissing starts this store's replica of a range its descriptor lists.
func (n *Node) startMissing(ctx context.Context, rt *Route) (bool, error) {
	self := n.store.ID()
	d, err := n.remoteDescriptor(ctx, rt)
	if err != nil {
		return false, err
	}
	if d.Ver < rt.Desc.Ver || (d.Ver == rt.Desc.Ver && d.ConfVer < rt.Desc.ConfVer) {
		return false, fmt.Errorf("the range's replicas answered version %d.%d, older than the known %d.%d", d.Ver, d.ConfVer, rt.Desc.Ver, rt.Desc.ConfVer)
	}
	r := n.recon
	rep := replicaOnStore(d, self)
	if rep == nil || d.State != kvpb.RangeState_RANGE_STATE_NORMAL {
		delete(r.starts, d.Id)
		return false, nil // the table was stale: nothing to start
	}
	if ol := overlappingLocal(n.store.Replicas(), d); ol != nil {
		return false, fmt.Errorf("local range %d at version %d overlaps version %d: wait until it caught up", ol.Id, ol.Ver, d.Ver)
	}
	if n.holds(d.Id) || n.store.HasBootRecord(d.Id) || n.store.Tombstoned(d.Id) {
		// Running, or about to: a split applied here wrote the child's boot
		// record and starts it (as a bootstrapping member, whose first
		// compaction the record tracks: it must not be replaced).
		delete(r.starts, d.Id)
		return false, nil
	}
	for _, other := range d.Replicas {
		if other.StoreId == self {
			continue
		}
		if _, done, err := n.replicaDescriptor(ctx, other.StoreId, d.Id); err != nil || !done {
			return false, fmt.Errorf("replica %d on store %d has not compacted its first log yet (%v)", other.ReplicaId, other.StoreId, err)
		}
	}
	// Act only on an answer seen twice, at least two intervals apart.
	prev, ok := r.starts[d.Id]
	if !ok || prev.ver != d.Ver || prev.confVer != d.ConfVer {
		r.starts[d.Id] = seenAt{ver: d.Ver, confVer: d.ConfVer, since: time.Now()}
		r.nextCheck[d.Id] = time.Now().Add(2 * n.cfg.ReconcileInterval)
		return false, nil
	}
	if time.Since(prev.since) < 2*n.cfg.ReconcileInterval {
		return false, nil
	}
	delete(r.starts, d.Id)
	// Raft counts this replica already (it is in the descriptor, which
	// follows Raft's membership): start it as a joiner, the way AddReplica
	// does, and the leader sends it a snapshot.
	boot := &kvpb.BootRecord{RangeId: d.Id, ReplicaId: rep.ReplicaId, Join: true}
	if err := n.startOn(ctx, self, boot, d); err != nil {
		n.recon.count("start_error")
		return false, fmt.Errorf("start replica %d: %w", rep.ReplicaId, err)
	}
	n.recon.count("start")
	n.log.Info("reconciler started a replica its range lists", "range", d.Id, "replica", rep.ReplicaId, "ver", d.Ver, "conf_ver", d.ConfVer)
	return true, nil
}

// removeStale destroys a local replica that its range (rt) no longer lists,
// or whose span another range (cover) took over, after checking both with
// the ranges' other replicas.
func (n *Node) removeStale(ctx context.Context, lr kvstore.ReplicaStatus, rt, cover *Route) (bool, error) {
	self := n.store.ID()
	local := lr.Descriptor
	r := n.recon
	var cur *kvpb.RangeDescriptor
	var err error
	if rt != nil {
		cur, err = n.remoteDescriptor(ctx, rt)
		if err != nil {
			return false, err
		}
		if cur.Id != local.Id || !newer(cur, local) || replicaOnStore(cur, self) != nil ||
			hasReplica(cur, lr.ReplicaID) || (cur.Pending != nil && (cur.Pending.StoreId == self || cur.Pending.ReplicaId == lr.ReplicaID)) {
			delete(r.removals, lr.RangeID)
			return false, nil
		}
	} else {
		cur, err = n.remoteDescriptor(ctx, cover)
		if err != nil {
			return false, err
		}
		if cur.Id == local.Id || cur.Keyspace != local.Keyspace || cur.Ver <= local.Ver || !kvstore.SpanCovers(cur, local) ||
			cur.State != kvpb.RangeState_RANGE_STATE_NORMAL {
			delete(r.removals, lr.RangeID)
			return false, nil
		}
		if replicaOnStore(cur, self) != nil || n.holds(cur.Id) || (cur.Pending != nil && cur.Pending.StoreId == self) {
			// This store's replica of the covering range retires the local
			// one when it applies the merge (or a snapshot past it).
			delete(r.removals, lr.RangeID)
			return false, nil
		}
	}
	// Act only on an answer seen twice, at least two intervals apart.
	prev, ok := r.removals[lr.RangeID]
	if !ok || prev.ver != cur.Ver || prev.confVer != cur.ConfVer {
		r.removals[lr.RangeID] = seenAt{ver: cur.Ver, confVer: cur.ConfVer, since: time.Now()}
		r.nextCheck[lr.RangeID] = time.Now().Add(2 * n.cfg.ReconcileInterval)
		return false, nil
	}
	if time.Since(prev.since) < 2*n.cfg.ReconcileInterval {
		return false, nil
	}
	if d, err := n.store.Descriptor(lr.RangeID); err != nil || d == nil || d.Ver != local.Ver || d.ConfVer != local.ConfVer {
		return false, nil // the local replica moved on since: look again later
	}
	// A stale replica's span may be wider than what it owns now: the store
	// deletes only the parts no other local replica holds.
	delete(r.removals, lr.RangeID)
	if err := n.store.DestroyReplica(ctx, lr.RangeID, lr.ReplicaID); err != nil {
		if errors.Is(err, kvstore.ErrRangeNotFound) {
			return false, nil // retired meanwhile
		}
		r.count("remove_error")
		return false, fmt.Errorf("destroy replica %d: %w", lr.ReplicaID, err)
	}
	r.count("remove")
	why := "its range no longer lists this store"
	if rt == nil {
		why = fmt.Sprintf("range %d covers its span", cur.Id)
	}
	n.log.Info("reconciler removed a replica", "range", lr.RangeID, "replica", lr.ReplicaID, "why", why, "ver", cur.Ver, "conf_ver", cur.ConfVer)
	return true, nil
}

// remoteDescriptor reads a range's descriptor linearizably through its
// replicas on other stores, the leader's first. The local replica is never
// asked: it is the one whose view is in doubt.
func (n *Node) remoteDescriptor(ctx context.Context, rt *Route) (*kvpb.RangeDescriptor, error) {
	self := n.store.ID()
	var order []uint64
	if s := rt.LeaderStore(); s != 0 && s != self {
		order = append(order, s)
	}
	for _, rep := range rt.Desc.Replicas {
		if rep.StoreId != self && (len(order) == 0 || rep.StoreId != order[0]) {
			order = append(order, rep.StoreId)
		}
	}
	lastErr := fmt.Errorf("range %d has no replica on another store", rt.Desc.Id)
	for _, storeID := range order {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		resp, err := n.Execute(actx, storeID, &rangespb.ExecuteRequest{RangeId: rt.Desc.Id,
			Request: &rangespb.ExecuteRequest_Query{Query: &kvpb.Query{DescriptorOnly: true}}})
		cancel()
		if err != nil {
			lastErr = fmt.Errorf("store %d: %w", storeID, err)
			continue
		}
		res := resp.GetResult()
		if res.GetStatus() != kvpb.Status_STATUS_OK || res.GetRange() == nil || res.GetRange().Id != rt.Desc.Id {
			lastErr = fmt.Errorf("store %d answered %s: %s", storeID, res.GetStatus(), res.GetMessage())
			continue
		}
		n.table.Update(&rangespb.RangeInfo{Range: res.Range})
		return res.Range, nil
	}
	return nil, lastErr
}

func replicaOnStore(d *kvpb.RangeDescriptor, storeID uint64) *kvpb.Replica {
	for _, r := range d.Replicas {
		if r.StoreId == storeID {
			return r
		}
	}
	return nil
}

func hasReplica(d *kvpb.RangeDescriptor, replicaID uint64) bool {
	for _, r := range d.Replicas {
		if r.ReplicaId == replicaID {
			return true
		}
	}
	return false
}

// overlappingLocal returns the descriptor of a local replica of another
// range that shares a key with d, or nil. At a higher version it means d is
// out of date. At a lower one the local replica has yet to catch up (apply
// the split from its log, or take a snapshot): starting d's replica now would
// let that replica's old writes land on keys d's snapshot already holds, as
// both share the store's data span.
func overlappingLocal(local []kvstore.ReplicaStatus, d *kvpb.RangeDescriptor) *kvpb.RangeDescriptor {
	for _, lr := range local {
		ld := lr.Descriptor
		if ld != nil && ld.Id != d.Id && ld.Keyspace == d.Keyspace && overlaps(ld, d) {
			return ld
		}
	}
	return nil
}

// coveringRoute returns the route of another range of d's keyspace that
// covers d's whole span at a higher version, or nil.
func coveringRoute(t *Table, d *kvpb.RangeDescriptor) *Route {
	rt := t.Lookup(d.Keyspace, d.Start)
	if rt == nil || rt.Desc.Id == d.Id || rt.Desc.Ver <= d.Ver || !kvstore.SpanCovers(rt.Desc, d) {
		return nil
	}
	return rt
}
