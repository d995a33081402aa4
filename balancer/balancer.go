package balancer

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/balancer/balancerpb"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/ranges"
)

// Config configures a Balancer. Zero fields take the defaults.
type Config struct {
	Policy
	// Interval between steps; default 5s.
	Interval time.Duration
	// DeadStoreTimeout: a store gone from gossip this long has its replicas
	// replaced; default 30s.
	DeadStoreTimeout time.Duration
	// ActionTimeout bounds one move; default 60s.
	ActionTimeout time.Duration
	// Paused starts the balancer paused.
	Paused     bool
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// DefaultPolicy is the policy of a production cluster.
func DefaultPolicy() Policy {
	return Policy{ReplicationFactor: 3, SplitBytes: 512 << 20, MergeBytes: 32 << 20, SplitLoad: 2500, MergeLoad: 250,
		MergeDelay: 5 * time.Minute, SplitLoadCPU: 0.5}
}

func (c Config) withDefaults() Config {
	if c.Interval == 0 {
		c.Interval = 5 * time.Second
	}
	if c.DeadStoreTimeout == 0 {
		c.DeadStoreTimeout = 30 * time.Second
	}
	if c.ActionTimeout == 0 {
		c.ActionTimeout = 60 * time.Second
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = 3
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first bad field.
func (c Config) Validate() error {
	if c.ReplicationFactor < 0 || c.ReplicationFactor > 7 {
		return fmt.Errorf("balancer: replication factor %d: want 1 to 7", c.ReplicationFactor)
	}
	if c.SplitBytes > 0 && c.MergeBytes >= c.SplitBytes {
		return fmt.Errorf("balancer: merge size %d must be below the split size %d", c.MergeBytes, c.SplitBytes)
	}
	return nil
}

// noSplitFor is how long a range that had no split key is not tried again.
const noSplitFor = time.Minute

// Balancer is one store's balancer.
type Balancer struct {
	cfg    Config
	node   *ranges.Node
	log    *slog.Logger
	paused atomic.Bool

	mu           sync.Mutex
	recent       []*balancerpb.Decision
	missingSince map[uint64]time.Time
	applied      map[uint64]sample
	// lastBusy is when each range this store led last had a load of
	// MergeLoad or more.
	lastBusy map[uint64]time.Time
	// cpu samples the process's CPU time for View.CPU.
	cpu     cpuSample
	noSplit map[uint64]time.Time

	decisions *prometheus.CounterVec
}

type sample struct {
	index uint64
	at    time.Time
	rate  float64
}

// cpuSample turns the process's CPU time (getrusage) into the share of its
// cores (GOMAXPROCS) it used since the previous sample.
type cpuSample struct {
	used time.Duration
	at   time.Time
	last float64
}

// share returns the share since the last sample; within minGap of it, the
// last share again (a status call must not shorten the window).
func (c *cpuSample) share(now time.Time, minGap time.Duration) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	used := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if c.at.IsZero() {
		c.used, c.at, c.last = used, now, -1
		return -1
	}
	if now.Sub(c.at) < minGap {
		return c.last
	}
	c.last = float64(used-c.used) / float64(now.Sub(c.at)) / float64(runtime.GOMAXPROCS(0))
	c.used, c.at = used, now
	return c.last
}

// New returns a balancer for a node. Run starts it.
func New(cfg Config, node *ranges.Node) *Balancer {
	cfg = cfg.withDefaults()
	b := &Balancer{cfg: cfg, node: node, log: cfg.Logger.With("component", "balancer"),
		missingSince: map[uint64]time.Time{}, applied: map[uint64]sample{}, lastBusy: map[uint64]time.Time{}, noSplit: map[uint64]time.Time{},
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_balancer_moves_total", Help: "Balancer moves by kind and outcome.",
		}, []string{"kind", "outcome"}),
	}
	b.paused.Store(cfg.Paused)
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(b.decisions)
	}
	return b
}

// Pause stops making moves; Resume starts again.
func (b *Balancer) Pause()  { b.paused.Store(true) }
func (b *Balancer) Resume() { b.paused.Store(false) }

// Paused reports whether the balancer is paused.
func (b *Balancer) Paused() bool { return b.paused.Load() }

// Run steps until ctx ends.
func (b *Balancer) Run(ctx context.Context) {
	t := time.NewTicker(b.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if b.paused.Load() {
			continue
		}
		if _, err := b.Step(ctx); err != nil && ctx.Err() == nil {
			b.log.Warn("balancer move failed", "err", err)
		}
	}
}

// Step plans and makes at most one move; it returns the move made.
func (b *Balancer) Step(ctx context.Context) (*Action, error) {
	now := time.Now()
	v := b.View(now)
	for _, a := range Plan(v, b.cfg.Policy) {
		if a.Kind == Split {
			b.mu.Lock()
			at, blocked := b.noSplit[a.RangeID]
			blocked = blocked && now.Sub(at) < noSplitFor
			b.mu.Unlock()
			if blocked {
				continue
			}
		}
		a := a
		err := b.do(ctx, a)
		b.record(a, err)
		return &a, err
	}
	return nil, nil
}

func (b *Balancer) do(ctx context.Context, a Action) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.ActionTimeout)
	defer cancel()
	b.log.Info("balancer move", "kind", string(a.Kind), "range", a.RangeID, "target", a.StoreID, "reason", a.Reason)
	switch a.Kind {
	case AddReplica:
		_, err := b.node.AddReplica(ctx, a.RangeID, a.StoreID)
		return err
	case RemoveReplica:
		_, err := b.node.RemoveReplica(ctx, a.RangeID, a.StoreID)
		return err
	case TransferLeader:
		return b.node.TransferLeader(ctx, a.RangeID, a.StoreID)
	case Split:
		splitKey := b.node.Store().SplitKey
		if a.ByLoad {
			splitKey = b.node.Store().LoadSplitKey
		}
		key, err := splitKey(a.RangeID)
		if err != nil {
			return err
		}
		if key == nil {
			b.mu.Lock()
			b.noSplit[a.RangeID] = time.Now()
			b.mu.Unlock()
			return fmt.Errorf("range %d has no split key (one unit, or its load is on one key)", a.RangeID)
		}
		_, _, err = b.node.Split(ctx, a.RangeID, key)
		return err
	case Merge:
		_, err := b.node.Merge(ctx, a.RangeID)
		return err
	}
	return fmt.Errorf("unknown move %q", a.Kind)
}

func (b *Balancer) record(a Action, err error) {
	d := &balancerpb.Decision{UnixMs: time.Now().UnixMilli(), Action: a.String()}
	outcome := "ok"
	if err != nil {
		d.Error = err.Error()
		outcome = "error"
	}
	b.decisions.WithLabelValues(string(a.Kind), outcome).Inc()
	b.mu.Lock()
	b.recent = append(b.recent, d)
	if len(b.recent) > 32 {
		b.recent = b.recent[len(b.recent)-32:]
	}
	b.mu.Unlock()
}

// View builds the balancer's picture of the cluster: the routing table, with
// this store's own, fresher knowledge of the ranges it holds.
func (b *Balancer) View(now time.Time) View {
	store := b.node.Store()
	self := store.ID()
	v := View{Self: self, Dead: map[uint64]bool{}}
	live := map[uint64]bool{}
	for _, m := range b.node.Membership().Stores() {
		live[m.Meta.StoreID] = true
		v.Live = append(v.Live, m.Meta.StoreID)
	}
	if !live[self] {
		live[self] = true
		v.Live = append(v.Live, self)
	}
	// The applied index of each local replica, or absent: one pass over
	// the store's replicas, not one per range (load).
	local := map[uint64]kvstore.ReplicaStatus{}
	for _, r := range store.Replicas() {
		if r.Descriptor != nil {
			local[r.RangeID] = r
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	v.CPU = b.cpu.share(now, b.cfg.Interval/2)
	named := map[uint64]bool{}
	for _, route := range b.node.Router().Table().All() {
		rv := RangeView{Desc: route.Desc, LeaderStore: route.LeaderStore(), Bytes: route.Bytes}
		if !route.BytesKnown {
			rv.Bytes = math.MaxUint64 // unknown is never small enough to merge
		}
		rep, isLocal := local[route.Desc.Id]
		if isLocal {
			if d := rep.Descriptor; d.Ver > rv.Desc.Ver || (d.Ver == rv.Desc.Ver && d.ConfVer >= rv.Desc.ConfVer) {
				rv.Desc = d
			}
			if store.IsLeader(route.Desc.Id) {
				rv.LeaderStore = self
				rv.Bytes = rep.Bytes
				// Writes applied (whoever proposed them) or the reads and
				// writes this store sent, whichever is more.
				rv.Load = max(b.load(route.Desc.Id, rep.Applied, now), store.Load(route.Desc.Id))
				if b.cfg.MergeLoad > 0 && rv.Load >= b.cfg.MergeLoad {
					b.lastBusy[route.Desc.Id] = now
				}
			} else if rv.LeaderStore == self {
				rv.LeaderStore = 0 // the table is behind: we do not lead it
			}
		}
		if t, ok := b.lastBusy[route.Desc.Id]; ok {
			if now.Sub(t) < b.cfg.MergeDelay {
				rv.RecentlyBusy = true
			} else {
				delete(b.lastBusy, route.Desc.Id)
			}
		}
		for _, rep := range rv.Desc.Replicas {
			named[rep.StoreId] = true
		}
		v.Ranges = append(v.Ranges, rv)
	}
	b.prune(v.Ranges, named, now)
	for id := range named {
		if live[id] {
			delete(b.missingSince, id)
			continue
		}
		since, ok := b.missingSince[id]
		if !ok {
			b.missingSince[id] = now
			continue
		}
		if now.Sub(since) >= b.cfg.DeadStoreTimeout {
			v.Dead[id] = true
		}
	}
	return v
}

// prune forgets what the balancer kept about ranges that are gone (merged
// away) and stores no range names any more, so its maps hold what the
// table holds, not every range and store the process ever saw. Called
// with b.mu held.
func (b *Balancer) prune(ranges []RangeView, named map[uint64]bool, now time.Time) {
	ids := make(map[uint64]bool, len(ranges))
	for _, r := range ranges {
		ids[r.Desc.Id] = true
	}
	for id := range b.applied {
		if !ids[id] {
			delete(b.applied, id)
		}
	}
	for id := range b.lastBusy {
		if !ids[id] {
			delete(b.lastBusy, id)
		}
	}
	for id, at := range b.noSplit {
		if !ids[id] || now.Sub(at) >= noSplitFor {
			delete(b.noSplit, id)
		}
	}
	for id := range b.missingSince {
		if !named[id] {
			delete(b.missingSince, id)
		}
	}
}

// Tracked reports the range and store IDs the balancer keeps state for
// (load samples, recent activity, refused splits, missing stores).
func (b *Balancer) Tracked() (rangeIDs, storeIDs []uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	seen := map[uint64]bool{}
	for _, m := range []map[uint64]time.Time{b.lastBusy, b.noSplit} {
		for id := range m {
			seen[id] = true
		}
	}
	for id := range b.applied {
		seen[id] = true
	}
	for id := range seen {
		rangeIDs = append(rangeIDs, id)
	}
	for id := range b.missingSince {
		storeIDs = append(storeIDs, id)
	}
	slices.Sort(rangeIDs)
	slices.Sort(storeIDs)
	return rangeIDs, storeIDs
}

// load is the range's applied entries per second since the last look, from
// idx, the local replica's applied index.
func (b *Balancer) load(rangeID, idx uint64, now time.Time) float64 {
	prev, ok := b.applied[rangeID]
	s := sample{index: idx, at: now, rate: prev.rate}
	if ok && now.Sub(prev.at) > 100*time.Millisecond && idx >= prev.index {
		s.rate = float64(idx-prev.index) / now.Sub(prev.at).Seconds()
	}
	if ok && now.Sub(prev.at) < b.cfg.Interval/2 {
		return prev.rate
	}
	b.applied[rangeID] = s
	return s.rate
}

// Status returns this store's balancer state.
func (b *Balancer) Status() *balancerpb.StoreStatus {
	v := b.View(time.Now())
	st := &balancerpb.StoreStatus{StoreId: v.Self, Paused: b.Paused()}
	for _, r := range v.Ranges {
		for _, rep := range r.Desc.Replicas {
			if rep.StoreId == v.Self {
				st.Replicas++
			}
		}
		if r.LeaderStore == v.Self {
			st.Leaders++
		}
	}
	b.mu.Lock()
	st.Recent = append(st.Recent, b.recent...)
	b.mu.Unlock()
	return st
}
