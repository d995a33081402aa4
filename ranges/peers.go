package ranges

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bifrost-mq/bifrost/internal/clustertls"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// peers reaches the stores over gRPC at the addresses gossip announces, and
// refreshes a routing table from them. Storage nodes and gateways share it.
type peers struct {
	self    uint64 // this process's store ID; 0 for a gateway
	tls     *clustertls.Credentials
	members *Membership
	table   *Table

	connMu sync.Mutex
	conns  map[string]*grpc.ClientConn

	refreshMu   sync.Mutex
	lastRefresh time.Time
}

func newPeers(self uint64, table *Table, tls *clustertls.Credentials) *peers {
	return &peers{self: self, tls: tls, table: table, conns: map[string]*grpc.ClientConn{}}
}

func (p *peers) closeConns() {
	p.connMu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = map[string]*grpc.ClientConn{}
	p.connMu.Unlock()
}

func (p *peers) conn(addr string) (*grpc.ClientConn, error) {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	if c := p.conns[addr]; c != nil {
		return c, nil
	}
	c, err := dialStore(addr, p.tls)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = c
	return c, nil
}

func (p *peers) storeMember(storeID uint64) (Member, error) {
	m, ok := p.members.Store(storeID)
	if !ok {
		return Member{}, status.Errorf(codes.Unavailable, "store %d: %v", storeID, ErrUnknownStore)
	}
	return m, nil
}

func (p *peers) storeClient(storeID uint64) (rangespb.StoreClient, error) {
	m, err := p.storeMember(storeID)
	if err != nil {
		return nil, err
	}
	c, err := p.conn(m.Meta.GRPC)
	if err != nil {
		return nil, err
	}
	return rangespb.NewStoreClient(c), nil
}

func (p *peers) adminClient(storeID uint64) (rangespb.AdminClient, error) {
	m, err := p.storeMember(storeID)
	if err != nil {
		return nil, err
	}
	c, err := p.conn(m.Meta.GRPC)
	if err != nil {
		return nil, err
	}
	return rangespb.NewAdminClient(c), nil
}

// Refresh asks every live store for the ranges it holds. Calls closer than
// 200ms to the last one do nothing.
func (p *peers) Refresh(ctx context.Context) error {
	p.refreshMu.Lock()
	if time.Since(p.lastRefresh) < 200*time.Millisecond {
		p.refreshMu.Unlock()
		return nil
	}
	p.lastRefresh = time.Now()
	p.refreshMu.Unlock()
	var wg sync.WaitGroup
	for _, m := range p.members.Stores() {
		if m.Meta.StoreID == p.self {
			continue
		}
		wg.Add(1)
		go func(id uint64) {
			defer wg.Done()
			c, err := p.storeClient(id)
			if err != nil {
				return
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			resp, err := c.LocalRanges(cctx, &rangespb.LocalRangesRequest{})
			if err != nil {
				return
			}
			for _, info := range resp.Ranges {
				p.table.Update(info)
			}
		}(m.Meta.StoreID)
	}
	wg.Wait()
	return nil
}

// Conn returns a client connection to a live store's gRPC server, for the
// services registered through NodeConfig.Services.
func (p *peers) Conn(storeID uint64) (*grpc.ClientConn, error) {
	m, err := p.storeMember(storeID)
	if err != nil {
		return nil, err
	}
	return p.conn(m.Meta.GRPC)
}
