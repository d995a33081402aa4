package inbox

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/bifrost-mq/bifrost/coprocessors/inbox/inboxpb"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
)

const keyspace = kvpb.Keyspace_KEYSPACE_INBOX

// Client runs inbox operations through a node's router.
type Client struct {
	router *ranges.Router
}

// NewClient returns a client over a router.
func NewClient(r *ranges.Router) *Client { return &Client{router: r} }

// target returns the tenant and inbox an input addresses (inserts excepted).
func target(in *inboxpb.Input) (string, string) {
	switch op := in.Op.(type) {
	case *inboxpb.Input_Attach:
		return op.Attach.Tenant, op.Attach.Inbox
	case *inboxpb.Input_Detach:
		return op.Detach.Tenant, op.Detach.Inbox
	case *inboxpb.Input_Subscribe:
		return op.Subscribe.Tenant, op.Subscribe.Inbox
	case *inboxpb.Input_Unsubscribe:
		return op.Unsubscribe.Tenant, op.Unsubscribe.Inbox
	case *inboxpb.Input_Commit:
		return op.Commit.Tenant, op.Commit.Inbox
	case *inboxpb.Input_Expire:
		return op.Expire.Tenant, op.Expire.Inbox
	case *inboxpb.Input_WillSent:
		return op.WillSent.Tenant, op.WillSent.Inbox
	}
	return "", ""
}

// Mutate runs one input addressed to one inbox. Use Insert for messages.
func (c *Client) Mutate(ctx context.Context, in *inboxpb.Input) (*inboxpb.Output, error) {
	if in.GetInsert() != nil {
		resp, err := c.Insert(ctx, in.GetInsert().Items)
		if err != nil {
			return nil, err
		}
		return &inboxpb.Output{Insert: resp}, nil
	}
	tenant, inbox := target(in)
	if !validID(tenant) || !validID(inbox) {
		return &inboxpb.Output{Result: inboxpb.Result_RESULT_INVALID, Reason: "tenant and inbox must be non-empty and free of NUL"}, nil
	}
	return c.mutate(ctx, Prefix(tenant, inbox), in)
}

func (c *Client) mutate(ctx context.Context, key []byte, in *inboxpb.Input) (*inboxpb.Output, error) {
	b, err := proto.Marshal(in)
	if err != nil {
		return nil, err
	}
	res, err := c.router.Write(ctx, keyspace, key, nil, &kvpb.Op{Op: &kvpb.Op_Coproc{Coproc: &kvpb.CoprocOp{Key: key, Input: b}}})
	if err != nil {
		return nil, err
	}
	o := &inboxpb.Output{}
	if err := proto.Unmarshal(res.Results[0].Value, o); err != nil {
		return nil, fmt.Errorf("undecodable inbox output: %w", err)
	}
	return o, nil
}

// byRange groups indexes by the range the routing table sends key(i) to
// (0: none known), the ranges in the order first seen.
func (c *Client) byRange(idx []int, key func(i int) []byte) (order []uint64, groups map[uint64][]int) {
	groups = map[uint64][]int{}
	for _, i := range idx {
		var id uint64
		if r := c.router.Table().Lookup(keyspace, key(i)); r != nil {
			id = r.Desc.Id
		}
		if _, ok := groups[id]; !ok {
			order = append(order, id)
		}
		groups[id] = append(groups[id], i)
	}
	return order, groups
}

// Insert appends messages to inboxes, one proposal per range, and returns a
// result per item in order. Items whose inbox moved to another range while
// in flight are routed again.
func (c *Client) Insert(ctx context.Context, items []*inboxpb.InsertItem) (*inboxpb.InsertResponse, error) {
	results := make([]inboxpb.InsertResult, len(items))
	owners := make([]string, len(items))
	seqs := make([]uint64, len(items))
	todo := make([]int, 0, len(items))
	for i, it := range items {
		if !validID(it.Tenant) || !validID(it.Inbox) {
			results[i] = inboxpb.InsertResult_INSERT_NO_INBOX
			continue
		}
		todo = append(todo, i)
	}
	for attempt := 0; len(todo) > 0; attempt++ {
		if attempt == 10 {
			return nil, fmt.Errorf("%w: inboxes kept moving between ranges", ranges.ErrUnavailable)
		}
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(attempt) * 20 * time.Millisecond):
			}
		}
		order, groups := c.byRange(todo, func(i int) []byte { return Prefix(items[i].Tenant, items[i].Inbox) })
		var retry []int
		for _, id := range order {
			idx := groups[id]
			req := &inboxpb.InsertRequest{}
			for _, i := range idx {
				req.Items = append(req.Items, items[i])
			}
			key := Prefix(items[idx[0]].Tenant, items[idx[0]].Inbox)
			o, err := c.mutate(ctx, key, &inboxpb.Input{Op: &inboxpb.Input_Insert{Insert: req}})
			if err != nil {
				return nil, err
			}
			if o.Result != inboxpb.Result_RESULT_OK {
				return nil, fmt.Errorf("inbox insert: %s %s", o.Result, o.Reason)
			}
			ow, sq := o.GetInsert().GetOwners(), o.GetInsert().GetSeqs()
			for j, r := range o.GetInsert().GetResults() {
				if r == inboxpb.InsertResult_INSERT_WRONG_RANGE {
					retry = append(retry, idx[j])
				} else {
					results[idx[j]] = r
					if j < len(ow) {
						owners[idx[j]] = ow[j]
					}
					if j < len(sq) {
						seqs[idx[j]] = sq[j]
					}
				}
			}
		}
		todo = retry
	}
	return &inboxpb.InsertResponse{Results: results, Owners: owners, Seqs: seqs}, nil
}

// CommitBatch applies the commits of many sessions: one command per range
// (router.WriteBatch), so that the acknowledgements of every session a
// frontend serves cost one Raft round, not one each. outs[i] is commits[i]'s
// output, nil where its range could not be reached; err joins those
// failures. A commit is idempotent, so a failed one may be sent again.
func (c *Client) CommitBatch(ctx context.Context, commits []*inboxpb.CommitRequest) ([]*inboxpb.Output, error) {
	outs := make([]*inboxpb.Output, len(commits))
	ops := make([]ranges.KeyedOp, 0, len(commits))
	idx := make([]int, 0, len(commits))
	for i, cr := range commits {
		if !validID(cr.Tenant) || !validID(cr.Inbox) {
			outs[i] = &inboxpb.Output{Result: inboxpb.Result_RESULT_INVALID, Reason: "tenant and inbox must be non-empty and free of NUL"}
			continue
		}
		b, err := proto.Marshal(&inboxpb.Input{Op: &inboxpb.Input_Commit{Commit: cr}})
		if err != nil {
			return nil, err
		}
		key := Prefix(cr.Tenant, cr.Inbox)
		ops = append(ops, ranges.KeyedOp{Op: &kvpb.Op{Op: &kvpb.Op_Coproc{Coproc: &kvpb.CoprocOp{Key: key, Input: b}}}})
		idx = append(idx, i)
	}
	if len(ops) == 0 {
		return outs, nil
	}
	res, err := c.router.WriteBatch(ctx, keyspace, ops)
	for j, r := range res {
		if r == nil {
			continue
		}
		o := &inboxpb.Output{}
		if uerr := proto.Unmarshal(r.Value, o); uerr != nil {
			return nil, fmt.Errorf("undecodable inbox output: %w", uerr)
		}
		outs[idx[j]] = o
	}
	return outs, err
}

// GetMany reads the records of many inboxes linearizably, one read per
// range: metas[i] is gets[i]'s record, nil where it has none. A group whose
// range moved meanwhile is asked again inbox by inbox.
func (c *Client) GetMany(ctx context.Context, gets []*inboxpb.GetRequest) ([]*inboxpb.Meta, error) {
	metas := make([]*inboxpb.Meta, len(gets))
	all := make([]int, len(gets))
	for i, g := range gets {
		if !validID(g.Tenant) || !validID(g.Inbox) {
			return nil, fmt.Errorf("%w: tenant and inbox must be non-empty and free of NUL", ranges.ErrBadRequest)
		}
		all[i] = i
	}
	order, groups := c.byRange(all, func(i int) []byte { return Prefix(gets[i].Tenant, gets[i].Inbox) })
	for _, id := range order {
		idx := groups[id]
		if len(idx) > 1 {
			ops := make([]*kvpb.Op, 0, len(idx))
			for _, i := range idx {
				b, err := proto.Marshal(&inboxpb.QueryRequest{Op: &inboxpb.QueryRequest_Get{Get: gets[i]}})
				if err != nil {
					return nil, err
				}
				key := Prefix(gets[i].Tenant, gets[i].Inbox)
				ops = append(ops, &kvpb.Op{Op: &kvpb.Op_Coproc{Coproc: &kvpb.CoprocOp{Key: key, Input: b}}})
			}
			first := Prefix(gets[idx[0]].Tenant, gets[idx[0]].Inbox)
			res, err := c.router.Read(ctx, keyspace, first, false, ops...)
			if err == nil && res.Status == kvpb.Status_STATUS_OK && len(res.Results) == len(idx) {
				for j, i := range idx {
					out := &inboxpb.QueryResponse{}
					if err := proto.Unmarshal(res.Results[j].Value, out); err != nil {
						return nil, fmt.Errorf("undecodable inbox query response: %w", err)
					}
					metas[i] = out.Meta
				}
				continue
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		}
		for _, i := range idx {
			q, err := c.Query(ctx, &inboxpb.QueryRequest{Op: &inboxpb.QueryRequest_Get{Get: gets[i]}})
			if err != nil {
				return nil, err
			}
			metas[i] = q.Meta
		}
	}
	return metas, nil
}

// Query runs a query addressed to one inbox (fetch or get), linearizably.
func (c *Client) Query(ctx context.Context, q *inboxpb.QueryRequest) (*inboxpb.QueryResponse, error) {
	return c.query(ctx, q, false)
}

// Fetch reads an inbox's messages. With linearizable false it reads the
// applied state of the range's leader (as the routing table knows it)
// without a ReadIndex round: it may miss the latest inserts when
// leadership just moved, or show an older owner, and a caller that needs
// to know (the first fetch of a connection, a fetch that found nothing it
// was told of) asks again linearizably.
func (c *Client) Fetch(ctx context.Context, f *inboxpb.FetchRequest, linearizable bool) (*inboxpb.FetchResponse, error) {
	q, err := c.query(ctx, &inboxpb.QueryRequest{Op: &inboxpb.QueryRequest_Fetch{Fetch: f}}, !linearizable)
	if err != nil {
		return nil, err
	}
	return q.Fetch, nil
}

func (c *Client) query(ctx context.Context, q *inboxpb.QueryRequest, stale bool) (*inboxpb.QueryResponse, error) {
	var tenant, inbox string
	switch op := q.Op.(type) {
	case *inboxpb.QueryRequest_Fetch:
		tenant, inbox = op.Fetch.Tenant, op.Fetch.Inbox
	case *inboxpb.QueryRequest_Get:
		tenant, inbox = op.Get.Tenant, op.Get.Inbox
	default:
		return nil, fmt.Errorf("%w: a query must fetch or get", ranges.ErrBadRequest)
	}
	if !validID(tenant) || !validID(inbox) {
		return nil, fmt.Errorf("%w: tenant and inbox must be non-empty and free of NUL", ranges.ErrBadRequest)
	}
	b, err := proto.Marshal(q)
	if err != nil {
		return nil, err
	}
	key := Prefix(tenant, inbox)
	res, err := c.router.Read(ctx, keyspace, key, stale, &kvpb.Op{Op: &kvpb.Op_Coproc{Coproc: &kvpb.CoprocOp{Key: key, Input: b}}})
	if err != nil {
		return nil, err
	}
	out := &inboxpb.QueryResponse{}
	if err := proto.Unmarshal(res.Results[0].Value, out); err != nil {
		return nil, fmt.Errorf("undecodable inbox query response: %w", err)
	}
	return out, nil
}

// List returns a page of a tenant's persistent sessions whose inbox ID
// starts with prefix and sorts after after, in ID order, at most limit
// (1 to 1000), read linearizably range by range. next is the after of the
// next page, empty when none is left; a cursor is an inbox ID, so pages
// follow splits and merges between them.
func (c *Client) List(ctx context.Context, tenant, prefix, after string, limit int) (sessions []*inboxpb.Meta, next string, err error) {
	if !validID(tenant) || strings.ContainsRune(prefix, 0) || strings.ContainsRune(after, 0) {
		return nil, "", fmt.Errorf("%w: tenant must be non-empty, and tenant, prefix and cursor free of NUL", ranges.ErrBadRequest)
	}
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	key := append([]byte(tenant+"\x00"), prefix...)
	if a := []byte(tenant + "\x00" + after + "\x01"); after != "" && bytes.Compare(a, key) > 0 {
		key = a
	}
	end := []byte(tenant + "\x01")
	for {
		in, err := proto.Marshal(&inboxpb.QueryRequest{Op: &inboxpb.QueryRequest_List{List: &inboxpb.ListRequest{
			Tenant: tenant, Prefix: prefix, After: after, Max: uint32(limit - len(sessions))}}})
		if err != nil {
			return nil, "", err
		}
		res, err := c.router.Read(ctx, keyspace, key, false, &kvpb.Op{Op: &kvpb.Op_Coproc{Coproc: &kvpb.CoprocOp{Key: key, Input: in}}})
		if err != nil {
			return nil, "", err
		}
		out := &inboxpb.QueryResponse{}
		if err := proto.Unmarshal(res.Results[0].Value, out); err != nil {
			return nil, "", fmt.Errorf("undecodable inbox list: %w", err)
		}
		sessions = append(sessions, out.List.GetSessions()...)
		if n := len(sessions); n > 0 {
			after = sessions[n-1].Inbox
		}
		if out.List.GetMore() {
			return sessions, after, nil
		}
		rangeEnd := res.Range.GetEnd()
		if len(rangeEnd) == 0 || bytes.Compare(rangeEnd, end) >= 0 {
			return sessions, "", nil
		}
		if len(sessions) >= limit {
			return sessions, after, nil
		}
		key = rangeEnd
	}
}

// Service serves the Inbox gRPC API through a client.
type Service struct {
	inboxpb.UnimplementedInboxServer
	client *Client
}

// NewService returns the gRPC service.
func NewService(c *Client) *Service { return &Service{client: c} }

func (s *Service) Mutate(ctx context.Context, in *inboxpb.Input) (*inboxpb.Output, error) {
	out, err := s.client.Mutate(ctx, in)
	return out, ranges.ToStatus(err)
}

func (s *Service) Query(ctx context.Context, q *inboxpb.QueryRequest) (*inboxpb.QueryResponse, error) {
	out, err := s.client.Query(ctx, q)
	return out, ranges.ToStatus(err)
}
