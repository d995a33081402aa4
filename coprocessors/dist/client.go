package dist

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/dist/distpb"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
)

const keyspace = kvpb.Keyspace_KEYSPACE_DIST

// Client adds, removes and matches routes through a node's router.
type Client struct {
	router *ranges.Router
}

// NewClient returns a client over a router.
func NewClient(r *ranges.Router) *Client { return &Client{router: r} }

// AddRoute adds a route; the result says whether it existed or hit the limit.
func (c *Client) AddRoute(ctx context.Context, req *distpb.AddRouteRequest) (*distpb.Output, error) {
	tenant, sub, r, err := decodeRoute(req.Route)
	if err != nil {
		return &distpb.Output{Result: distpb.Result_RESULT_INVALID, Reason: err.Error()}, nil
	}
	key := routeKey(tenant, sub, r)
	if req.MaxRoutesPerTenant > 0 {
		// The limit is the tenant's, and its routes may span ranges: the
		// range that adds the route counts its own, the others' are
		// counted here. Concurrent adds in different ranges can pass
		// together, so the limit can be exceeded by as many as run at once.
		elsewhere, err := c.routesElsewhere(ctx, tenant, key)
		if err != nil {
			return nil, err
		}
		req = proto.CloneOf(req)
		req.RoutesElsewhere = elsewhere
	}
	return c.mutate(ctx, key, &distpb.Input{Op: &distpb.Input_Add{Add: req}})
}

// routesElsewhere counts the tenant's routes in the ranges of its span that
// do not hold key.
func (c *Client) routesElsewhere(ctx context.Context, tenant string, key []byte) (uint64, error) {
	var n uint64
	err := c.eachRange(ctx, &distpb.MatchRequest{Tenant: tenant, CountRoutes: true}, func(d *kvpb.RangeDescriptor, part *distpb.MatchResponse) {
		if !kvstore.ContainsKey(d, key) {
			n += part.RouteCount
		}
	})
	return n, err
}

// eachRange asks req of every range of the tenant's key span, in order,
// following splits and merges as it goes, and hands each answer to f.
func (c *Client) eachRange(ctx context.Context, req *distpb.MatchRequest, f func(*kvpb.RangeDescriptor, *distpb.MatchResponse)) error {
	input, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	cursor, end := TenantSpan(req.Tenant)
	for {
		res, err := c.router.Read(ctx, keyspace, cursor, req.Stale, &kvpb.Op{Op: &kvpb.Op_Coproc{Coproc: &kvpb.CoprocOp{Key: cursor, Input: input}}})
		if err != nil {
			return err
		}
		part := &distpb.MatchResponse{}
		if err := proto.Unmarshal(res.Results[0].Value, part); err != nil {
			return fmt.Errorf("undecodable match response: %w", err)
		}
		f(res.Range, part)
		next := res.Range.GetEnd()
		if len(next) == 0 || string(next) >= string(end) {
			return nil
		}
		cursor = next
	}
}

// RemoveRoute removes a route.
func (c *Client) RemoveRoute(ctx context.Context, req *distpb.RemoveRouteRequest) (*distpb.Output, error) {
	tenant, sub, r, err := decodeRoute(req.Route)
	if err != nil {
		return &distpb.Output{Result: distpb.Result_RESULT_INVALID, Reason: err.Error()}, nil
	}
	return c.mutate(ctx, routeKey(tenant, sub, r), &distpb.Input{Op: &distpb.Input_Remove{Remove: req}})
}

func (c *Client) mutate(ctx context.Context, key []byte, in *distpb.Input) (*distpb.Output, error) {
	b, err := proto.Marshal(in)
	if err != nil {
		return nil, err
	}
	res, err := c.router.Write(ctx, keyspace, key, nil, &kvpb.Op{Op: &kvpb.Op_Coproc{Coproc: &kvpb.CoprocOp{Key: key, Input: b}}})
	if err != nil {
		return nil, err
	}
	out := &distpb.Output{}
	if err := proto.Unmarshal(res.Results[0].Value, out); err != nil {
		return nil, fmt.Errorf("undecodable dist output: %w", err)
	}
	return out, nil
}

// Match matches topics against every route of the tenant, range by range
// across the tenant's key span, following splits and merges as it goes.
func (c *Client) Match(ctx context.Context, req *distpb.MatchRequest) (*distpb.MatchResponse, error) {
	if !validTenant(req.Tenant) {
		return nil, fmt.Errorf("%w: tenant contains NUL", ranges.ErrBadRequest)
	}
	for _, t := range req.Topics {
		if err := ValidateTopicName(t); err != nil {
			return nil, fmt.Errorf("%w: topic %.128q (%d bytes): %v", ranges.ErrBadRequest, t, len(t), err)
		}
	}
	out := &distpb.MatchResponse{Topics: make([]*distpb.TopicMatches, len(req.Topics))}
	for i := range out.Topics {
		out.Topics[i] = &distpb.TopicMatches{}
	}
	err := c.eachRange(ctx, req, func(_ *kvpb.RangeDescriptor, part *distpb.MatchResponse) {
		for i, tm := range part.Topics {
			if i < len(out.Topics) {
				out.Topics[i].Matched = append(out.Topics[i].Matched, tm.Matched...)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Service serves the Dist gRPC API through a client.
type Service struct {
	distpb.UnimplementedDistServer
	client *Client
}

// NewService returns the gRPC service.
func NewService(c *Client) *Service { return &Service{client: c} }

func (s *Service) AddRoute(ctx context.Context, req *distpb.AddRouteRequest) (*distpb.Output, error) {
	out, err := s.client.AddRoute(ctx, req)
	return out, ranges.ToStatus(err)
}

func (s *Service) RemoveRoute(ctx context.Context, req *distpb.RemoveRouteRequest) (*distpb.Output, error) {
	out, err := s.client.RemoveRoute(ctx, req)
	return out, ranges.ToStatus(err)
}

func (s *Service) Match(ctx context.Context, req *distpb.MatchRequest) (*distpb.MatchResponse, error) {
	out, err := s.client.Match(ctx, req)
	return out, ranges.ToStatus(err)
}
