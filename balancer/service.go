package balancer

import (
	"context"

	"github.com/bifrost-mq/bifrost/balancer/balancerpb"
)

// Service is the balancer's gRPC admin API. A call without local set fans
// out to every live store's balancer.
type Service struct {
	balancerpb.UnimplementedBalancerServer
	b *Balancer
}

// NewService returns the service of a balancer.
func NewService(b *Balancer) *Service { return &Service{b: b} }

func (s *Service) Status(ctx context.Context, req *balancerpb.StatusRequest) (*balancerpb.StatusResponse, error) {
	if req.Local {
		return &balancerpb.StatusResponse{Stores: []*balancerpb.StoreStatus{s.b.Status()}}, nil
	}
	resp := &balancerpb.StatusResponse{}
	s.fanOut(func(c balancerpb.BalancerClient, id uint64) {
		r, err := c.Status(ctx, &balancerpb.StatusRequest{Local: true})
		if err != nil {
			resp.Stores = append(resp.Stores, &balancerpb.StoreStatus{StoreId: id, Error: err.Error()})
			return
		}
		resp.Stores = append(resp.Stores, r.Stores...)
	})
	return resp, nil
}

func (s *Service) Control(ctx context.Context, req *balancerpb.ControlRequest) (*balancerpb.ControlResponse, error) {
	if req.Local {
		if req.Pause {
			s.b.Pause()
		} else {
			s.b.Resume()
		}
		s.b.log.Info("balancer control", "paused", req.Pause)
		return &balancerpb.ControlResponse{Stores: []*balancerpb.StoreStatus{s.b.Status()}}, nil
	}
	resp := &balancerpb.ControlResponse{}
	s.fanOut(func(c balancerpb.BalancerClient, id uint64) {
		r, err := c.Control(ctx, &balancerpb.ControlRequest{Pause: req.Pause, Local: true})
		if err != nil {
			resp.Stores = append(resp.Stores, &balancerpb.StoreStatus{StoreId: id, Error: err.Error()})
			return
		}
		resp.Stores = append(resp.Stores, r.Stores...)
	})
	return resp, nil
}

func (s *Service) fanOut(call func(c balancerpb.BalancerClient, id uint64)) {
	for _, m := range s.b.node.Membership().Stores() {
		conn, err := s.b.node.Conn(m.Meta.StoreID)
		if err != nil {
			continue
		}
		call(balancerpb.NewBalancerClient(conn), m.Meta.StoreID)
	}
}
