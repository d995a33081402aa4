package retain

import (
	"bytes"
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/retain/retainpb"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
)

const keyspace = kvpb.Keyspace_KEYSPACE_RETAIN

// Client sets and matches retained messages through a node's router.
type Client struct {
	router *ranges.Router
}

// NewClient returns a client over a router.
func NewClient(r *ranges.Router) *Client { return &Client{router: r} }

// Set stores (or, with an empty payload, deletes) a retained message.
func (c *Client) Set(ctx context.Context, req *retainpb.SetRequest) (*retainpb.SetResponse, error) {
	if err := validate(req.Tenant, req.Message); err != nil {
		return &retainpb.SetResponse{Result: retainpb.Result_RESULT_INVALID, Reason: err.Error()}, nil
	}
	in, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	key := Key(req.Tenant, req.Message.Topic)
	res, err := c.router.Write(ctx, keyspace, key, nil, &kvpb.Op{Op: &kvpb.Op_Coproc{Coproc: &kvpb.CoprocOp{Key: key, Input: in}}})
	if err != nil {
		return nil, err
	}
	out := &retainpb.SetResponse{}
	if err := proto.Unmarshal(res.Results[0].Value, out); err != nil {
		return nil, fmt.Errorf("undecodable retain response: %w", err)
	}
	return out, nil
}

// Match returns a page of the tenant's unexpired retained messages that
// match a filter, in key order, at most req.Limit (and about
// MaxMatchBytes), from req.From on, across the ranges of the tenant's
// span. The page's Next is the From of the next page; empty when no
// message is left. Pages follow splits and merges between them: a cursor
// is a key, which one range or another holds.
func (c *Client) Match(ctx context.Context, req *retainpb.MatchRequest) (*retainpb.MatchResponse, error) {
	if err := validateFilter(req.Filter); err != nil {
		return nil, fmt.Errorf("%w: filter %.128q (%d bytes): %v", ranges.ErrBadRequest, req.Filter, len(req.Filter), err)
	}
	limit := pageLimit(req.Limit)
	out := &retainpb.MatchResponse{}
	cursor, end := TenantSpan(req.Tenant)
	if bytes.Compare(req.From, cursor) > 0 {
		cursor = req.From
	}
	if bytes.Compare(cursor, end) >= 0 {
		return out, nil
	}
	size := 0
	for {
		q := proto.CloneOf(req)
		q.Limit, q.From = uint32(limit-len(out.Messages)), cursor
		in, err := proto.Marshal(q)
		if err != nil {
			return nil, err
		}
		res, err := c.router.Read(ctx, keyspace, cursor, false, &kvpb.Op{Op: &kvpb.Op_Coproc{Coproc: &kvpb.CoprocOp{Key: cursor, Input: in}}})
		if err != nil {
			return nil, err
		}
		part := &retainpb.MatchResponse{}
		if err := proto.Unmarshal(res.Results[0].Value, part); err != nil {
			return nil, fmt.Errorf("undecodable retain match: %w", err)
		}
		out.Messages = append(out.Messages, part.Messages...)
		for _, m := range part.Messages {
			size += proto.Size(m)
		}
		if len(part.Next) > 0 {
			out.Next = part.Next // the range has more
			return out, nil
		}
		next := res.Range.GetEnd()
		if len(next) == 0 || bytes.Compare(next, end) >= 0 {
			return out, nil
		}
		cursor = next
		if len(out.Messages) >= limit || size >= MaxMatchBytes {
			out.Next = cursor
			return out, nil
		}
	}
}

// Service serves the Retain gRPC API through a client.
type Service struct {
	retainpb.UnimplementedRetainServer
	client *Client
}

// NewService returns the gRPC service.
func NewService(c *Client) *Service { return &Service{client: c} }

func (s *Service) Set(ctx context.Context, req *retainpb.SetRequest) (*retainpb.SetResponse, error) {
	out, err := s.client.Set(ctx, req)
	return out, ranges.ToStatus(err)
}

func (s *Service) Match(ctx context.Context, req *retainpb.MatchRequest) (*retainpb.MatchResponse, error) {
	out, err := s.client.Match(ctx, req)
	return out, ranges.ToStatus(err)
}
