package ranges

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/bifrost-mq/bifrost/internal/clustertls"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// NodeConfig configures a storage node.
type NodeConfig struct {
	// Store configures the engine and Raft host.
	Store kvstore.Config
	// Name is the gossip name; default "store-<id>".
	Name string
	// GossipAddr is the host:port gossip binds; GossipAdvertise what peers dial (default GossipAddr).
	GossipAddr, GossipAdvertise string
	// GRPCAddr is the host:port the gRPC services listen on.
	GRPCAddr string
	// Join lists gossip seeds.
	Join []string
	// BootstrapExpect > 0 makes this store take part in creating the first
	// ranges once that many stores are members. 0 only joins a cluster.
	BootstrapExpect int
	// ReconcileInterval is how often a leader checks its ranges' replica
	// lists against Raft. Default 5s.
	ReconcileInterval time.Duration
	// MergeResolveAfter is how long a range may stay frozen for a merge
	// before its leader finishes or rolls back the merge itself. Default 10s.
	MergeResolveAfter time.Duration
	// Failpoint, for tests only, is called at the steps of split and merge
	// named by the Fail* constants; an error abandons the operation there.
	Failpoint func(step string) error
	// Services registers more gRPC services (the coprocessors') on the
	// node's server before it starts serving.
	Services func(s *grpc.Server, n *Node)
	// FastGossip tunes memberlist for loopback tests.
	FastGossip bool
	// GossipKey, if set, encrypts gossip (MembershipConfig.SecretKey).
	GossipKey []byte
	// MQTT announces that the node also runs an MQTT frontend (standalone).
	MQTT bool
	// TLS, if set, secures the node's gRPC server and clients and its Raft
	// with mutual TLS (it overrides Store.TLS). Nil: plaintext.
	TLS        *clustertls.Credentials
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Validate reports the first bad field.
func (c *NodeConfig) Validate() error {
	if err := c.Store.Validate(); err != nil {
		return err
	}
	for name, addr := range map[string]string{"gossip": c.GossipAddr, "grpc": c.GRPCAddr, "raft": c.Store.RaftAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%s address %q: %w", name, addr, err)
		}
	}
	if c.BootstrapExpect < 0 {
		return errors.New("bootstrap-expect must not be negative")
	}
	return nil
}

// Node is a running storage node: store, gossip, gRPC services and router.
type Node struct {
	*peers
	cfg    NodeConfig
	log    *slog.Logger
	store  *kvstore.Store
	router *Router
	server *grpc.Server
	lis    net.Listener

	bootstrapped chan struct{}
	bootOnce     sync.Once

	recon *storeReconciler
	// replicaWork holds the ranges the replica reconciler looks at next
	// (replicas.go).
	replicaWork *dirtyRanges

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// closeMu and storeClosed keep readers of the store that Close does not
	// wait for (memberlist answers a push-pull on its own goroutine, even
	// after Shutdown) away from a closed engine.
	closeMu     sync.RWMutex
	storeClosed bool
}

// StartNode opens the store, starts gossip and serves gRPC.
func StartNode(cfg NodeConfig) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = 5 * time.Second
	}
	if cfg.MergeResolveAfter == 0 {
		cfg.MergeResolveAfter = mergeResolveAfter
	}
	cfg.Store.Logger = cfg.Logger
	cfg.Store.Registerer = cfg.Registerer
	cfg.Store.TLS = cfg.TLS
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("grpc listen on %s: %w", cfg.GRPCAddr, err)
	}
	store, err := kvstore.Open(cfg.Store)
	if err != nil {
		lis.Close()
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = fmt.Sprintf("store-%d", store.ID())
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		peers: newPeers(store.ID(), NewTable(), cfg.TLS),
		cfg:   cfg, log: cfg.Logger.With("store", store.ID()), store: store, lis: lis,
		bootstrapped: make(chan struct{}), ctx: ctx, cancel: cancel,
	}
	n.router = NewRouter(RouterConfig{Logger: cfg.Logger, Registerer: cfg.Registerer, LocalStore: store.ID()}, n.table, n, n)
	n.recon = newStoreReconciler(cfg.Registerer)
	n.replicaWork = newDirtyRanges()
	for _, r := range store.Replicas() {
		n.replicaWork.mark(r.RangeID)
	}
	for _, info := range n.localRanges() {
		n.table.Update(info)
	}
	if len(store.Replicas()) > 0 {
		n.markBootstrapped()
	}
	store.OnDescriptorChange(func(rangeID uint64) {
		n.replicaWork.mark(rangeID)
		if r, ok := store.Replica(rangeID); ok && r.Descriptor != nil {
			n.table.Update(n.rangeInfo(r))
		}
		n.markBootstrapped()
	})

	n.server = clustertls.NewServer(cfg.TLS, grpc.MaxRecvMsgSize(kvstore.MaxValueSize+1<<20))
	rangespb.RegisterKVServer(n.server, &kvServer{n: n})
	rangespb.RegisterStoreServer(n.server, &storeServer{n: n})
	rangespb.RegisterAdminServer(n.server, &adminServer{n: n})
	if cfg.Services != nil {
		cfg.Services(n.server, n)
	}
	n.members, err = NewMembership(MembershipConfig{
		Name: cfg.Name, BindAddr: cfg.GossipAddr, AdvertiseAddr: cfg.GossipAdvertise, Join: cfg.Join,
		Fast: cfg.FastGossip, SecretKey: cfg.GossipKey, Logger: cfg.Logger,
		OnLeave: func(mem Member) {
			// The ranges it led may be quiesced here: their followers
			// would not notice it is gone until a request came.
			if mem.Meta.Role == RoleStore && mem.Meta.StoreID != 0 && mem.Meta.StoreID != store.ID() {
				if woken := store.WakeLedFrom(mem.Meta.StoreID); woken > 0 {
					n.log.Info("woke the ranges a departed store led", "store", mem.Meta.StoreID, "ranges", woken)
				}
			}
		},
	}, n.meta, func() []byte { return encodeRangeState(n.localRanges()) }, func(b []byte) {
		for _, info := range decodeRangeState(b) {
			n.table.Update(info)
		}
	})
	if err != nil {
		n.Close()
		return nil, err
	}
	// Serve only now: a request that looks for a route uses the membership.
	// Until then peers that dial this store are refused and retry.
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.server.Serve(lis); err != nil {
			n.log.Error("grpc server stopped", "err", err)
		}
	}()
	// A store with an unfinished bootstrap plan finishes it, flag or not.
	if cfg.BootstrapExpect > 0 || hasBootstrapPlan(cfg.Store.DataDir) {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.bootstrapLoop()
		}()
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.reconcileLoop()
	}()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.storeReconcileLoop()
	}()
	n.log.Info("storage node started", "grpc", lis.Addr().String(), "gossip", cfg.GossipAddr, "raft", cfg.Store.RaftAddr)
	return n, nil
}

// Close stops the node and waits for its goroutines.
func (n *Node) Close() error {
	n.cancel()
	if n.members != nil {
		_ = n.members.Close()
	}
	n.server.Stop()
	n.wg.Wait()
	n.closeConns()
	n.closeMu.Lock()
	n.storeClosed = true
	n.closeMu.Unlock()
	return n.store.Close()
}

// Store returns the node's store.
func (n *Node) Store() *kvstore.Store { return n.store }

// Router returns the node's router.
func (n *Node) Router() *Router { return n.router }

// Membership returns the node's gossip view.
func (n *Node) Membership() *Membership { return n.members }

// Name is the node's gossip member name.
func (n *Node) Name() string { return n.cfg.Name }

// GRPCAddr returns the address the gRPC services listen on.
func (n *Node) GRPCAddr() string { return n.lis.Addr().String() }

// Bootstrapped is closed once the node holds or has held a range.
func (n *Node) Bootstrapped() <-chan struct{} { return n.bootstrapped }

func (n *Node) markBootstrapped() {
	n.bootOnce.Do(func() {
		close(n.bootstrapped)
		if n.members != nil {
			go n.members.UpdateMeta()
		}
	})
}

func (n *Node) isBootstrapped() bool {
	select {
	case <-n.bootstrapped:
		return true
	default:
		return false
	}
}

func (n *Node) meta() MemberMeta {
	return MemberMeta{StoreID: n.store.ID(), Role: RoleStore, GRPC: n.GRPCAddr(), Raft: n.store.RaftAddr(),
		Bootstrapped: n.isBootstrapped(), MQTT: n.cfg.MQTT}
}

func (n *Node) localRanges() []*rangespb.RangeInfo {
	n.closeMu.RLock()
	defer n.closeMu.RUnlock()
	if n.storeClosed {
		return nil
	}
	var out []*rangespb.RangeInfo
	for _, r := range n.store.Replicas() {
		if r.Descriptor != nil {
			out = append(out, n.rangeInfo(r))
		}
	}
	return out
}

// rangeInfo is what this store reports of its replica of a range. Its size
// is the replica's counter: reporting reads no data.
func (n *Node) rangeInfo(r kvstore.ReplicaStatus) *rangespb.RangeInfo {
	return &rangespb.RangeInfo{
		Range: r.Descriptor, StoreId: n.store.ID(), ReplicaId: r.ReplicaID,
		LeaderReplicaId: r.LeaderID, LeaderTerm: r.LeaderTerm, ApproximateBytes: r.Bytes,
	}
}

// Execute runs a request on a store: in-process for the local store, over
// gRPC for the others.
func (n *Node) Execute(ctx context.Context, storeID uint64, req *rangespb.ExecuteRequest) (*rangespb.ExecuteResponse, error) {
	if storeID == n.store.ID() {
		return n.executeLocal(ctx, req)
	}
	client, err := n.storeClient(storeID)
	if err != nil {
		return nil, err
	}
	return client.Execute(ctx, req)
}

func (n *Node) executeLocal(ctx context.Context, req *rangespb.ExecuteRequest) (*rangespb.ExecuteResponse, error) {
	var res *kvpb.CommandResult
	var err error
	switch r := req.Request.(type) {
	case *rangespb.ExecuteRequest_Command:
		res, err = n.store.Propose(ctx, req.RangeId, r.Command)
	case *rangespb.ExecuteRequest_Query:
		res, err = n.store.Read(ctx, req.RangeId, r.Query, req.Stale)
	default:
		return nil, fmt.Errorf("%w: empty execute request", ErrBadRequest)
	}
	if err != nil {
		return nil, err
	}
	resp := &rangespb.ExecuteResponse{Result: res}
	resp.LeaderReplicaId, resp.LeaderTerm, _ = n.store.Leader(req.RangeId)
	return resp, nil
}
