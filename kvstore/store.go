package kvstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/internal/clustertls"
	"github.com/bifrost-mq/bifrost/kvstore/bugzoo"
	"github.com/bifrost-mq/bifrost/kvstore/internal/dbinit"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
)

// Errors a caller of Store branches on.
var (
	// ErrRangeNotFound: the store holds no replica of the range.
	ErrRangeNotFound = errors.New("range not found on this store")
	// ErrNotReady: the request was not proposed (no leader yet, busy, or the
	// replica is stopping); retrying it is safe.
	ErrNotReady = errors.New("range not ready")
	// ErrTimeout: the outcome is unknown; retry with the same request ID.
	ErrTimeout = errors.New("range request timed out")
)

// Config configures a Store. Zero fields take the documented defaults.
type Config struct {
	// DataDir holds the engine (DataDir/engine) and the Raft logs (DataDir/raft). Required.
	DataDir string
	// RaftAddr is the host:port Dragonboat listens on and peers dial. Required.
	RaftAddr string
	// RTTMillisecond is the Raft tick. Default 100.
	RTTMillisecond uint64
	// ElectionRTT is the election timeout in ticks. Default 10.
	ElectionRTT uint64
	// HeartbeatRTT is the heartbeat interval in ticks. Default 1.
	HeartbeatRTT uint64
	// SnapshotEntries: a replica snapshots and compacts its log every this many entries. Default 10000.
	SnapshotEntries uint64
	// CompactionOverhead: entries kept behind a snapshot for slow followers. Default 5000.
	CompactionOverhead uint64
	// Engine sizes the Pebble database's block cache and memtables.
	Engine EngineOptions
	// SmallLogDB trims Dragonboat's log store memory (for tests and small machines).
	SmallLogDB bool
	// Coprocessors maps a keyspace to the factory of its coprocessor.
	Coprocessors map[kvpb.Keyspace]CoprocessorFactory
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the store's metrics; nil registers none.
	Registerer prometheus.Registerer
	// TLS, if set, makes Raft use mutual TLS with the cluster's
	// certificates: peers without one from the CA are refused. Nil: plaintext.
	TLS *clustertls.Credentials
	// WallClock, for tests only, is the wall clock the store reads (default
	// time.Now); tests and the jepsen harness skew it (cmd/bifrost
	// --test-clock-offset). The dedupe window is counted on each range's
	// own time and the monotonic clock, so a normal build reads it for
	// nothing that is replicated; the bug zoo's bugzoo_wall_clock_dedupe
	// stamps commands with it, as the store did before.
	WallClock func() time.Time
	// DedupeSweepInterval is how often the store proposes a sweep of the
	// expired dedupe records of each range it leads that may hold some
	// (SweepDedupe). Default DefaultDedupeSweepInterval (1 minute).
	DedupeSweepInterval time.Duration
	// Failpoint, for tests only, is called at the store's own steps of a
	// split (the Fail* constants); an error skips the rest of that step, as
	// a crash there would.
	Failpoint func(step string) error
}

// The store's failpoints: where a store can die on its own part of a split.
const (
	// FailSplitChildBeforeStart: the split applied (the child's descriptor
	// and boot record are written) but the child was not started.
	FailSplitChildBeforeStart = "split-child-before-start"
	// FailSplitChildBeforeCompaction: the child started but its bootstrap
	// log was not compacted.
	FailSplitChildBeforeCompaction = "split-child-before-compaction"
	// FailBeforeSnapshotSend: a replica (the leader) is about to stream a
	// snapshot to another one, a replica being added or one far behind.
	// The stream cannot be skipped, so the result is ignored; a test blocks
	// in the hook to make the stream slow (Dragonboat streams one snapshot
	// of a range at a time).
	FailBeforeSnapshotSend = "before-snapshot-send"
	// FailBeforeSplitApply: a replica is about to apply a split. The result
	// is ignored; a test blocks in the hook to hold the replica behind the
	// split while the rest of its range goes on.
	FailBeforeSplitApply = "before-split-apply"
)

func (s *Store) failpoint(step string) bool {
	if s.cfg.Failpoint == nil {
		return false
	}
	if err := s.cfg.Failpoint(step); err != nil {
		s.log.Warn("failpoint", "step", step, "err", err)
		return true
	}
	return false
}

// Validate reports the first bad field.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("kvstore: DataDir is required")
	}
	if err := c.Engine.Validate(); err != nil {
		return err
	}
	if c.RaftAddr == "" {
		return errors.New("kvstore: RaftAddr is required")
	}
	if c.ElectionRTT != 0 && c.ElectionRTT <= 2*c.HeartbeatRTT {
		return errors.New("kvstore: ElectionRTT must be more than twice HeartbeatRTT")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.RTTMillisecond == 0 {
		c.RTTMillisecond = 100
	}
	if c.ElectionRTT == 0 {
		c.ElectionRTT = 10
	}
	if c.HeartbeatRTT == 0 {
		c.HeartbeatRTT = 1
	}
	if c.SnapshotEntries == 0 {
		c.SnapshotEntries = 10000
	}
	if c.CompactionOverhead == 0 {
		c.CompactionOverhead = 5000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.WallClock == nil {
		c.WallClock = time.Now
	}
	if c.DedupeSweepInterval <= 0 {
		c.DedupeSweepInterval = DefaultDedupeSweepInterval
	}
	return c
}

// Store is one storage node: the engine, the NodeHost and the replicas on it.
type Store struct {
	cfg     Config
	id      uint64
	engine  *Engine
	nh      *dragonboat.NodeHost
	metrics *Metrics
	log     *slog.Logger

	mu       sync.RWMutex
	replicas map[uint64]*rangeStateMachine
	leaders  map[uint64]raftio.LeaderInfo
	watchers []func(rangeID uint64)
	// loads measures the ops this store sends to each range (load.go).
	loads loads
	// bootMu orders the read-modify-writes of boot records.
	bootMu sync.Mutex
	// spans is the index of the spans the local replicas hold (spans.go).
	spans spanIndex
	// quick holds the ranges whose replica here runs the short election
	// timeout of a sole voter (soleVoter): true while it does, false while
	// restartQuick restarts it with the normal one (the range has more
	// voters now; its proposals meanwhile are ErrNotReady), absent after.
	quick map[uint64]bool

	// Background work (starting split children, retiring merged ranges,
	// sweeping dedupe records) is owned by the store and stopped by Close.
	bg *background
	// advanced is how far a test moved the store's monotonic clock (now):
	// ranges' time passes without the test waiting for it.
	advanced atomic.Int64

	// sizeMu orders a scrape's reads (engineCollector) before Close
	// closes the engine: a read of a closed Pebble panics.
	sizeMu     sync.RWMutex
	sizeClosed bool
}

// Open opens the store in cfg.DataDir and restarts every replica that has a
// boot record.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if dbinit.Err != nil {
		return nil, dbinit.Err
	}
	cfg = cfg.withDefaults()
	setupDragonboatLogging(cfg.Logger)
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	engine, err := OpenEngine(filepath.Join(cfg.DataDir, "engine"), cfg.Engine, cfg.Logger)
	if err != nil {
		return nil, err
	}
	id, err := engine.StoreID()
	if err != nil {
		engine.Close()
		return nil, err
	}
	s := &Store{
		cfg:      cfg,
		id:       id,
		engine:   engine,
		log:      cfg.Logger.With("store", id),
		replicas: map[uint64]*rangeStateMachine{},
		leaders:  map[uint64]raftio.LeaderInfo{},
		quick:    map[uint64]bool{},
	}
	s.bg = newBackground()
	s.metrics = newMetrics(cfg.Registerer, s.countRanges, s.countLeaders, s.keyspaceBytes)
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(engineCollector{s}); err != nil {
			engine.Close()
			return nil, fmt.Errorf("register engine metrics: %w", err)
		}
	}
	nhc := config.NodeHostConfig{
		NodeHostDir:       filepath.Join(cfg.DataDir, "raft"),
		RTTMillisecond:    cfg.RTTMillisecond,
		RaftAddress:       cfg.RaftAddr,
		RaftEventListener: leaderListener{s},
		// A Raft membership change is no descriptor change, but its
		// watchers (the replica reconciler) must hear of it.
		SystemEventListener: membershipListener{s},
	}
	if files := cfg.TLS.Files(); files.Enabled() {
		nhc.MutualTLS = true
		nhc.CAFile, nhc.CertFile, nhc.KeyFile = files.CA, files.Cert, files.Key
	}
	if cfg.SmallLogDB {
		nhc.Expert.LogDB = config.GetTinyMemLogDBConfig()
	} else {
		nhc.Expert.LogDB = config.GetSmallMemLogDBConfig()
	}
	nh, err := dragonboat.NewNodeHost(nhc)
	if err != nil {
		engine.Close()
		return nil, fmt.Errorf("start raft host: %w", err)
	}
	s.nh = nh
	boots, err := engine.bootRecords()
	if err != nil {
		s.Close()
		return nil, err
	}
	for _, b := range boots {
		if err := s.start(b); err != nil {
			s.Close()
			return nil, fmt.Errorf("restart range %d: %w", b.RangeId, err)
		}
	}
	s.goBackground(s.wakeLeaderless)
	s.goBackground(s.sweepLoop)
	s.log.Info("store open", "dir", cfg.DataDir, "raft", cfg.RaftAddr, "replicas", len(boots))
	return s, nil
}

// Close stops every replica and closes the engine.
func (s *Store) Close() error {
	s.bg.stop()
	if s.nh != nil {
		s.nh.Close()
	}
	s.sizeMu.Lock()
	s.sizeClosed = true
	s.sizeMu.Unlock()
	return s.engine.Close()
}

// now is the monotonic clock the store counts its ranges' time on.
func (s *Store) now() time.Time { return time.Now().Add(time.Duration(s.advanced.Load())) }

// ID is the store's persistent identity.
func (s *Store) ID() uint64 { return s.id }

// RaftAddr is the address peers reach this store's Raft on.
func (s *Store) RaftAddr() string { return s.cfg.RaftAddr }

// OnDescriptorChange registers f to be called (on an apply goroutine; it
// must not block) after a local replica's descriptor, leader or Raft
// membership changes.
func (s *Store) OnDescriptorChange(f func(rangeID uint64)) {
	s.mu.Lock()
	s.watchers = append(s.watchers, f)
	s.mu.Unlock()
}

// StartReplica records a boot record for the replica and starts it. It is
// idempotent for a replica that already runs. desc, if set, is the range's
// descriptor the caller starts the replica for: the start is refused
// (ErrSpanOverlap) while another replica on this store holds part of its
// span, and the span is claimed for the replica until its snapshot comes.
func (s *Store) StartReplica(boot *kvpb.BootRecord, desc *kvpb.RangeDescriptor) error {
	if boot.RangeId == 0 || boot.ReplicaId == 0 {
		return errors.New("range and replica IDs must be non-zero")
	}
	if !boot.Join && len(boot.InitialMembers) == 0 {
		return errors.New("a new range needs its initial members")
	}
	if desc != nil && desc.Id != boot.RangeId {
		return fmt.Errorf("the descriptor is of range %d, the boot record of range %d", desc.Id, boot.RangeId)
	}
	s.mu.RLock()
	r, running := s.replicas[boot.RangeId]
	s.mu.RUnlock()
	if running {
		if r.replicaID == boot.ReplicaId {
			if !boot.NonVoting {
				return s.votingNow(boot.RangeId, boot.ReplicaId)
			}
			return nil
		}
		return fmt.Errorf("store already runs replica %d of range %d", r.replicaID, boot.RangeId)
	}
	if _, tomb, err := get(s.engine.db, localTombKey(boot.RangeId)); err != nil {
		return err
	} else if tomb {
		return fmt.Errorf("range %d was merged away on this store", boot.RangeId)
	}
	claimed := false
	if desc != nil {
		var err error
		if claimed, err = s.spans.claim(desc); err != nil {
			s.metrics.spanConflicts.WithLabelValues("start_refused").Inc()
			return err
		}
	}
	err := s.engine.putBoot(boot)
	if err == nil {
		err = s.start(boot)
	}
	if err != nil && claimed {
		s.spans.drop(boot.RangeId)
	}
	return err
}

// goBackground runs f on a goroutine that Close waits for.
func (s *Store) goBackground(f func(ctx context.Context)) {
	if !s.bg.run(f) {
		s.log.Debug("store closing: background work not started")
	}
}

func (s *Store) start(boot *kvpb.BootRecord) error {
	members := map[uint64]dragonboat.Target{}
	join := boot.Join
	if s.nh.HasNodeInfo(boot.RangeId, boot.ReplicaId) {
		// A restart: Dragonboat has the membership in its log.
		join = false
	} else if !join {
		for id, addr := range boot.InitialMembers {
			members[id] = addr
		}
	}
	create := func(shardID, replicaID uint64) sm.IOnDiskStateMachine {
		r := &rangeStateMachine{
			engine: s.engine, rangeID: shardID, replicaID: replicaID, joined: boot.Join, closed: make(chan struct{}),
			metrics: s.metrics, onDescriptor: s.descriptorChanged, now: s.now,
			onSplit: s.splitApplied, onMerged: s.mergeApplied, onSnapshot: s.snapshotInstalled,
			admitSnapshot: s.admitSnapshot,
			beforeSend:    func() { s.failpoint(FailBeforeSnapshotSend) },
			beforeSplit:   func() { s.failpoint(FailBeforeSplitApply) },
		}
		r.coprocessorFor = func(d *kvpb.RangeDescriptor) Coprocessor {
			if f := s.cfg.Coprocessors[d.Keyspace]; f != nil {
				return f(shardID)
			}
			return nil
		}
		s.mu.Lock()
		s.replicas[shardID] = r
		s.mu.Unlock()
		return r
	}
	electionRTT := s.cfg.ElectionRTT
	if quick := s.soleVoter(boot, join); quick {
		electionRTT = min(electionRTT, 2*s.cfg.HeartbeatRTT+1)
		s.mu.Lock()
		s.quick[boot.RangeId] = true
		s.mu.Unlock()
	}
	rc := config.Config{
		ShardID:      boot.RangeId,
		ReplicaID:    boot.ReplicaId,
		ElectionRTT:  electionRTT,
		HeartbeatRTT: s.cfg.HeartbeatRTT,
		CheckQuorum:  true,
		// PreVote: a restarted replica that cannot hear the leader yet (peers
		// reconnect with a backoff longer than an election timeout) must not
		// depose a healthy leader by raising the term.
		PreVote:            true,
		SnapshotEntries:    s.cfg.SnapshotEntries,
		CompactionOverhead: s.cfg.CompactionOverhead,
		// A replica being added runs as a non-voting member until it caught
		// up and was promoted; Dragonboat must be told which one it is.
		IsNonVoting: boot.NonVoting,
		// An idle range stops ticking and heartbeating (quiesce): see wake.
		Quiesce: true,
	}
	if err := s.nh.StartOnDiskReplica(members, join, create, rc); err != nil {
		if errors.Is(err, dragonboat.ErrShardAlreadyExist) {
			return nil
		}
		return err
	}
	if boot.NonVoting {
		s.goBackground(func(ctx context.Context) { s.watchPromotion(ctx, boot.RangeId, boot.ReplicaId) })
	}
	if boot.CompactOnStart && !s.failpoint(FailSplitChildBeforeCompaction) {
		s.goBackground(func(ctx context.Context) { s.compactNewRange(ctx, boot) })
	}
	return nil
}

// soleVoter reports whether the replica starts as its range's only voter:
// a new range with itself as the one initial member, or a restarted one whose
// applied descriptor lists only it. Such a replica has nobody to hear from,
// so an election timeout only delays its first election (Dragonboat has no
// fast path for a single-voter shard, and no way to advance its ticks as
// etcd's initial-election-tick-advance does): it runs a short one, an
// election after 3 to 6 ticks instead of 10 to 20, which brings a fresh
// standalone broker to its first PUBACK in under a second. A short timeout
// would make a leader with followers step down at the first stall of its
// check-quorum window, so the replica is restarted with the normal timeout
// as soon as its range has a second voter (restartQuick).
func (s *Store) soleVoter(boot *kvpb.BootRecord, join bool) bool {
	if boot.Join || boot.NonVoting || join {
		return false
	}
	if !s.nh.HasNodeInfo(boot.RangeId, boot.ReplicaId) {
		_, only := boot.InitialMembers[boot.ReplicaId]
		return only && len(boot.InitialMembers) == 1
	}
	v, ok, err := get(s.engine.db, metaKey(boot.RangeId, metaDescriptor))
	if err != nil || !ok {
		return false
	}
	desc := &kvpb.RangeDescriptor{}
	if proto.Unmarshal(v, desc) != nil {
		return false
	}
	return len(desc.Replicas) == 1 && desc.Replicas[0].ReplicaId == boot.ReplicaId && desc.Pending == nil
}

// QuickElection reports whether the local replica of the range runs a sole
// voter's short election timeout (soleVoter).
func (s *Store) QuickElection(rangeID uint64) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.quick[rangeID]
}

// restartQuick restarts a replica that runs a sole voter's short election
// timeout with the normal one: its range has more voters now. The old state
// machine must be closed before the new one opens (both would apply the same
// entries), so it waits for Dragonboat to close it.
func (s *Store) restartQuick(ctx context.Context, rangeID uint64) {
	r, err := s.replica(rangeID)
	if err != nil {
		return
	}
	if err := s.nh.StopReplica(rangeID, r.replicaID); err != nil {
		s.log.Warn("restart with the normal election timeout: stop", "range", rangeID, "err", err)
		return
	}
	select {
	case <-r.closed:
	case <-ctx.Done():
		return
	}
	boot, ok, err := s.engine.bootRecord(rangeID)
	if err != nil {
		s.log.Error("restart with the normal election timeout", "range", rangeID, "err", err)
		return
	}
	if !ok {
		return // retired or destroyed meanwhile
	}
	s.mu.Lock()
	delete(s.quick, rangeID)
	s.mu.Unlock()
	if err := s.start(boot); err != nil {
		s.log.Error("restart with the normal election timeout", "range", rangeID, "err", err)
		return
	}
	s.log.Info("range has more voters: its replica here restarted with the normal election timeout", "range", rangeID)
}

func (s *Store) descriptorChanged(rangeID uint64, d *kvpb.RangeDescriptor) {
	if d != nil {
		s.spans.set(d)
	}
	s.mu.Lock()
	if d != nil && s.quick[rangeID] && len(d.Replicas) > 1 {
		s.quick[rangeID] = false // restarting
		s.goBackground(func(ctx context.Context) { s.restartQuick(ctx, rangeID) })
	}
	ws := s.watchers
	s.mu.Unlock()
	for _, w := range ws {
		w(rangeID)
	}
}

func (s *Store) replica(rangeID uint64) (*rangeStateMachine, error) {
	s.mu.RLock()
	r := s.replicas[rangeID]
	s.mu.RUnlock()
	if r == nil {
		return nil, fmt.Errorf("range %d: %w", rangeID, ErrRangeNotFound)
	}
	return r, nil
}

// Propose runs a command through the range's Raft log and returns its result
// once applied locally.
func (s *Store) Propose(ctx context.Context, rangeID uint64, cmd *kvpb.Command) (*kvpb.CommandResult, error) {
	r, err := s.replica(rangeID)
	if err != nil {
		return nil, err
	}
	if len(cmd.RequestId) > MaxRequestIDSize {
		return requestIDTooLong(len(cmd.RequestId)), nil
	}
	// The stamp is the range's time as this store sees it, whatever the
	// sender put there: no node's wall clock moves the dedupe window
	// (rangeClock). The bug zoo's fault stamps the wall clock, as before.
	cmd.RangeMs = r.clock.stamp(s.now())
	if bugzoo.WallClockDedupe {
		cmd.RangeMs = s.cfg.WallClock().UnixMilli()
	}
	data, err := proto.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	if bugzoo.AckBeforeCommit && cmd.GetWrite() != nil {
		return s.ackBeforeCommit(rangeID, cmd, data)
	}
	start := time.Now()
	if w := cmd.GetWrite(); w != nil {
		s.loads.record(rangeID, w.Ops, true, start)
	}
	s.wake(rangeID)
	res, err := s.nh.SyncPropose(ctx, s.nh.GetNoOPSession(rangeID), data)
	if err != nil {
		s.metrics.proposals.WithLabelValues("error").Inc()
		return nil, s.translate(rangeID, err)
	}
	s.metrics.proposeLatency.Observe(time.Since(start).Seconds())
	out := &kvpb.CommandResult{}
	if err := proto.Unmarshal(res.Data, out); err != nil {
		return nil, fmt.Errorf("range %d: undecodable result: %w", rangeID, err)
	}
	if out.Status == kvpb.Status_STATUS_OK {
		s.metrics.proposals.WithLabelValues("ok").Inc()
	} else {
		s.metrics.proposals.WithLabelValues("rejected").Inc()
	}
	return out, nil
}

// wake brings the local replica of a range out of quiesce before a
// proposal, unless it leads the range. A range idle for 10 election timeouts
// quiesces (Config.Quiesce): its replicas stop ticking and the leader sends no
// heartbeats until a message, a read or a membership change arrives.
// Dragonboat does not count a proposal as one: a quiesced follower forwards
// it to the leader and stays quiesced, so with the leader's store dead it
// would never start an election and every write would time out. A read index
// does wake it (a linearizable read needs no more): its election timer has
// run on through the quiesce, so with no leader answering it campaigns at its
// next tick. The read's result is not needed.
func (s *Store) wake(rangeID uint64) {
	if id, _, ok := s.Leader(rangeID); ok {
		if r, err := s.replica(rangeID); err == nil && r.replicaID == id {
			return
		}
	}
	_, _ = s.nh.ReadIndex(rangeID, time.Second)
}

// WakeLedFrom wakes the local replicas whose leader, as they last knew it,
// is a replica on the store storeID: gossip found that store gone. A
// quiesced follower hears nothing from a dead leader and so never misses
// it; woken, it campaigns once no leader answers. Without this, an idle
// range whose leader's store died stayed without a leader until a request
// came, and the balancer could not replace the dead replica (it needs a
// leader to change the range's members). It returns how many it woke.
func (s *Store) WakeLedFrom(storeID uint64) int {
	type led struct{ rangeID, leader uint64 }
	s.mu.RLock()
	var ids []led
	for id, r := range s.replicas {
		if l := s.leaders[id].LeaderID; l != 0 && l != r.replicaID {
			ids = append(ids, led{id, l})
		}
	}
	s.mu.RUnlock()
	woken := 0
	for _, l := range ids {
		desc, err := s.Descriptor(l.rangeID)
		if err != nil || desc == nil {
			continue
		}
		for _, r := range desc.Replicas {
			if r.ReplicaId == l.leader && r.StoreId == storeID {
				if s.bg.run(func(context.Context) { _, _ = s.nh.ReadIndex(l.rangeID, time.Second) }) {
					woken++
				}
			}
		}
	}
	return woken
}

// wakeLeaderless wakes, every 5 election timeouts, the local replicas that
// know no leader. A replica that hears nothing for 10 election timeouts
// quiesces whether or not it knows a leader, and a quiesced one never
// campaigns: one that started (a restart, a new range) while its peers were
// quiesced and whose first election's messages were lost (a full receive
// queue drops them) would otherwise stay leaderless until a request came.
func (s *Store) wakeLeaderless(ctx context.Context) {
	every := time.Duration(5*s.cfg.ElectionRTT*s.cfg.RTTMillisecond) * time.Millisecond
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.RLock()
		var ids []uint64
		for id := range s.replicas {
			if s.leaders[id].LeaderID == 0 {
				ids = append(ids, id)
			}
		}
		s.mu.RUnlock()
		for _, id := range ids {
			_, _ = s.nh.ReadIndex(id, every)
		}
	}
}

// Read serves a query: linearizable (ReadIndex) unless stale is set, when it
// reads the local replica's state with no freshness guarantee.
func (s *Store) Read(ctx context.Context, rangeID uint64, q *kvpb.Query, stale bool) (*kvpb.CommandResult, error) {
	if _, err := s.replica(rangeID); err != nil {
		return nil, err
	}
	s.loads.record(rangeID, q.Ops, false, time.Now())
	kind := "linearizable"
	var v any
	var err error
	if stale {
		kind = "stale"
		v, err = s.nh.StaleRead(rangeID, q)
	} else {
		s.metrics.readIndexes.Add(1)
		v, err = s.nh.SyncRead(ctx, rangeID, q)
	}
	if err != nil {
		s.metrics.reads.WithLabelValues(kind, "error").Inc()
		return nil, s.translate(rangeID, err)
	}
	s.metrics.reads.WithLabelValues(kind, "ok").Inc()
	return v.(*kvpb.CommandResult), nil
}

func (s *Store) translate(rangeID uint64, err error) error {
	switch {
	case errors.Is(err, dragonboat.ErrShardNotFound):
		s.mu.RLock()
		quick, listed := s.quick[rangeID]
		s.mu.RUnlock()
		if listed && !quick {
			return fmt.Errorf("range %d: %w: restarting", rangeID, ErrNotReady)
		}
		return fmt.Errorf("range %d: %w", rangeID, ErrRangeNotFound)
	case errors.Is(err, dragonboat.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("range %d: %w", rangeID, ErrTimeout)
	case errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, dragonboat.ErrShardNotReady), errors.Is(err, dragonboat.ErrSystemBusy),
		errors.Is(err, dragonboat.ErrShardClosed), errors.Is(err, dragonboat.ErrRejected),
		errors.Is(err, dragonboat.ErrAborted), errors.Is(err, dragonboat.ErrClosed),
		errors.Is(err, dragonboat.ErrShardNotInitialized):
		return fmt.Errorf("range %d: %w: %v", rangeID, ErrNotReady, err)
	}
	return fmt.Errorf("range %d: %w", rangeID, err)
}

// SnapshotsRecovered counts the snapshots this store installed since it opened.
func (s *Store) SnapshotsRecovered() uint64 { return s.metrics.recovered.Load() }

// SnapshotsIngested counts those of them installed by ingesting tables.
func (s *Store) SnapshotsIngested() uint64 { return s.metrics.ingested.Load() }

// ReadIndexes counts the reads of this store that took a read index since
// it opened (linearizable reads, Raft membership reads): each one wakes its
// range from quiesce.
func (s *Store) ReadIndexes() uint64 { return s.metrics.readIndexes.Load() }

// Descriptor returns the local replica's descriptor (nil before init).
func (s *Store) Descriptor(rangeID uint64) (*kvpb.RangeDescriptor, error) {
	r, err := s.replica(rangeID)
	if err != nil {
		return nil, err
	}
	return r.Descriptor(), nil
}

// ReplicaStatus is what the store knows of one local replica.
type ReplicaStatus struct {
	RangeID    uint64
	ReplicaID  uint64
	Descriptor *kvpb.RangeDescriptor
	LeaderID   uint64
	LeaderTerm uint64
	Applied    uint64
	// Bytes is the range's size (RangeBytes).
	Bytes uint64
}

// Replicas lists the local replicas, by range ID.
func (s *Store) Replicas() []ReplicaStatus {
	s.mu.RLock()
	out := make([]ReplicaStatus, 0, len(s.replicas))
	for id, r := range s.replicas {
		out = append(out, r.status(s.leaders[id]))
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].RangeID < out[j].RangeID })
	return out
}

// Replica returns what the store knows of its replica of one range, and
// false if it holds none.
func (s *Store) Replica(rangeID uint64) (ReplicaStatus, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.replicas[rangeID]
	if r == nil {
		return ReplicaStatus{}, false
	}
	return r.status(s.leaders[rangeID]), true
}

func (r *rangeStateMachine) status(li raftio.LeaderInfo) ReplicaStatus {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return ReplicaStatus{RangeID: r.rangeID, ReplicaID: r.replicaID, LeaderID: li.LeaderID, LeaderTerm: li.Term,
		Descriptor: r.desc, Applied: r.applied, Bytes: r.bytes}
}

// Leader returns the leader replica ID this store knows for a range.
func (s *Store) Leader(rangeID uint64) (replicaID, term uint64, ok bool) {
	id, term, valid, err := s.nh.GetLeaderID(rangeID)
	if err != nil || !valid {
		return 0, 0, false
	}
	return id, term, true
}

// IsLeader reports whether the local replica leads the range.
func (s *Store) IsLeader(rangeID uint64) bool {
	r, err := s.replica(rangeID)
	if err != nil {
		return false
	}
	id, _, ok := s.Leader(rangeID)
	return ok && id == r.replicaID
}

// Membership returns Raft's view of the range's voting replicas (replica ID
// to raft address), read linearizably.
func (s *Store) Membership(ctx context.Context, rangeID uint64) (map[uint64]string, uint64, error) {
	s.metrics.readIndexes.Add(1)
	m, err := s.nh.SyncGetShardMembership(ctx, rangeID)
	if err != nil {
		return nil, 0, s.translate(rangeID, err)
	}
	return m.Nodes, m.ConfigChangeID, nil
}

// AddRaftReplica adds a voting replica to Raft's membership.
func (s *Store) AddRaftReplica(ctx context.Context, rangeID, replicaID uint64, raftAddr string) error {
	if err := s.nh.SyncRequestAddReplica(ctx, rangeID, replicaID, raftAddr, 0); err != nil {
		return s.translate(rangeID, err)
	}
	return nil
}

// AddRaftNonVoting adds a non-voting replica (a learner) to Raft's
// membership: it receives the log, and a snapshot first, but counts in no
// quorum. AddRaftReplica with its ID promotes it.
func (s *Store) AddRaftNonVoting(ctx context.Context, rangeID, replicaID uint64, raftAddr string) error {
	if err := s.nh.SyncRequestAddNonVoting(ctx, rangeID, replicaID, raftAddr, 0); err != nil {
		return s.translate(rangeID, err)
	}
	return nil
}

// RaftMembers returns Raft's view of the range's voting and non-voting
// replicas (replica ID to raft address), read linearizably.
func (s *Store) RaftMembers(ctx context.Context, rangeID uint64) (voters, nonVoting map[uint64]string, err error) {
	s.metrics.readIndexes.Add(1)
	m, err := s.nh.SyncGetShardMembership(ctx, rangeID)
	if err != nil {
		return nil, nil, s.translate(rangeID, err)
	}
	return m.Nodes, m.NonVotings, nil
}

// Applied returns the last index the local replica's state machine applied.
func (s *Store) Applied(rangeID uint64) (uint64, error) {
	r, err := s.replica(rangeID)
	if err != nil {
		return 0, err
	}
	return r.Applied(), nil
}

// watchPromotion waits until a replica started as non-voting is a voter in
// the membership it applied, then rewrites its boot record, so that a
// restart starts it as a voter (Dragonboat must be told; a voter restarted
// as non-voting would never vote again). AddReplica rewrites the record too,
// right after the promotion; this covers a crash in between.
func (s *Store) watchPromotion(ctx context.Context, rangeID, replicaID uint64) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
		s.mu.RLock()
		r := s.replicas[rangeID]
		s.mu.RUnlock()
		if r == nil || r.replicaID != replicaID {
			return
		}
		nhi := s.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true})
		if nhi == nil {
			return
		}
		for _, si := range nhi.ShardInfoList {
			if si.ShardID != rangeID || si.ReplicaID != replicaID || si.Pending || si.IsNonVoting {
				continue
			}
			if _, voter := si.Replicas[replicaID]; voter {
				if err := s.votingNow(rangeID, replicaID); err != nil {
					s.log.Warn("rewrite boot record of a promoted replica", "range", rangeID, "err", err)
					continue
				}
				return
			}
		}
	}
}

// votingNow clears the non-voting mark of a replica's boot record once Raft
// promoted it.
func (s *Store) votingNow(rangeID, replicaID uint64) error {
	s.bootMu.Lock()
	defer s.bootMu.Unlock()
	boot, ok, err := s.engine.bootRecord(rangeID)
	if err != nil || !ok {
		return err
	}
	if boot.ReplicaId != replicaID || !boot.NonVoting {
		return nil
	}
	boot.NonVoting = false
	if err := s.engine.putBoot(boot); err != nil {
		return err
	}
	s.log.Info("replica promoted to voter", "range", rangeID, "replica", replicaID)
	return nil
}

// RemoveRaftReplica removes a replica from Raft's membership.
func (s *Store) RemoveRaftReplica(ctx context.Context, rangeID, replicaID uint64) error {
	if err := s.nh.SyncRequestDeleteReplica(ctx, rangeID, replicaID, 0); err != nil {
		return s.translate(rangeID, err)
	}
	return nil
}

// TransferLeader asks the range's leader to hand over to a replica.
func (s *Store) TransferLeader(rangeID, replicaID uint64) error {
	// A quiesced leader would not hear its successor's answer.
	_, _ = s.nh.ReadIndex(rangeID, time.Second)
	if err := s.nh.RequestLeaderTransfer(rangeID, replicaID); err != nil {
		return s.translate(rangeID, err)
	}
	return nil
}

// CompactLog snapshots the range and compacts its whole log, so that a
// replica added later catches up by snapshot.
// CompactForAdd compacts the range's log on this store past the entry that
// made its current descriptor, and returns that descriptor. Once every
// replica has done so, a replica added to the range starts from a snapshot
// of the range as it is now, whichever replica leads: a replay of the older
// log on a new store would rewrite keys that other ranges there now own (a
// split's child, say) and replay a split that store cannot apply.
func (s *Store) CompactForAdd(ctx context.Context, rangeID uint64) (*kvpb.RangeDescriptor, error) {
	r, err := s.replica(rangeID)
	if err != nil {
		return nil, err
	}
	var nudged time.Time
	for {
		r.mu.RLock()
		d, descIndex := r.desc, r.descIndex
		r.mu.RUnlock()
		if d == nil {
			return nil, fmt.Errorf("range %d: %w", rangeID, ErrNotReady)
		}
		if bugzoo.SkipChildCompaction {
			// The bug zoo's fault skips this compaction too: it would
			// otherwise spare the added replica the log the split child's
			// start left uncompacted.
			return d, nil
		}
		lr, err := s.nh.GetLogReader(rangeID)
		if err != nil {
			return nil, s.translate(rangeID, err)
		}
		first, _ := lr.GetRange()
		if first > 1 && first > descIndex {
			return d, nil
		}
		_, err = s.nh.SyncRequestSnapshot(ctx, rangeID, dragonboat.SnapshotOption{OverrideCompactionOverhead: true, CompactionOverhead: 0})
		if errors.Is(err, dragonboat.ErrRejected) && time.Since(nudged) > 500*time.Millisecond {
			// Nothing applied since the last snapshot (or one is being
			// saved): apply an empty write, so the next snapshot is new.
			nudged = time.Now()
			_, err = s.Propose(ctx, rangeID, &kvpb.Command{Ver: d.Ver, Payload: &kvpb.Command_Write{Write: &kvpb.WriteBatch{}}})
		}
		if err != nil && ctx.Err() == nil && !errors.Is(err, dragonboat.ErrRejected) {
			return nil, s.translate(rangeID, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("range %d: log not compacted past its descriptor (first entry %d, descriptor at %d): %w", rangeID, first, descIndex, ErrTimeout)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Store) CompactLog(ctx context.Context, rangeID uint64) error {
	_, err := s.nh.SyncRequestSnapshot(ctx, rangeID, dragonboat.SnapshotOption{
		OverrideCompactionOverhead: true, CompactionOverhead: 0,
	})
	if err != nil && !errors.Is(err, dragonboat.ErrRejected) {
		return s.translate(rangeID, err)
	}
	// A rejected request (a snapshot already being saved, say) compacted
	// nothing: only a log whose first entry is gone is compacted, and a
	// replica added later then gets a snapshot, not the bootstrap log.
	lr, err := s.nh.GetLogReader(rangeID)
	if err != nil {
		return s.translate(rangeID, err)
	}
	if first, _ := lr.GetRange(); first <= 1 {
		return fmt.Errorf("range %d: log not compacted yet (its first entry is %d)", rangeID, first)
	}
	return nil
}

// DestroyReplica stops the local replica of a range and deletes its Raft
// state, its boot record, its metadata and the parts of its data span that
// no other local replica holds (its descriptor may be stale and wider than
// what it owns: a split or merge it missed gave part of it to a replica
// that runs here). It is called only after the replica has left the range's
// membership.
func (s *Store) DestroyReplica(ctx context.Context, rangeID, replicaID uint64) error {
	r, err := s.replica(rangeID)
	if err != nil {
		return err
	}
	if r.replicaID != replicaID {
		return fmt.Errorf("range %d: local replica is %d, not %d", rangeID, r.replicaID, replicaID)
	}
	desc := r.Descriptor()
	if err := s.nh.StopReplica(rangeID, replicaID); err != nil && !errors.Is(err, dragonboat.ErrShardNotFound) {
		return s.translate(rangeID, err)
	}
	if err := s.engine.deleteBoot(rangeID); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.replicas, rangeID)
	s.loads.drop(rangeID)
	delete(s.leaders, rangeID)
	s.mu.Unlock()
	if err := s.removeRaftData(ctx, rangeID, replicaID); err != nil {
		return err
	}
	// Under the index's lock, so that no replica claims part of the span
	// between the look and the delete.
	s.spans.mu.Lock()
	defer s.spans.mu.Unlock()
	delete(s.spans.held, rangeID)
	var parts []*kvpb.RangeDescriptor
	if desc != nil {
		parts = s.spans.unheld(desc)
		if len(parts) != 1 || !proto.Equal(parts[0], &kvpb.RangeDescriptor{Id: desc.Id, Keyspace: desc.Keyspace, Start: desc.Start, End: desc.End}) {
			s.log.Warn("destroyed replica's span is partly held by other replicas here: only the rest is deleted",
				"range", rangeID, "start", string(desc.Start), "end", string(desc.End), "parts", len(parts))
		}
	}
	return s.engine.deleteRangeState(rangeID, parts)
}

type leaderListener struct{ s *Store }

func (l leaderListener) LeaderUpdated(info raftio.LeaderInfo) {
	l.s.mu.Lock()
	if _, ok := l.s.replicas[info.ShardID]; ok {
		l.s.leaders[info.ShardID] = info
	}
	l.s.mu.Unlock()
	l.s.descriptorChanged(info.ShardID, nil)
}

// membershipListener tells the descriptor watchers of a change of a local
// replica's Raft membership; it ignores Dragonboat's other system events.
type membershipListener struct{ s *Store }

func (l membershipListener) MembershipChanged(info raftio.NodeInfo) {
	l.s.descriptorChanged(info.ShardID, nil)
}
func (membershipListener) NodeHostShuttingDown()                       {}
func (membershipListener) NodeUnloaded(raftio.NodeInfo)                {}
func (membershipListener) NodeDeleted(raftio.NodeInfo)                 {}
func (membershipListener) NodeReady(raftio.NodeInfo)                   {}
func (membershipListener) ConnectionEstablished(raftio.ConnectionInfo) {}
func (membershipListener) ConnectionFailed(raftio.ConnectionInfo)      {}
func (membershipListener) SendSnapshotStarted(raftio.SnapshotInfo)     {}
func (membershipListener) SendSnapshotCompleted(raftio.SnapshotInfo)   {}
func (membershipListener) SendSnapshotAborted(raftio.SnapshotInfo)     {}
func (membershipListener) SnapshotReceived(raftio.SnapshotInfo)        {}
func (membershipListener) SnapshotRecovered(raftio.SnapshotInfo)       {}
func (membershipListener) SnapshotCreated(raftio.SnapshotInfo)         {}
func (membershipListener) SnapshotCompacted(raftio.SnapshotInfo)       {}
func (membershipListener) LogCompacted(raftio.EntryInfo)               {}
func (membershipListener) LogDBCompacted(raftio.EntryInfo)             {}

func (s *Store) countRanges() float64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return float64(len(s.replicas))
}

// keyspaceBytes sums the sizes of this store's replicas per keyspace.
func (s *Store) keyspaceBytes() map[kvpb.Keyspace]uint64 {
	out := map[kvpb.Keyspace]uint64{}
	for _, r := range s.Replicas() {
		if r.Descriptor != nil {
			out[r.Descriptor.Keyspace] += r.Bytes
		}
	}
	return out
}

func (s *Store) countLeaders() float64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for id, li := range s.leaders {
		if r := s.replicas[id]; r != nil && li.LeaderID == r.replicaID {
			n++
		}
	}
	return float64(n)
}

// ackBeforeCommit is the bug zoo's fault: the write is proposed and
// acknowledged at once, before it is committed, as if it had applied.
func (s *Store) ackBeforeCommit(rangeID uint64, cmd *kvpb.Command, data []byte) (*kvpb.CommandResult, error) {
	rs, err := s.nh.Propose(s.nh.GetNoOPSession(rangeID), data, 5*time.Second)
	if err != nil {
		return nil, s.translate(rangeID, err)
	}
	go func() { <-rs.ResultC(); rs.Release() }()
	out := &kvpb.CommandResult{}
	for range cmd.GetWrite().Ops {
		out.Results = append(out.Results, &kvpb.OpResult{CasOk: true})
	}
	return out, nil
}
