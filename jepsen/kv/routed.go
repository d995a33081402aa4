package kv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bifrost-mq/bifrost/jepsen/cluster"
	"github.com/bifrost-mq/bifrost/jepsen/history"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// kvAPI is how a worker's client reads and writes single keys.
type kvAPI interface {
	get(ctx context.Context, key []byte) (value []byte, found bool, err error)
	put(ctx context.Context, key, value []byte) error
	// cas writes value where key holds from; it reports whether it wrote
	// and, if not, what it found.
	cas(ctx context.Context, key, from, value []byte) (ok bool, cur []byte, found bool, err error)
}

// storeAPI sends every operation to one store's KV service, which routes
// it with the store's own table (kept fresh by gossip).
type storeAPI struct{ cl *ranges.Client }

func (s storeAPI) get(ctx context.Context, key []byte) ([]byte, bool, error) {
	return s.cl.Get(ctx, key)
}

func (s storeAPI) put(ctx context.Context, key, value []byte) error { return s.cl.Put(ctx, key, value) }

func (s storeAPI) cas(ctx context.Context, key, from, value []byte) (bool, []byte, bool, error) {
	ok, cur, err := s.cl.CompareAndSwap(ctx, key, from, value)
	return ok, cur, cur != nil, err
}

// routedAPI routes by itself, as a client library with a route cache does:
// a ranges.Router whose table is filled from the stores' own LocalRanges
// when it is made, and afterwards only when the router asks (a key with no
// route, a store that no longer has the range, a stale-epoch refusal that
// does not say where the key went). It never hears gossip, so after a
// split, merge or move it sends commands by a stale descriptor until a
// store refuses one: the apply-time epoch check is all that keeps such a
// command out of a range that no longer holds its key (bugzoo_skip_version
// removes that check), and the router's retries are what make the stale
// route harmless.
type routedAPI struct {
	c      *cluster.Cluster
	router *ranges.Router

	mu          sync.Mutex
	conns       map[uint64]*ranges.Client // by store ID
	addrs       map[uint64]string
	lastRefresh time.Time
	record      func(history.Op) // set by Observe; nil: none
}

func newRoutedAPI(ctx context.Context, c *cluster.Cluster) (*routedAPI, error) {
	a := &routedAPI{c: c, conns: map[uint64]*ranges.Client{}, addrs: map[uint64]string{}}
	a.router = ranges.NewRouter(ranges.RouterConfig{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		// Short attempts: the harness's operation timeout is a few seconds.
		AttemptTimeout: time.Second,
	}, ranges.NewTable(), a, a)
	if err := a.learnStores(ctx); err != nil {
		return nil, err
	}
	if err := a.Refresh(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// learnStores maps store IDs to the harness's nodes, from the member list
// of a store that answers.
func (a *routedAPI) learnStores(ctx context.Context) error {
	var last error
	for _, n := range a.c.Stores() {
		if !n.Running() || n.Paused() {
			continue
		}
		cl, err := ranges.Dial(n.GRPCAddr())
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := cl.Admin.Cluster(cctx, &rangespb.ClusterRequest{})
		cancel()
		cl.Close()
		if err != nil {
			last = ranges.FromStatus(err)
			continue
		}
		a.mu.Lock()
		for _, m := range resp.Members {
			if m.StoreId != 0 {
				if node := a.c.Node(m.Name); node != nil {
					a.addrs[m.StoreId] = node.GRPCAddr()
				}
			}
		}
		n := len(a.addrs)
		a.mu.Unlock()
		if n > 0 {
			return nil
		}
	}
	return fmt.Errorf("routed client: no store listed the cluster's members: %v", last)
}

// store returns the client of a store's services, dialled once.
func (a *routedAPI) store(storeID uint64) (rangespb.StoreClient, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	cl := a.conns[storeID]
	if cl == nil {
		addr, ok := a.addrs[storeID]
		if !ok {
			return nil, fmt.Errorf("%w: store %d", ranges.ErrUnknownStore, storeID)
		}
		var err error
		if cl, err = ranges.Dial(addr); err != nil {
			return nil, err
		}
		a.conns[storeID] = cl
	}
	return rangespb.NewStoreClient(cl.Conn()), nil
}

// setRecord sets (or, with nil, clears) where stale-route events go.
func (a *routedAPI) setRecord(record func(history.Op)) {
	a.mu.Lock()
	a.record = record
	a.mu.Unlock()
}

// Execute is the router's transport: the store's Store service.
func (a *routedAPI) Execute(ctx context.Context, storeID uint64, req *rangespb.ExecuteRequest) (*rangespb.ExecuteResponse, error) {
	sc, err := a.store(storeID)
	if err != nil {
		return nil, err
	}
	resp, err := sc.Execute(ctx, req)
	switch {
	case status.Code(err) == codes.NotFound:
		// The store holds no replica of the range any more: the route's
		// replica list is stale (a move, or a merge took the range).
		a.staleRoute(req, notHere)
	case err == nil:
		if st := resp.GetResult().GetStatus(); st == kvpb.Status_STATUS_EPOCH_NOT_MATCH || st == kvpb.Status_STATUS_KEY_NOT_IN_RANGE {
			a.staleRoute(req, st.String())
		}
	}
	return resp, err
}

// notHere is the status of a stale-route event for a store that no longer
// holds the range.
const notHere = "NOT_HERE"

// staleRoute records, as an event in the history, a store's refusal of a
// command or query this client routed by a stale descriptor: a status
// (STATUS_EPOCH_NOT_MATCH, STATUS_KEY_NOT_IN_RANGE) or notHere.
func (a *routedAPI) staleRoute(req *rangespb.ExecuteRequest, st string) {
	a.mu.Lock()
	record := a.record
	a.mu.Unlock()
	if record == nil {
		return
	}
	var key []byte
	var ops []*kvpb.Op
	if cmd := req.GetCommand(); cmd != nil {
		ops = cmd.GetWrite().GetOps()
	} else {
		ops = req.GetQuery().GetOps()
	}
	if len(ops) > 0 {
		key, _ = kvstore.OpKey(ops[0])
	}
	record(history.Op{F: FStaleRoute, Key: string(key), Value: mustJSON(StaleRoute{Range: req.RangeId, Status: st})})
}

// Refresh is the router's refresher: every store that answers within a
// second tells the ranges it holds; calls within 100ms of the last do
// nothing.
func (a *routedAPI) Refresh(ctx context.Context) error {
	a.mu.Lock()
	if time.Since(a.lastRefresh) < 100*time.Millisecond {
		a.mu.Unlock()
		return nil
	}
	a.lastRefresh = time.Now()
	ids := make([]uint64, 0, len(a.addrs))
	for id := range a.addrs {
		ids = append(ids, id)
	}
	a.mu.Unlock()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc, err := a.store(id)
			if err != nil {
				return
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			resp, err := sc.LocalRanges(cctx, &rangespb.LocalRangesRequest{})
			if err != nil {
				return
			}
			for _, info := range resp.Ranges {
				a.router.Table().Update(info)
			}
		}()
	}
	wg.Wait()
	return nil
}

func (a *routedAPI) get(ctx context.Context, key []byte) ([]byte, bool, error) {
	res, err := a.router.Read(ctx, ksKV, key, false, &kvpb.Op{Op: &kvpb.Op_Get{Get: &kvpb.GetOp{Key: key}}})
	if err != nil {
		return nil, false, err
	}
	r := res.Results[0]
	return r.Value, r.Found, nil
}

func (a *routedAPI) put(ctx context.Context, key, value []byte) error {
	_, err := a.router.Write(ctx, ksKV, key, ranges.NewRequestID(), &kvpb.Op{Op: &kvpb.Op_Put{Put: &kvpb.PutOp{Key: key, Value: value}}})
	return err
}

func (a *routedAPI) cas(ctx context.Context, key, from, value []byte) (bool, []byte, bool, error) {
	res, err := a.router.Write(ctx, ksKV, key, ranges.NewRequestID(), &kvpb.Op{Op: &kvpb.Op_Cas{Cas: &kvpb.CasOp{
		Key: key, Expected: from, ExpectAbsent: from == nil, NewValue: value,
	}}})
	if err != nil {
		return false, nil, false, err
	}
	r := res.Results[0]
	return r.CasOk, r.Value, r.Found, nil
}

func (a *routedAPI) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, cl := range a.conns {
		cl.Close()
	}
	a.conns = map[uint64]*ranges.Client{}
}

// ksKV is the keyspace of the kv workloads.
const ksKV = kvpb.Keyspace_KEYSPACE_KV

// scan returns every key in [start, end), range by range, each read
// linearizably through the router.
func (a *routedAPI) scan(ctx context.Context, start, end []byte) ([]string, error) {
	var keys []string
	for {
		op := &kvpb.Op{Op: &kvpb.Op_Scan{Scan: &kvpb.ScanOp{Start: start, End: end, Limit: 1000}}}
		res, err := a.router.Read(ctx, kvpb.Keyspace_KEYSPACE_KV, start, false, op)
		if err != nil {
			return nil, err
		}
		if len(res.Results) != 1 {
			return nil, fmt.Errorf("scan: %d results for one op", len(res.Results))
		}
		r := res.Results[0]
		for _, p := range r.Pairs {
			keys = append(keys, string(p.Key))
		}
		if !r.More || bytes.Compare(r.NextKey, end) >= 0 {
			return keys, nil
		}
		start = r.NextKey
	}
}
