// Package balancer keeps replicas, leaders and range sizes healthy without an
// operator. It is decentralised like the rest of Bifrost: every store runs
// one, which looks at the cluster through gossip (range descriptors, leaders,
// sizes and loads; live stores) and proposes changes only for the ranges it
// leads, one change at a time.
//
// The decision is a pure function (Plan) of a View, tested by tables; the
// Balancer is the shell that builds the view, carries out the first action
// and records it in logs and metrics.
//
// Invariants:
//   - A range never loses quorum by a move: no move leaves fewer replicas on
//     live stores than a quorum of the range's new group (a new replica
//     counts as live: its store is, and it catches up by snapshot). A dead
//     replica is removed first only while the live replicas remain a
//     majority of what is left; a live replica is removed only while every
//     replica of the range is live, and only after a replica was added.
//   - A store that is missing from gossip but not yet declared dead (one
//     that restarts, say) still counts: it keeps its replicas and its place
//     in the replication factor, so its absence never shrinks a range.
//   - Merge alignment converges: while a range is aligned with its left
//     neighbour, replicas are added only where the neighbour is and removed
//     only where it is not; the leader hands its leadership to a store of the
//     neighbour's before its own replica is removed.
//   - One move per store per step; moves wait for the previous one to show
//     in the descriptors.
package balancer

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// ActionKind names a move.
type ActionKind string

// The moves the balancer makes.
const (
	AddReplica     ActionKind = "add-replica"
	RemoveReplica  ActionKind = "remove-replica"
	TransferLeader ActionKind = "transfer-leader"
	Split          ActionKind = "split"
	Merge          ActionKind = "merge"
)

// Action is one move, with the reason it was chosen.
type Action struct {
	Kind    ActionKind
	RangeID uint64
	StoreID uint64 // the store to add to, remove from, or hand leadership to
	Reason  string
	// ByLoad: a split that halves the range's load, not its bytes.
	ByLoad bool
}

func (a Action) String() string {
	if a.StoreID != 0 {
		return fmt.Sprintf("%s range %d store %d: %s", a.Kind, a.RangeID, a.StoreID, a.Reason)
	}
	return fmt.Sprintf("%s range %d: %s", a.Kind, a.RangeID, a.Reason)
}

// RangeView is what the balancer knows of one range.
type RangeView struct {
	Desc        *kvpb.RangeDescriptor
	LeaderStore uint64
	Bytes       uint64
	// Load is writes plus reads per second over the recent window.
	Load float64
	// RecentlyBusy: its load reached the policy's MergeLoad within its
	// MergeDelay (seen by this store while it led the range). Such a range
	// is not merged: a range split by load would otherwise be merged back
	// as soon as its load paused, and split again when it resumed.
	RecentlyBusy bool
}

// View is the balancer's picture of the cluster, from one store.
type View struct {
	Self uint64
	// Live are the stores gossip sees alive; Dead are stores named by a
	// descriptor that have been gone for longer than the dead-store timeout.
	Live   []uint64
	Dead   map[uint64]bool
	Ranges []RangeView
	// CPU is the share of its cores this store's process used over the
	// recent window (0 to 1; -1: unknown).
	CPU float64
}

// Policy holds the targets.
type Policy struct {
	// ReplicationFactor is the replicas a range should have, capped by the
	// number of stores that are not dead (live, or missing for less than
	// the dead-store timeout). Default 3.
	ReplicationFactor int
	// KeyspaceReplication overrides ReplicationFactor per keyspace.
	KeyspaceReplication map[kvpb.Keyspace]int
	// SplitBytes splits a range larger than this; SplitLoad one busier than
	// this (ops/s; 0: never by load).
	SplitBytes uint64
	SplitLoad  float64
	// MergeBytes and MergeLoad: adjacent ranges both under both are merged.
	MergeBytes uint64
	MergeLoad  float64
	// MergeDelay: a range busier than MergeLoad within this long is not
	// merged (RangeView.RecentlyBusy).
	MergeDelay time.Duration
	// SplitLoadCPU: a range is split by load only while its leader's
	// process uses at least this share of its cores (View.CPU; 0: always).
	// A split spreads work that a store cannot keep up with; a range that
	// is busy on a store with CPU to spare gains nothing from it, and
	// each split stalls its writers while the children start.
	SplitLoadCPU float64
}

// rf is the replication factor of a keyspace, capped by the stores.
func (p Policy) rf(ks kvpb.Keyspace, stores int) int {
	rf := p.ReplicationFactor
	if n, ok := p.KeyspaceReplication[ks]; ok && n > 0 {
		rf = n
	}
	if rf <= 0 {
		rf = 3
	}
	return min(rf, stores)
}

// quorum is the votes a Raft group of n replicas needs.
func quorum(n int) int { return n/2 + 1 }

// Plan returns the moves this store should make now, most urgent first. The
// caller makes the first and plans again next step.
func Plan(v View, p Policy) []Action {
	live := map[uint64]bool{}
	for _, s := range v.Live {
		live[s] = true
	}
	replicaCount := map[uint64]int{}
	leaderCount := map[uint64]int{}
	for _, s := range v.Live {
		replicaCount[s], leaderCount[s] = 0, 0
	}
	for _, r := range v.Ranges {
		for _, rep := range r.Desc.Replicas {
			if live[rep.StoreId] {
				replicaCount[rep.StoreId]++
			}
		}
		if live[r.LeaderStore] {
			leaderCount[r.LeaderStore]++
		}
	}
	// Stores that are not dead: live ones, and those named by a descriptor
	// that gossip misses for less than the dead-store timeout.
	notDead := map[uint64]bool{}
	for _, s := range v.Live {
		notDead[s] = true
	}
	for _, r := range v.Ranges {
		for _, rep := range r.Desc.Replicas {
			if !v.Dead[rep.StoreId] {
				notDead[rep.StoreId] = true
			}
		}
	}
	rfOf := func(r RangeView) int { return p.rf(r.Desc.Keyspace, len(notDead)) }
	var out []Action
	mine := func(r RangeView) bool { return r.LeaderStore == v.Self }
	busy := func(r RangeView) bool {
		return r.Desc.Pending != nil || r.Desc.State != kvpb.RangeState_RANGE_STATE_NORMAL
	}
	allLive := func(r RangeView) bool {
		for _, rep := range r.Desc.Replicas {
			if !live[rep.StoreId] {
				return false
			}
		}
		return true
	}
	align := mergeAlignments(v, p, rfOf, busy, allLive)
	aligning := map[uint64]bool{}
	for _, a := range align {
		aligning[a.left.Desc.Id], aligning[a.right.Desc.Id] = true, true
	}

	// 1. Replace replicas on dead stores; keep the replica count.
	for _, r := range v.Ranges {
		if !mine(r) || busy(r) {
			continue
		}
		var liveReps, deadReps []uint64
		for _, rep := range r.Desc.Replicas {
			switch {
			case v.Dead[rep.StoreId]:
				deadReps = append(deadReps, rep.StoreId)
			case live[rep.StoreId]:
				liveReps = append(liveReps, rep.StoreId)
			}
		}
		n, rf := len(r.Desc.Replicas), rfOf(r)
		target := align[r.Desc.Id].target // nil unless r is aligned for a merge
		if len(deadReps) > 0 && len(liveReps) >= quorum(n-1) {
			// Removing one dead replica keeps a live majority of the rest.
			out = append(out, Action{Kind: RemoveReplica, RangeID: r.Desc.Id, StoreID: deadReps[0], Reason: fmt.Sprintf("store %d is dead", deadReps[0])})
			continue
		}
		if n < rf && len(liveReps)+1 >= quorum(n+1) {
			s := leastLoaded(v.Live, replicaCount, storeSet(r.Desc), target)
			if s == 0 {
				s = leastLoaded(v.Live, replicaCount, storeSet(r.Desc), nil)
			}
			if s != 0 {
				out = append(out, Action{Kind: AddReplica, RangeID: r.Desc.Id, StoreID: s, Reason: fmt.Sprintf("%d replicas, want %d", n, rf)})
				continue
			}
		}
		// A live replica goes only while every replica is live: with one
		// missing, the group may need every other vote.
		if n > rf && len(liveReps) == n {
			candidates := liveReps
			if target != nil {
				candidates = slices.DeleteFunc(slices.Clone(liveReps), func(s uint64) bool { return target[s] })
			}
			if s := mostLoaded(candidates, replicaCount, v.Self); s != 0 {
				out = append(out, Action{Kind: RemoveReplica, RangeID: r.Desc.Id, StoreID: s, Reason: fmt.Sprintf("%d replicas, want %d", n, rf)})
				continue
			}
			if target != nil && !target[v.Self] {
				// Only this store's replica is off the target: hand over
				// leadership so that the new leader removes it.
				if s := fewestLeaders(liveReps, leaderCount, target); s != 0 {
					out = append(out, Action{Kind: TransferLeader, RangeID: r.Desc.Id, StoreID: s, Reason: fmt.Sprintf("align with range %d to merge: store %d must go", align[r.Desc.Id].left.Desc.Id, v.Self)})
					continue
				}
			}
		}
	}
	if len(out) > 0 {
		return out
	}

	// 2. Split what is too large or too busy.
	for _, r := range v.Ranges {
		if !mine(r) || busy(r) {
			continue
		}
		if p.SplitBytes > 0 && r.Bytes > p.SplitBytes && r.Bytes != math.MaxUint64 {
			out = append(out, Action{Kind: Split, RangeID: r.Desc.Id, Reason: fmt.Sprintf("%d bytes > %d", r.Bytes, p.SplitBytes)})
		} else if p.SplitLoad > 0 && r.Load > p.SplitLoad && len(v.Live) > 1 && (p.SplitLoadCPU <= 0 || v.CPU < 0 || v.CPU >= p.SplitLoadCPU) {
			// A load split spreads the halves' leaders and replicas over
			// stores; on the only store it buys nothing and each split
			// stalls the range's writers while the children start.
			out = append(out, Action{Kind: Split, RangeID: r.Desc.Id, Reason: fmt.Sprintf("%.0f ops/s > %.0f", r.Load, p.SplitLoad), ByLoad: true})
		}
	}
	if len(out) > 0 {
		return out
	}

	// 3. Merge small, cold neighbours: the right range's leader aligns its
	// replicas with the left's (adding first; rule 1 then removes what is off
	// the left's stores); the left's leader merges once aligned.
	for _, a := range sortedAlignments(align) {
		l, r := a.left, a.right
		if slices.Equal(sortedKeys(storeSet(l.Desc)), sortedKeys(storeSet(r.Desc))) {
			if mine(l) {
				out = append(out, Action{Kind: Merge, RangeID: l.Desc.Id, Reason: fmt.Sprintf("ranges %d and %d are small and cold", l.Desc.Id, r.Desc.Id)})
			}
			continue
		}
		if !mine(r) || len(r.Desc.Replicas) > rfOf(r) {
			continue
		}
		if add := missing(a.target, storeSet(r.Desc)); add != 0 {
			out = append(out, Action{Kind: AddReplica, RangeID: r.Desc.Id, StoreID: add, Reason: fmt.Sprintf("align with range %d to merge", l.Desc.Id)})
		}
	}
	if len(out) > 0 {
		return out
	}

	// 4. Spread replicas: move one from a store over the mean to one under it.
	mean := float64(0)
	for _, c := range replicaCount {
		mean += float64(c)
	}
	if len(v.Live) > 0 {
		mean /= float64(len(v.Live))
	}
	for _, r := range v.Ranges {
		if !mine(r) || busy(r) || !allLive(r) || aligning[r.Desc.Id] {
			continue
		}
		for _, rep := range r.Desc.Replicas {
			if rep.StoreId == v.Self || !live[rep.StoreId] || float64(replicaCount[rep.StoreId]) < math.Floor(mean)+1 {
				continue
			}
			if t := leastLoaded(v.Live, replicaCount, storeSet(r.Desc), nil); t != 0 && float64(replicaCount[t]) < math.Ceil(mean)-0.5 && replicaCount[rep.StoreId]-replicaCount[t] >= 2 {
				// Add first; the over-replicated range then sheds the replica
				// on the most loaded store.
				out = append(out, Action{Kind: AddReplica, RangeID: r.Desc.Id, StoreID: t, Reason: fmt.Sprintf("store %d holds %d replicas, store %d %d", rep.StoreId, replicaCount[rep.StoreId], t, replicaCount[t])})
				return out
			}
		}
	}

	// 5. Spread leaders: hand one of ours to the replica store with the fewest.
	leaderMean := float64(len(v.Ranges)) / float64(max(1, len(v.Live)))
	if float64(leaderCount[v.Self]) > math.Ceil(leaderMean) {
		for _, r := range v.Ranges {
			if !mine(r) || busy(r) {
				continue
			}
			best := uint64(0)
			for _, rep := range r.Desc.Replicas {
				if rep.StoreId != v.Self && live[rep.StoreId] && !v.Dead[rep.StoreId] &&
					(best == 0 || leaderCount[rep.StoreId] < leaderCount[best]) {
					best = rep.StoreId
				}
			}
			if best != 0 && leaderCount[best]+1 < leaderCount[v.Self] {
				out = append(out, Action{Kind: TransferLeader, RangeID: r.Desc.Id, StoreID: best, Reason: fmt.Sprintf("store %d leads %d ranges, store %d %d", v.Self, leaderCount[v.Self], best, leaderCount[best])})
				return out
			}
		}
	}
	return out
}

func storeSet(d *kvpb.RangeDescriptor) map[uint64]bool {
	out := map[uint64]bool{}
	for _, r := range d.Replicas {
		out[r.StoreId] = true
	}
	return out
}

func sortedKeys(m map[uint64]bool) []uint64 {
	out := make([]uint64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// missing returns the lowest store in want that have lacks, 0 if none.
func missing(want, have map[uint64]bool) uint64 {
	for _, s := range sortedKeys(want) {
		if !have[s] {
			return s
		}
	}
	return 0
}

// leastLoaded picks the live store with the fewest replicas that is not in
// exclude and, unless only is nil, is in only (ties: lowest ID).
func leastLoaded(live []uint64, count map[uint64]int, exclude, only map[uint64]bool) uint64 {
	best := uint64(0)
	for _, s := range sortedKeys(setOf(live)) {
		if exclude[s] || (only != nil && !only[s]) {
			continue
		}
		if best == 0 || count[s] < count[best] {
			best = s
		}
	}
	return best
}

// mostLoaded picks the store with the most replicas among candidates, never
// keep (ties: highest ID).
func mostLoaded(candidates []uint64, count map[uint64]int, keep uint64) uint64 {
	best := uint64(0)
	for _, s := range sortedKeys(setOf(candidates)) {
		if s == keep {
			continue
		}
		if best == 0 || count[s] >= count[best] {
			best = s
		}
	}
	return best
}

func setOf(s []uint64) map[uint64]bool {
	out := map[uint64]bool{}
	for _, x := range s {
		out[x] = true
	}
	return out
}

// fewestLeaders picks the store among candidates that are in only with the
// fewest leaders (ties: lowest ID).
func fewestLeaders(candidates []uint64, leaders map[uint64]int, only map[uint64]bool) uint64 {
	best := uint64(0)
	for _, s := range sortedKeys(setOf(candidates)) {
		if only[s] && (best == 0 || leaders[s] < leaders[best]) {
			best = s
		}
	}
	return best
}

// alignment is a pair of adjacent ranges to merge: right's replicas are
// moved onto target, the stores of left.
type alignment struct {
	left, right RangeView
	target      map[uint64]bool
}

// mergeAlignments returns, keyed by the right range's ID, the neighbours to
// merge: adjacent ranges of one keyspace, both small and cold, not changing,
// every replica on a live store, and the left one at the replication factor
// (its leader fixes its count first). A range that is itself being aligned
// with its left neighbour is not a target for its right one until that merge
// is done, so that no range chases a moving target.
func mergeAlignments(v View, p Policy, rfOf func(RangeView) int, busy, allLive func(RangeView) bool) map[uint64]alignment {
	byStart := slices.Clone(v.Ranges)
	sort.Slice(byStart, func(i, j int) bool {
		a, b := byStart[i].Desc, byStart[j].Desc
		if a.Keyspace != b.Keyspace {
			return a.Keyspace < b.Keyspace
		}
		return bytes.Compare(a.Start, b.Start) < 0
	})
	small := func(r RangeView) bool {
		return p.MergeBytes > 0 && r.Bytes < p.MergeBytes && (p.MergeLoad <= 0 || r.Load < p.MergeLoad) && !r.RecentlyBusy
	}
	out := map[uint64]alignment{}
	unaligned := map[uint64]bool{} // right sides still being aligned
	for i := 0; i+1 < len(byStart); i++ {
		l, r := byStart[i], byStart[i+1]
		if l.Desc.Keyspace != r.Desc.Keyspace || !bytes.Equal(l.Desc.End, r.Desc.Start) || busy(l) || busy(r) {
			continue
		}
		if !small(l) || !small(r) || (p.SplitBytes > 0 && l.Bytes+r.Bytes >= p.SplitBytes/2) {
			continue
		}
		if !allLive(l) || !allLive(r) || len(l.Desc.Replicas) != rfOf(l) || unaligned[l.Desc.Id] {
			continue
		}
		target := storeSet(l.Desc)
		out[r.Desc.Id] = alignment{left: l, right: r, target: target}
		if !slices.Equal(sortedKeys(target), sortedKeys(storeSet(r.Desc))) {
			unaligned[r.Desc.Id] = true
		}
	}
	return out
}

// sortedAlignments returns the alignments by keyspace and start key.
func sortedAlignments(m map[uint64]alignment) []alignment {
	out := make([]alignment, 0, len(m))
	for _, a := range m {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].left.Desc, out[j].left.Desc
		if a.Keyspace != b.Keyspace {
			return a.Keyspace < b.Keyspace
		}
		return bytes.Compare(a.Start, b.Start) < 0
	})
	return out
}
