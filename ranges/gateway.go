package ranges

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bifrost-mq/bifrost/internal/clustertls"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// GatewayConfig configures a Gateway.
type GatewayConfig struct {
	// Name is the gossip name; required (a frontend's, say).
	Name string
	// Role announced in gossip; default RoleFrontend.
	Role string
	// GossipAddr is the host:port gossip binds; GossipAdvertise what peers dial.
	GossipAddr, GossipAdvertise string
	// Join lists gossip seeds; required.
	Join []string
	// GRPCAddr is the address of the member's own gRPC server (a frontend's
	// Frontend service), gossiped to peers; empty: none.
	GRPCAddr string
	// MQTT announces an MQTT frontend.
	MQTT bool
	// FastGossip tunes memberlist for loopback tests.
	FastGossip bool
	// GossipKey, if set, encrypts gossip (MembershipConfig.SecretKey).
	GossipKey []byte
	// TLS, if set, is the member's cluster identity for its gRPC clients of
	// the stores (mutual TLS). Nil: plaintext.
	TLS        *clustertls.Credentials
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Gateway is a cluster member that holds no data: it learns the ranges from
// gossip and routes requests to the stores over gRPC. MQTT frontends use it.
type Gateway struct {
	*peers
	router *Router
	log    *slog.Logger
}

// StartGateway joins the cluster's gossip and returns a gateway whose router
// reaches every range.
func StartGateway(cfg GatewayConfig) (*Gateway, error) {
	if cfg.Name == "" {
		return nil, errors.New("gateway: a name is required")
	}
	if len(cfg.Join) == 0 {
		return nil, errors.New("gateway: no seeds to join")
	}
	if cfg.Role == "" {
		cfg.Role = RoleFrontend
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	g := &Gateway{peers: newPeers(0, NewTable(), cfg.TLS), log: cfg.Logger.With("member", cfg.Name)}
	g.router = NewRouter(RouterConfig{Logger: cfg.Logger, Registerer: cfg.Registerer}, g.table, g, g.peers)
	m, err := NewMembership(MembershipConfig{
		Name: cfg.Name, BindAddr: cfg.GossipAddr, AdvertiseAddr: cfg.GossipAdvertise, Join: cfg.Join,
		Fast: cfg.FastGossip, SecretKey: cfg.GossipKey, Logger: cfg.Logger,
	}, func() MemberMeta { return MemberMeta{Role: cfg.Role, GRPC: cfg.GRPCAddr, MQTT: cfg.MQTT} }, nil, func(b []byte) {
		for _, info := range decodeRangeState(b) {
			g.table.Update(info)
		}
	})
	if err != nil {
		return nil, err
	}
	g.members = m
	return g, nil
}

// Router returns the gateway's router.
func (g *Gateway) Router() *Router { return g.router }

// Membership returns the gateway's gossip view.
func (g *Gateway) Membership() *Membership { return g.members }

// Execute runs a request on a store over gRPC.
func (g *Gateway) Execute(ctx context.Context, storeID uint64, req *rangespb.ExecuteRequest) (*rangespb.ExecuteResponse, error) {
	c, err := g.storeClient(storeID)
	if err != nil {
		return nil, err
	}
	return c.Execute(ctx, req)
}

// WaitReady waits until the gateway routes every keyspace's first range.
func (g *Gateway) WaitReady(ctx context.Context) error {
	for {
		if g.Ready() {
			return nil
		}
		_ = g.Refresh(ctx)
		select {
		case <-ctx.Done():
			return fmt.Errorf("gateway: the cluster's ranges are not known yet: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Ready reports whether the gateway knows a range of every first keyspace.
func (g *Gateway) Ready() bool {
	for _, fr := range FirstRanges {
		if g.table.Lookup(fr.Keyspace, nil) == nil {
			return false
		}
	}
	return true
}

// Close leaves gossip and closes connections.
func (g *Gateway) Close() error {
	err := g.members.Close()
	g.closeConns()
	return err
}
