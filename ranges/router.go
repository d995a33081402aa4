package ranges

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// Transport runs an ExecuteRequest on one store.
type Transport interface {
	Execute(ctx context.Context, storeID uint64, req *rangespb.ExecuteRequest) (*rangespb.ExecuteResponse, error)
}

// Refresher asks the cluster for fresh descriptors when the table has none
// for a key.
type Refresher interface {
	Refresh(ctx context.Context) error
}

// RouterConfig configures a Router.
type RouterConfig struct {
	// Timeout bounds one call when its context has no deadline. Default 10s.
	Timeout time.Duration
	// AttemptTimeout bounds one attempt at one store. Default 2s: a request
	// forwarded to a leader that died is dropped silently, so an attempt must
	// end soon enough to try another replica.
	AttemptTimeout time.Duration
	// HedgeAfter: an attempt unanswered this long is sent again to another
	// replica of the range, and again every HedgeAfter, in turn, until
	// AttemptTimeout; the first success wins (execute: a refusal waits for
	// the other sends). A leader that stopped (paused,
	// its host gone) then costs the time to elect another, not the attempt
	// timeout: a follower that knows the new leader forwards to it. The
	// request ID makes a write that applies twice apply once. Default
	// 500ms; negative: no hedging.
	HedgeAfter time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts. Defaults 10ms and 500ms.
	MinBackoff, MaxBackoff time.Duration
	// LocalStore is the store in the router's own process (0: none, a
	// gateway). A keyed linearizable read or write (Read, Write) and any
	// linearizable query of a range with a replica there go to that replica
	// first (a stale read still goes to the leader first), to
	// spare the forward of the request to the leader's store over gRPC:
	//   - Dragonboat's ReadIndex on a follower asks the leader for its commit
	//     index (one Raft message each way, batched with the other reads) and
	//     reads once the local replica has applied that far: as linearizable
	//     as a read on the leader.
	//   - A proposal on a follower is forwarded to the leader in a Raft
	//     message, and answered once the local replica has applied the
	//     committed entry: acknowledged, as on the leader, only after a
	//     quorum fsynced it. A forward the leader drops (no leader, a full
	//     queue) is sent again to another replica after HedgeAfter, with the
	//     same request ID, which the range deduplicates.
	// Admin proposals (ProposeTo) and WriteBatch still go to the leader first.
	LocalStore uint64
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

func (c RouterConfig) withDefaults() RouterConfig {
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.AttemptTimeout == 0 {
		c.AttemptTimeout = 2 * time.Second
	}
	if c.HedgeAfter == 0 {
		c.HedgeAfter = 500 * time.Millisecond
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 10 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 500 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Router sends commands and queries to the range that holds their key.
type Router struct {
	cfg       RouterConfig
	table     *Table
	transport Transport
	refresher Refresher
	retries   *prometheus.CounterVec
}

// NewRouter returns a router over a table and a transport. refresher may be nil.
func NewRouter(cfg RouterConfig, table *Table, transport Transport, refresher Refresher) *Router {
	cfg = cfg.withDefaults()
	r := &Router{cfg: cfg, table: table, transport: transport, refresher: refresher,
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bifrost_router_retries_total",
			Help: "Router retries by reason.",
		}, []string{"reason"})}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(r.retries)
	}
	return r
}

// Table returns the router's routing table.
func (r *Router) Table() *Table { return r.table }

// NewRequestID returns a random ID that makes a write apply once.
func NewRequestID() []byte {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return b
}

// Write proposes ops (all keys in one range) through the range holding key.
// The request ID makes retries safe; give nil to have one made.
func (r *Router) Write(ctx context.Context, ks kvpb.Keyspace, key []byte, requestID []byte, ops ...*kvpb.Op) (*kvpb.CommandResult, error) {
	if requestID == nil {
		requestID = NewRequestID()
	}
	return r.do(ctx, ks, key, func(d *kvpb.RangeDescriptor) *rangespb.ExecuteRequest {
		return &rangespb.ExecuteRequest{RangeId: d.Id, Request: &rangespb.ExecuteRequest_Command{
			Command: &kvpb.Command{RequestId: requestID, Ver: d.Ver,
				Payload: &kvpb.Command_Write{Write: &kvpb.WriteBatch{Ops: ops}}},
		}}
	})
}

// Read runs a query on the range holding key: linearizable unless stale.
func (r *Router) Read(ctx context.Context, ks kvpb.Keyspace, key []byte, stale bool, ops ...*kvpb.Op) (*kvpb.CommandResult, error) {
	return r.do(ctx, ks, key, func(d *kvpb.RangeDescriptor) *rangespb.ExecuteRequest {
		return &rangespb.ExecuteRequest{RangeId: d.Id, Stale: stale, Request: &rangespb.ExecuteRequest_Query{
			Query: &kvpb.Query{Ver: d.Ver, Ops: ops},
		}}
	})
}

// ProposeTo proposes a command to a range by ID (admin commands that are not
// routed by key). The command's Ver is left as given; a version mismatch is
// returned as an *EpochNotMatchError, not retried.
func (r *Router) ProposeTo(ctx context.Context, rangeID uint64, cmd *kvpb.Command) (*kvpb.CommandResult, error) {
	return r.executeOn(ctx, rangeID, &rangespb.ExecuteRequest{RangeId: rangeID, Request: &rangespb.ExecuteRequest_Command{Command: cmd}})
}

// Descriptor reads a range's descriptor by ID, linearizably.
func (r *Router) Descriptor(ctx context.Context, rangeID uint64) (*kvpb.RangeDescriptor, error) {
	res, err := r.executeOn(ctx, rangeID, &rangespb.ExecuteRequest{RangeId: rangeID,
		Request: &rangespb.ExecuteRequest_Query{Query: &kvpb.Query{DescriptorOnly: true}}})
	if err != nil {
		return nil, err
	}
	r.table.Update(&rangespb.RangeInfo{Range: res.Range})
	return res.Range, nil
}

func (r *Router) executeOn(ctx context.Context, rangeID uint64, req *rangespb.ExecuteRequest) (*kvpb.CommandResult, error) {
	route := r.table.Get(rangeID)
	if route == nil && r.refresher != nil {
		_ = r.refresher.Refresh(ctx)
		route = r.table.Get(rangeID)
	}
	if route == nil {
		return nil, fmt.Errorf("range %d: %w", rangeID, ErrUnknownRange)
	}
	ctx, cancel := r.withTimeout(ctx)
	defer cancel()
	return r.attemptAll(ctx, func() (*Route, *rangespb.ExecuteRequest) {
		if rt := r.table.Get(rangeID); rt != nil {
			route = rt
		}
		return route, req
	}, false)
}

func (r *Router) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, r.cfg.Timeout)
}

func (r *Router) do(ctx context.Context, ks kvpb.Keyspace, key []byte, build func(*kvpb.RangeDescriptor) *rangespb.ExecuteRequest) (*kvpb.CommandResult, error) {
	ctx, cancel := r.withTimeout(ctx)
	defer cancel()
	return r.attemptAll(ctx, func() (*Route, *rangespb.ExecuteRequest) {
		route := r.table.Lookup(ks, key)
		if route == nil {
			return nil, nil
		}
		return route, build(route.Desc)
	}, true)
}

// attemptAll retries until the command gets a definite answer or ctx ends.
// next returns the route and request of the next attempt (nil: no route).
func (r *Router) attemptAll(ctx context.Context, next func() (*Route, *rangespb.ExecuteRequest), keyed bool) (*kvpb.CommandResult, error) {
	backoff := r.cfg.MinBackoff
	var lastErr error
	tried := map[uint64]bool{}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				if lastErr == nil {
					lastErr = ctx.Err()
				}
				if errors.Is(lastErr, ErrNoRange) || isDefinite(lastErr) {
					return nil, lastErr
				}
				return nil, fmt.Errorf("%w: %v", ErrUnavailable, lastErr)
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, r.cfg.MaxBackoff)
		}
		route, req := next()
		if route == nil {
			lastErr = ErrNoRange
			r.retries.WithLabelValues("no_route").Inc()
			if r.refresher != nil {
				_ = r.refresher.Refresh(ctx)
			}
			continue
		}
		prefer := uint64(0)
		if (isLinearizableRead(req) || keyed) && !req.Stale {
			// A stale read stays with the leader first: its caller
			// (the inbox's fetch) wants the leader's applied state,
			// not a follower's, which may be behind.
			prefer = r.cfg.LocalStore
		}
		storeID := pickStore(route, tried, prefer)
		if storeID == 0 {
			lastErr = fmt.Errorf("range %d has no replicas", route.Desc.Id)
			continue
		}
		storeID, resp, err := r.execute(ctx, route, storeID, req)
		if err != nil {
			lastErr = err
			reason := "store_error"
			if isTimeout(err) {
				reason = "timeout"
			} else if isNotHere(err) {
				// The store has no replica any more (removed, or merged away):
				// the table is stale.
				reason = "not_here"
				if r.refresher != nil {
					_ = r.refresher.Refresh(ctx)
				}
			}
			// Let another replica answer next; the request ID makes a retry
			// of a write that did apply harmless.
			tried[storeID] = true
			r.retries.WithLabelValues(reason).Inc()
			continue
		}
		r.table.SetLeader(route.Desc.Id, resp.LeaderReplicaId, resp.LeaderTerm)
		res := resp.Result
		switch res.Status {
		case kvpb.Status_STATUS_OK:
			return res, nil
		case kvpb.Status_STATUS_EPOCH_NOT_MATCH, kvpb.Status_STATUS_KEY_NOT_IN_RANGE:
			r.retries.WithLabelValues("epoch").Inc()
			if res.Range != nil {
				r.table.Update(&rangespb.RangeInfo{Range: res.Range})
			}
			lastErr = &EpochNotMatchError{Current: res.Range, Message: res.Message}
			if !keyed {
				return nil, lastErr
			}
			// The reply names only the refusing range. Where the key went (a
			// split child, a merged left neighbour) comes from the others.
			if r.refresher != nil && (res.Range == nil || res.Range.State != kvpb.RangeState_RANGE_STATE_NORMAL ||
				!kvstore.ContainsKey(res.Range, keyOf(req))) {
				_ = r.refresher.Refresh(ctx)
			}
			if res.Range == nil || res.Range.State == kvpb.RangeState_RANGE_STATE_NORMAL {
				backoff = r.cfg.MinBackoff
			}
			continue
		case kvpb.Status_STATUS_RANGE_NOT_READY:
			r.retries.WithLabelValues("not_ready").Inc()
			lastErr = fmt.Errorf("range %d: %w", route.Desc.Id, kvstore.ErrNotReady)
			continue
		case kvpb.Status_STATUS_BAD_REQUEST:
			return nil, fmt.Errorf("%w: %s", ErrBadRequest, res.Message)
		default:
			return nil, &RefusedError{Status: res.Status, Message: res.Message}
		}
	}
}

// maxHedged bounds the sends of one attempt.
const maxHedged = 8

type sent struct {
	store uint64
	resp  *rangespb.ExecuteResponse
	err   error
}

// execute makes one attempt: req goes to the store first and, while no
// answer came, to the range's other replicas in turn every HedgeAfter, until
// AttemptTimeout. Sent once, it returns the answer or failure and the store.
// Sent more than once, only a success answers at once: a refusal (a stale
// epoch, a range not ready) speaks for its own send, while another may have
// applied the command. So it waits for the rest: if one failed (its outcome
// unknown), that failure is returned, and the caller resends the command
// unchanged, as after any failure; if all were refused, the last refusal.
func (r *Router) execute(ctx context.Context, route *Route, first uint64, req *rangespb.ExecuteRequest) (uint64, *rangespb.ExecuteResponse, error) {
	actx, cancel := context.WithTimeout(ctx, r.cfg.AttemptTimeout)
	defer cancel()
	var others []uint64
	for _, rep := range route.Desc.Replicas {
		if rep.StoreId != first && !slices.Contains(others, rep.StoreId) {
			others = append(others, rep.StoreId)
		}
	}
	if r.cfg.HedgeAfter <= 0 || len(others) == 0 {
		// Nothing to hedge with: the attempt runs on the caller's
		// goroutine. A goroutine per attempt started with a small
		// stack and grew it through Dragonboat and Pebble each time
		// (a fifth of the CPU of a standalone broker's connect storm).
		resp, err := r.transport.Execute(actx, first, req)
		return first, resp, err
	}
	results := make(chan sent, maxHedged)
	send := func(store uint64) {
		go func() {
			resp, err := r.transport.Execute(actx, store, req)
			results <- sent{store, resp, err}
		}()
	}
	send(first)
	pending, sends := 1, 1
	t := time.NewTicker(r.cfg.HedgeAfter)
	defer t.Stop()
	hedge := t.C
	var failed *sent
	for {
		select {
		case res := <-results:
			pending--
			if sends == 1 || (res.err == nil && res.resp.GetResult().GetStatus() == kvpb.Status_STATUS_OK) {
				return res.store, res.resp, res.err
			}
			if res.err != nil {
				failed = &res
			}
			if pending > 0 {
				continue
			}
			if failed != nil {
				return failed.store, nil, failed.err
			}
			return res.store, res.resp, nil
		case <-hedge:
			if sends == maxHedged {
				hedge = nil
				continue
			}
			r.retries.WithLabelValues("hedge").Inc()
			send(others[(sends-1)%len(others)])
			pending++
			sends++
		}
	}
}

func isDefinite(err error) bool {
	var re *RefusedError
	return errors.As(err, &re) || errors.Is(err, ErrBadRequest)
}

// pickStore prefers the store prefer (0: none) if it holds a replica, then
// the leader's store, then replicas not yet tried; when every replica was
// tried it starts over.
func pickStore(route *Route, tried map[uint64]bool, prefer uint64) uint64 {
	if prefer != 0 && !tried[prefer] {
		for _, rep := range route.Desc.Replicas {
			if rep.StoreId == prefer {
				return prefer
			}
		}
	}
	if s := route.LeaderStore(); s != 0 && !tried[s] {
		return s
	}
	for _, rep := range route.Desc.Replicas {
		if !tried[rep.StoreId] {
			return rep.StoreId
		}
	}
	clear(tried)
	if s := route.LeaderStore(); s != 0 {
		return s
	}
	if len(route.Desc.Replicas) > 0 {
		return route.Desc.Replicas[0].StoreId
	}
	return 0
}

func isTimeout(err error) bool {
	return errors.Is(err, kvstore.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		status.Code(err) == codes.DeadlineExceeded
}

func isNotHere(err error) bool {
	return errors.Is(err, kvstore.ErrRangeNotFound) || status.Code(err) == codes.NotFound
}

// isLinearizableRead reports whether req is a query that must see every
// write acknowledged before it began (not a stale read).
func isLinearizableRead(req *rangespb.ExecuteRequest) bool {
	_, query := req.Request.(*rangespb.ExecuteRequest_Query)
	return query && !req.Stale
}

// keyOf returns the first key a request routes by (nil for none).
func keyOf(req *rangespb.ExecuteRequest) []byte {
	var ops []*kvpb.Op
	switch r := req.Request.(type) {
	case *rangespb.ExecuteRequest_Command:
		ops = r.Command.GetWrite().GetOps()
	case *rangespb.ExecuteRequest_Query:
		ops = r.Query.Ops
	}
	for _, op := range ops {
		if op.GetScan() != nil {
			return op.GetScan().Start
		}
		if k, _ := kvstore.OpKey(op); k != nil {
			return k
		}
	}
	return nil
}

// KeyedOp is one write of a batch: an op on a single key (not a scan) and
// the request ID that makes it apply once (nil: WriteBatch makes one and
// stores it in the caller's slice, for a retry of the batch to reuse).
type KeyedOp struct {
	Op        *kvpb.Op
	RequestID []byte
}

// batchParallelism is how many ranges a WriteBatch writes to at once.
const batchParallelism = 8

// batchUnit is the ops of a batch sent to one range as one command. Its
// request ID is its first op's: the store keeps a write's result under its
// first key and request ID, and that record follows the key through splits
// and merges. A unit whose outcome is unknown (a transport error, a
// timeout) is resent whole, unchanged, until the range holding its first
// key either answers (applied now, or the result remembered) or refuses it
// for a stale version: only then were none of its ops applied, and only
// then are they planned again with the fresher descriptors.
type batchUnit struct {
	idx       []int // indexes of the ops in the batch, in input order
	ops       []*kvpb.Op
	requestID []byte
	key       []byte // the first op's key
	ambiguous bool
}

type unitOutcome int

const (
	unitDone   unitOutcome = iota // applied: results filled in
	unitFailed                    // a definite error for its ops
	unitReplan                    // refused unapplied: plan its ops again
	unitRetry                     // try the same unit again
)

// WriteBatch applies writes on many keys, across ranges: it groups the ops
// by the range that holds their key, sends one command per range (up to 8 at
// once), and resends only the ops of ranges that refused them (a split or
// merge since the routing table was read) with fresher descriptors, until
// each op has a definite answer or ctx (or the router's Timeout) ends.
//
// The ops of one key stay in input order and in one command, so they apply
// in that order; ops on different keys are not ordered, and the batch is not
// atomic across ranges. Each op's result is at its input index. The error is
// nil if every op applied; otherwise it joins the ops' errors, and the
// results of the ops that did apply are still filled in.
//
// Retries within a call apply each op once. A caller that retries a whole
// failed batch with the same request IDs gets the remembered results where
// the ops are grouped the same way (same ranges, same order).
func (r *Router) WriteBatch(ctx context.Context, ks kvpb.Keyspace, ops []KeyedOp) ([]*kvpb.OpResult, error) {
	results := make([]*kvpb.OpResult, len(ops))
	errs := make([]error, len(ops))
	keys := make([][]byte, len(ops))
	for i, op := range ops {
		k, isScan := kvstore.OpKey(op.Op)
		if op.Op == nil || isScan || k == nil {
			return nil, fmt.Errorf("%w: batch op %d has no single key", ErrBadRequest, i)
		}
		keys[i] = k
		if op.RequestID == nil {
			ops[i].RequestID = NewRequestID()
		}
	}
	ctx, cancel := r.withTimeout(ctx)
	defer cancel()

	free := make([]int, len(ops)) // ops to plan afresh, in input order
	for i := range free {
		free[i] = i
	}
	var held []*batchUnit // units to resend unchanged
	backoff := r.cfg.MinBackoff
	var lastErr error
	tried := map[uint64]map[uint64]bool{}
	for round := 0; len(free) > 0 || len(held) > 0; round++ {
		if round > 0 {
			select {
			case <-ctx.Done():
				if lastErr == nil {
					lastErr = ctx.Err()
				}
				err := fmt.Errorf("%w: %v", ErrUnavailable, lastErr)
				if errors.Is(lastErr, ErrNoRange) {
					err = lastErr
				}
				for _, i := range free {
					errs[i] = err
				}
				for _, u := range held {
					for _, i := range u.idx {
						errs[i] = err
					}
				}
				return results, errors.Join(uniqueErrs(errs)...)
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, r.cfg.MaxBackoff)
		}
		units, unrouted := r.planBatch(ks, ops, keys, free)
		units = append(held, units...)
		free, held = unrouted, nil
		if len(unrouted) > 0 {
			lastErr = ErrNoRange
			r.retries.WithLabelValues("no_route").Inc()
			if r.refresher != nil {
				_ = r.refresher.Refresh(ctx)
			}
		}
		outcomes := make([]unitOutcome, len(units))
		unitErrs := make([]error, len(units))
		var refresh bool
		var mu sync.Mutex
		sem := make(chan struct{}, batchParallelism)
		var wg sync.WaitGroup
		for n, u := range units {
			route := r.table.Lookup(ks, u.key)
			if route == nil {
				outcomes[n], unitErrs[n] = unitRetry, ErrNoRange
				if !u.ambiguous {
					outcomes[n] = unitReplan
				}
				refresh = true
				continue
			}
			mu.Lock()
			t := tried[route.Desc.Id]
			if t == nil {
				t = map[uint64]bool{}
				tried[route.Desc.Id] = t
			}
			storeID := pickStore(route, t, 0)
			mu.Unlock()
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				out, stale, err := r.sendUnit(ctx, route, storeID, u, results)
				mu.Lock()
				defer mu.Unlock()
				outcomes[n], unitErrs[n] = out, err
				if stale {
					refresh = true
				}
				if out == unitRetry && !errors.Is(err, kvstore.ErrNotReady) {
					t[storeID] = true
				}
			}()
		}
		wg.Wait()
		if refresh && r.refresher != nil {
			_ = r.refresher.Refresh(ctx)
		}
		progress := false
		for n, u := range units {
			switch outcomes[n] {
			case unitDone:
				progress = true
			case unitFailed:
				for _, i := range u.idx {
					errs[i] = unitErrs[n]
				}
			case unitReplan:
				free = append(free, u.idx...)
				lastErr = unitErrs[n]
			case unitRetry:
				held = append(held, u)
				lastErr = unitErrs[n]
			}
		}
		slices.Sort(free)
		if progress {
			backoff = r.cfg.MinBackoff
		}
	}
	return results, errors.Join(uniqueErrs(errs)...)
}

// planBatch groups the ops at idx (in input order) by the range holding
// their key; it returns the ops no known range holds.
func (r *Router) planBatch(ks kvpb.Keyspace, ops []KeyedOp, keys [][]byte, idx []int) (units []*batchUnit, unrouted []int) {
	byRange := map[uint64]*batchUnit{}
	for _, i := range idx {
		route := r.table.Lookup(ks, keys[i])
		if route == nil {
			unrouted = append(unrouted, i)
			continue
		}
		u := byRange[route.Desc.Id]
		if u == nil {
			u = &batchUnit{requestID: ops[i].RequestID, key: keys[i]}
			byRange[route.Desc.Id] = u
			units = append(units, u)
		}
		u.idx = append(u.idx, i)
		u.ops = append(u.ops, ops[i].Op)
	}
	return units, unrouted
}

// sendUnit makes one attempt at a unit on one store. stale reports that the
// routing table needs refreshing.
func (r *Router) sendUnit(ctx context.Context, route *Route, storeID uint64, u *batchUnit, results []*kvpb.OpResult) (out unitOutcome, stale bool, err error) {
	if storeID == 0 {
		return unitRetry, true, fmt.Errorf("range %d has no replicas", route.Desc.Id)
	}
	req := &rangespb.ExecuteRequest{RangeId: route.Desc.Id, Request: &rangespb.ExecuteRequest_Command{
		Command: &kvpb.Command{RequestId: u.requestID, Ver: route.Desc.Ver,
			Payload: &kvpb.Command_Write{Write: &kvpb.WriteBatch{Ops: u.ops}}},
	}}
	_, resp, err := r.execute(ctx, route, storeID, req)
	if err != nil {
		// The command may have applied: resend it unchanged.
		u.ambiguous = true
		reason := "store_error"
		if isTimeout(err) {
			reason = "timeout"
		} else if isNotHere(err) {
			reason, stale = "not_here", true
		}
		r.retries.WithLabelValues(reason).Inc()
		return unitRetry, stale, err
	}
	r.table.SetLeader(route.Desc.Id, resp.LeaderReplicaId, resp.LeaderTerm)
	res := resp.Result
	switch res.Status {
	case kvpb.Status_STATUS_OK:
		if len(res.Results) != len(u.idx) {
			return unitFailed, false, fmt.Errorf("range %d answered %d results for %d ops", route.Desc.Id, len(res.Results), len(u.idx))
		}
		for j, i := range u.idx {
			results[i] = res.Results[j]
		}
		return unitDone, false, nil
	case kvpb.Status_STATUS_EPOCH_NOT_MATCH, kvpb.Status_STATUS_KEY_NOT_IN_RANGE:
		r.retries.WithLabelValues("epoch").Inc()
		if res.Range != nil {
			r.table.Update(&rangespb.RangeInfo{Range: res.Range})
		}
		err = &EpochNotMatchError{Current: res.Range, Message: res.Message}
		stale = res.Range == nil || res.Range.State != kvpb.RangeState_RANGE_STATE_NORMAL || !kvstore.ContainsKey(res.Range, u.key)
		// The range that holds the first key would have answered with the
		// remembered result had an earlier attempt applied: its refusal
		// says none did.
		if !u.ambiguous || (res.Range != nil && kvstore.ContainsKey(res.Range, u.key)) {
			return unitReplan, stale, err
		}
		return unitRetry, stale, err
	case kvpb.Status_STATUS_RANGE_NOT_READY:
		r.retries.WithLabelValues("not_ready").Inc()
		return unitRetry, false, fmt.Errorf("range %d: %w", route.Desc.Id, kvstore.ErrNotReady)
	case kvpb.Status_STATUS_BAD_REQUEST:
		return unitFailed, false, fmt.Errorf("%w: %s", ErrBadRequest, res.Message)
	default:
		return unitFailed, false, &RefusedError{Status: res.Status, Message: res.Message}
	}
}

func uniqueErrs(errs []error) []error {
	var out []error
	seen := map[error]bool{}
	for _, err := range errs {
		if err != nil && !seen[err] {
			seen[err] = true
			out = append(out, err)
		}
	}
	return out
}
