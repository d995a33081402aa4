package ranges

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/bugzoo"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// ToStatus maps the package's errors to gRPC status codes at the RPC boundary.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	var epoch *EpochNotMatchError
	var refused *RefusedError
	switch {
	case errors.Is(err, ErrNoRange):
		return status.Error(codes.OutOfRange, err.Error())
	case errors.Is(err, ErrUnknownRange), errors.Is(err, kvstore.ErrRangeNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrUnknownStore):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrBadRequest):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.As(err, &refused):
		return refusedStatus(err, &kvpb.CommandResult{Status: refused.Status, Message: refused.Message})
	case errors.As(err, &epoch):
		return refusedStatus(err, &kvpb.CommandResult{Status: kvpb.Status_STATUS_EPOCH_NOT_MATCH, Message: epoch.Message, Range: epoch.Current})
	case errors.Is(err, kvstore.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, ErrUnavailable), errors.Is(err, kvstore.ErrNotReady):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// refusedStatus is a FailedPrecondition status that carries the refusal
// (its kvpb.Status, and for a stale version the current descriptor) as a
// detail, for FromStatus to rebuild the typed error on the other side.
func refusedStatus(err error, detail *kvpb.CommandResult) error {
	st := status.New(codes.FailedPrecondition, err.Error())
	if withDetail, derr := st.WithDetails(detail); derr == nil {
		st = withDetail
	}
	return st.Err()
}

func checkKey(key []byte) error {
	if len(key) == 0 {
		return status.Error(codes.InvalidArgument, "key must not be empty")
	}
	if len(key) > kvstore.MaxKeySize {
		return status.Errorf(codes.InvalidArgument, "key of %d bytes exceeds the limit of %d", len(key), kvstore.MaxKeySize)
	}
	return nil
}

// MaxRequestIDLen bounds a client's request ID: it is part of the key of
// the dedupe record its write leaves (kvstore), which a megabyte of ID made
// a megabyte key. The store refuses longer ones too; the KV service refuses
// them before routing.
const MaxRequestIDLen = kvstore.MaxRequestIDSize

func checkRequestID(id []byte) error {
	if len(id) > MaxRequestIDLen {
		return status.Errorf(codes.InvalidArgument, "request ID of %d bytes exceeds the limit of %d", len(id), MaxRequestIDLen)
	}
	return nil
}

type kvServer struct {
	rangespb.UnimplementedKVServer
	n *Node
}

const ksKV = kvpb.Keyspace_KEYSPACE_KV

func (s *kvServer) Get(ctx context.Context, req *rangespb.GetRequest) (*rangespb.GetResponse, error) {
	if err := checkKey(req.Key); err != nil {
		return nil, err
	}
	if bugzoo.StaleRead {
		// The bug zoo's fault: answer from this store's own replica, with no
		// ReadIndex, whatever it has applied.
		if route := s.n.table.Lookup(ksKV, req.Key); route != nil {
			q := &kvpb.Query{Ver: route.Desc.Ver, Ops: []*kvpb.Op{{Op: &kvpb.Op_Get{Get: &kvpb.GetOp{Key: req.Key}}}}}
			if res, err := s.n.store.Read(ctx, route.Desc.Id, q, true); err == nil && res.Status == kvpb.Status_STATUS_OK {
				return &rangespb.GetResponse{Found: res.Results[0].Found, Value: res.Results[0].Value}, nil
			}
		}
	}
	res, err := s.n.router.Read(ctx, ksKV, req.Key, req.Stale, &kvpb.Op{Op: &kvpb.Op_Get{Get: &kvpb.GetOp{Key: req.Key}}})
	if err != nil {
		return nil, ToStatus(err)
	}
	r := res.Results[0]
	return &rangespb.GetResponse{Found: r.Found, Value: r.Value}, nil
}

func (s *kvServer) Put(ctx context.Context, req *rangespb.PutRequest) (*rangespb.PutResponse, error) {
	if err := checkKey(req.Key); err != nil {
		return nil, err
	}
	if len(req.Value) > kvstore.MaxValueSize {
		return nil, status.Errorf(codes.InvalidArgument, "value of %d bytes exceeds the limit of %d", len(req.Value), kvstore.MaxValueSize)
	}
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	_, err := s.n.router.Write(ctx, ksKV, req.Key, req.RequestId, &kvpb.Op{Op: &kvpb.Op_Put{Put: &kvpb.PutOp{Key: req.Key, Value: req.Value}}})
	if err != nil {
		return nil, ToStatus(err)
	}
	return &rangespb.PutResponse{}, nil
}

func (s *kvServer) Delete(ctx context.Context, req *rangespb.DeleteRequest) (*rangespb.DeleteResponse, error) {
	if err := checkKey(req.Key); err != nil {
		return nil, err
	}
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	_, err := s.n.router.Write(ctx, ksKV, req.Key, req.RequestId, &kvpb.Op{Op: &kvpb.Op_Delete{Delete: &kvpb.DeleteOp{Key: req.Key}}})
	if err != nil {
		return nil, ToStatus(err)
	}
	return &rangespb.DeleteResponse{}, nil
}

func (s *kvServer) CompareAndSwap(ctx context.Context, req *rangespb.CompareAndSwapRequest) (*rangespb.CompareAndSwapResponse, error) {
	if err := checkKey(req.Key); err != nil {
		return nil, err
	}
	if len(req.NewValue) > kvstore.MaxValueSize {
		return nil, status.Errorf(codes.InvalidArgument, "value of %d bytes exceeds the limit of %d", len(req.NewValue), kvstore.MaxValueSize)
	}
	if err := checkRequestID(req.RequestId); err != nil {
		return nil, err
	}
	res, err := s.n.router.Write(ctx, ksKV, req.Key, req.RequestId, &kvpb.Op{Op: &kvpb.Op_Cas{Cas: &kvpb.CasOp{
		Key: req.Key, Expected: req.Expected, ExpectAbsent: req.ExpectAbsent, NewValue: req.NewValue, Delete: req.Delete,
	}}})
	if err != nil {
		return nil, ToStatus(err)
	}
	r := res.Results[0]
	return &rangespb.CompareAndSwapResponse{Succeeded: r.CasOk, Found: r.Found, Current: r.Value}, nil
}

// Scan walks the ranges from start, range by range, until it has limit pairs
// or reaches end.
func (s *kvServer) Scan(ctx context.Context, req *rangespb.ScanRequest) (*rangespb.ScanResponse, error) {
	limit := int(req.Limit)
	if limit <= 0 || limit > kvstore.MaxScanLimit {
		limit = kvstore.MaxScanLimit
	}
	if len(req.End) > 0 && bytes.Compare(req.Start, req.End) >= 0 {
		return &rangespb.ScanResponse{}, nil
	}
	out := &rangespb.ScanResponse{}
	cursor := req.Start
	size := 0
	for {
		// The first range's page holds one pair at least, whatever its size;
		// the next ones only what fits in the rest of MaxScanBytes.
		op := &kvpb.Op{Op: &kvpb.Op_Scan{Scan: &kvpb.ScanOp{Start: cursor, End: req.End, Limit: uint32(limit - len(out.Pairs)), MaxBytes: uint32(max(kvstore.MaxScanBytes-size, 0))}}}
		if len(out.Pairs) == 0 {
			op.GetScan().MaxBytes = 0
		}
		res, err := s.n.router.Read(ctx, ksKV, cursor, req.Stale, op)
		if err != nil {
			return nil, ToStatus(err)
		}
		r := res.Results[0]
		out.Pairs = append(out.Pairs, r.Pairs...)
		if !r.More {
			return out, nil
		}
		for _, p := range r.Pairs {
			size += len(p.Key) + len(p.Value)
		}
		// A response stays under the gRPC message limit: a page of a few
		// ranges' worth of large values ends at MaxScanBytes.
		// (A bounded page that came back empty: its next pair did not fit.)
		full := size >= kvstore.MaxScanBytes || op.GetScan().MaxBytes > 0 && len(r.Pairs) == 0
		if len(out.Pairs) >= limit || full || (len(req.End) > 0 && bytes.Compare(r.NextKey, req.End) >= 0) {
			out.More = len(req.End) == 0 || bytes.Compare(r.NextKey, req.End) < 0
			if out.More {
				out.NextKey = r.NextKey
			}
			return out, nil
		}
		cursor = r.NextKey
	}
}

type storeServer struct {
	rangespb.UnimplementedStoreServer
	n *Node
}

func (s *storeServer) Execute(ctx context.Context, req *rangespb.ExecuteRequest) (*rangespb.ExecuteResponse, error) {
	resp, err := s.n.executeLocal(ctx, req)
	return resp, ToStatus(err)
}

func (s *storeServer) StartReplica(ctx context.Context, req *rangespb.StartReplicaRequest) (*rangespb.StartReplicaResponse, error) {
	if req.Boot == nil {
		return nil, status.Error(codes.InvalidArgument, "missing boot record")
	}
	if err := s.n.store.StartReplica(req.Boot, req.Range); err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return &rangespb.StartReplicaResponse{}, nil
}

func (s *storeServer) DestroyReplica(ctx context.Context, req *rangespb.DestroyReplicaRequest) (*rangespb.DestroyReplicaResponse, error) {
	if err := s.n.checkDestroy(ctx, req.RangeId, req.ReplicaId); err != nil {
		return nil, ToStatus(err)
	}
	if err := s.n.store.DestroyReplica(ctx, req.RangeId, req.ReplicaId); err != nil {
		return nil, ToStatus(err)
	}
	return &rangespb.DestroyReplicaResponse{}, nil
}

func (s *storeServer) LocalRanges(ctx context.Context, _ *rangespb.LocalRangesRequest) (*rangespb.LocalRangesResponse, error) {
	return &rangespb.LocalRangesResponse{Ranges: s.n.localRanges()}, nil
}

type adminServer struct {
	rangespb.UnimplementedAdminServer
	n *Node
}

func (s *adminServer) Cluster(ctx context.Context, _ *rangespb.ClusterRequest) (*rangespb.ClusterResponse, error) {
	out := &rangespb.ClusterResponse{}
	for _, m := range s.n.members.Members() {
		out.Members = append(out.Members, &rangespb.Member{
			Name: m.Name, StoreId: m.Meta.StoreID, Role: m.Meta.Role, GossipAddr: m.GossipAddr,
			GrpcAddr: m.Meta.GRPC, RaftAddr: m.Meta.Raft, State: m.State,
		})
	}
	return out, nil
}

func (s *adminServer) Ranges(ctx context.Context, _ *rangespb.RangesRequest) (*rangespb.RangesResponse, error) {
	_ = s.n.Refresh(ctx)
	out := &rangespb.RangesResponse{}
	for _, r := range s.n.table.All() {
		out.Ranges = append(out.Ranges, &rangespb.RangeInfo{
			Range: r.Desc, LeaderReplicaId: r.LeaderID, LeaderTerm: r.LeaderTerm, ApproximateBytes: r.Bytes,
		})
	}
	return out, nil
}

func (s *adminServer) AddReplica(ctx context.Context, req *rangespb.AddReplicaRequest) (*rangespb.ChangeReplicasResponse, error) {
	if !s.n.holds(req.RangeId) {
		return s.forward(ctx, req.RangeId, func(c rangespb.AdminClient) (*rangespb.ChangeReplicasResponse, error) {
			return c.AddReplica(ctx, req)
		})
	}
	d, err := s.n.AddReplica(ctx, req.RangeId, req.StoreId)
	if err != nil {
		return nil, ToStatus(err)
	}
	return &rangespb.ChangeReplicasResponse{Range: d}, nil
}

func (s *adminServer) RemoveReplica(ctx context.Context, req *rangespb.RemoveReplicaRequest) (*rangespb.ChangeReplicasResponse, error) {
	if !s.n.holds(req.RangeId) {
		return s.forward(ctx, req.RangeId, func(c rangespb.AdminClient) (*rangespb.ChangeReplicasResponse, error) {
			return c.RemoveReplica(ctx, req)
		})
	}
	d, err := s.n.RemoveReplica(ctx, req.RangeId, req.StoreId)
	if err != nil {
		return nil, ToStatus(err)
	}
	return &rangespb.ChangeReplicasResponse{Range: d}, nil
}

func (s *adminServer) TransferLeader(ctx context.Context, req *rangespb.TransferLeaderRequest) (*rangespb.TransferLeaderResponse, error) {
	if !s.n.holds(req.RangeId) {
		_, err := s.forward(ctx, req.RangeId, func(c rangespb.AdminClient) (*rangespb.ChangeReplicasResponse, error) {
			_, err := c.TransferLeader(ctx, req)
			return nil, err
		})
		if err != nil {
			return nil, err
		}
		return &rangespb.TransferLeaderResponse{}, nil
	}
	if err := s.n.TransferLeader(ctx, req.RangeId, req.StoreId); err != nil {
		return nil, ToStatus(err)
	}
	return &rangespb.TransferLeaderResponse{}, nil
}

// forward sends an admin call to a store that holds a replica of the range,
// the leader's first.
func (s *adminServer) forward(ctx context.Context, rangeID uint64, call func(rangespb.AdminClient) (*rangespb.ChangeReplicasResponse, error)) (*rangespb.ChangeReplicasResponse, error) {
	route := s.n.table.Get(rangeID)
	if route == nil {
		_ = s.n.Refresh(ctx)
		if route = s.n.table.Get(rangeID); route == nil {
			return nil, status.Errorf(codes.NotFound, "range %d: %v", rangeID, ErrUnknownRange)
		}
	}
	var lastErr error
	stores := []uint64{route.LeaderStore()}
	for _, r := range route.Desc.Replicas {
		stores = append(stores, r.StoreId)
	}
	for _, id := range stores {
		if id == 0 || id == s.n.store.ID() {
			continue
		}
		c, err := s.n.adminClient(id)
		if err != nil {
			lastErr = err
			continue
		}
		resp, err := call(c)
		if err == nil || status.Code(err) != codes.Unavailable {
			return resp, err
		}
		lastErr = err
	}
	return nil, status.Error(codes.Unavailable, fmt.Sprintf("no replica of range %d answered: %v", rangeID, lastErr))
}

func (s *storeServer) ReplicaDescriptor(ctx context.Context, req *rangespb.ReplicaDescriptorRequest) (*rangespb.ReplicaDescriptorResponse, error) {
	if req.Compact {
		d, err := s.n.store.CompactForAdd(ctx, req.RangeId)
		if err != nil {
			return nil, ToStatus(err)
		}
		return &rangespb.ReplicaDescriptorResponse{Range: d, LogCompacted: true}, nil
	}
	d, err := s.n.store.Descriptor(req.RangeId)
	if err != nil {
		return nil, ToStatus(err)
	}
	if d == nil {
		return nil, status.Errorf(codes.Unavailable, "range %d has no descriptor yet", req.RangeId)
	}
	applied, _ := s.n.store.Applied(req.RangeId)
	return &rangespb.ReplicaDescriptorResponse{Range: d, LogCompacted: s.n.store.LogCompacted(req.RangeId), Applied: applied}, nil
}

func (s *adminServer) Split(ctx context.Context, req *rangespb.SplitRequest) (*rangespb.SplitResponse, error) {
	if len(req.Key) == 0 {
		return nil, status.Error(codes.InvalidArgument, "split needs a key")
	}
	rangeID := req.RangeId
	if rangeID == 0 {
		ks, err := ParseKeyspace(req.Keyspace)
		if err != nil {
			return nil, ToStatus(err)
		}
		_ = s.n.Refresh(ctx)
		route := s.n.table.Lookup(ks, req.Key)
		if route == nil {
			return nil, ToStatus(fmt.Errorf("%w: keyspace %s", ErrNoRange, req.Keyspace))
		}
		rangeID = route.Desc.Id
	}
	left, right, err := s.n.Split(ctx, rangeID, req.Key)
	if err != nil {
		return nil, ToStatus(err)
	}
	return &rangespb.SplitResponse{Left: left, Right: right}, nil
}

func (s *adminServer) Merge(ctx context.Context, req *rangespb.MergeRequest) (*rangespb.MergeResponse, error) {
	d, err := s.n.Merge(ctx, req.RangeId)
	if err != nil {
		return nil, ToStatus(err)
	}
	return &rangespb.MergeResponse{Range: d}, nil
}
