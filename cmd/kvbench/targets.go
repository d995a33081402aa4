package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

func newTarget(ctx context.Context, cfg *config) (target, error) {
	switch {
	case cfg.system == systemEtcd:
		return newEtcdTarget(cfg.endpoints)
	case cfg.api == apiRouter:
		return newRouterTarget(ctx, cfg.endpoints)
	}
	return newKVTarget(cfg.endpoints)
}

// etcdTarget drives etcd through its own v3 client: one client over every
// endpoint, whose gRPC balancer sends each call to the next member in turn.
// A Get with no options is linearizable.
type etcdTarget struct {
	all *clientv3.Client
	// one holds a client per endpoint, for the readiness check.
	one []*clientv3.Client
}

func newEtcdTarget(endpoints []string) (*etcdTarget, error) {
	dial := func(eps []string) (*clientv3.Client, error) {
		urls := make([]string, len(eps))
		for i, e := range eps {
			urls[i] = "http://" + e
		}
		return clientv3.New(clientv3.Config{Endpoints: urls, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	}
	t := &etcdTarget{}
	var err error
	if t.all, err = dial(endpoints); err != nil {
		return nil, err
	}
	for _, e := range endpoints {
		c, err := dial([]string{e})
		if err != nil {
			t.Close()
			return nil, err
		}
		t.one = append(t.one, c)
	}
	return t, nil
}

func (t *etcdTarget) Put(ctx context.Context, key string, value []byte) error {
	_, err := t.all.Put(ctx, key, string(value))
	return err
}

func (t *etcdTarget) Get(ctx context.Context, key string) error {
	resp, err := t.all.Get(ctx, key)
	if err == nil && len(resp.Kvs) == 0 {
		return fmt.Errorf("get %s: not found", key)
	}
	return err
}

func (t *etcdTarget) PutVia(ctx context.Context, i int, key string, value []byte) error {
	_, err := t.one[i].Put(ctx, key, string(value))
	return err
}

func (t *etcdTarget) Close() error {
	var errs []error
	if t.all != nil {
		errs = append(errs, t.all.Close())
	}
	for _, c := range t.one {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// kvTarget drives Bifrost through its public KV gRPC service, as the admin
// client does (ranges.Client), with one connection per store and each call
// sent to the next store in turn. A store routes the call with its own
// router: in-process to its own replica when it leads the key's range,
// over gRPC to the leader's store otherwise.
type kvTarget struct {
	clients []*ranges.Client
	next    atomic.Uint64
}

func newKVTarget(endpoints []string) (*kvTarget, error) {
	t := &kvTarget{}
	for _, e := range endpoints {
		c, err := ranges.Dial(e)
		if err != nil {
			t.Close()
			return nil, err
		}
		t.clients = append(t.clients, c)
	}
	return t, nil
}

func (t *kvTarget) pick() *ranges.Client {
	return t.clients[int(t.next.Add(1)%uint64(len(t.clients)))]
}

func (t *kvTarget) Put(ctx context.Context, key string, value []byte) error {
	return t.pick().Put(ctx, []byte(key), value)
}

func (t *kvTarget) Get(ctx context.Context, key string) error {
	_, found, err := t.pick().Get(ctx, []byte(key))
	if err == nil && !found {
		return fmt.Errorf("get %s: not found", key)
	}
	return err
}

func (t *kvTarget) PutVia(ctx context.Context, i int, key string, value []byte) error {
	return t.clients[i].Put(ctx, []byte(key), value)
}

func (t *kvTarget) Close() error {
	var errs []error
	for _, c := range t.clients {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

func (t *kvTarget) notes(ctx context.Context) []string { return kvRangeNotes(ctx, t.clients[0]) }

// kvRangeNotes describes the kv keyspace's ranges after a run: the balancer
// may have split the one range the cluster starts with (by load) and moved
// leaders.
func kvRangeNotes(ctx context.Context, c *ranges.Client) []string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.Admin.Ranges(ctx, &rangespb.RangesRequest{})
	if err != nil {
		return []string{"ranges: " + err.Error()}
	}
	var out []string
	leaders := map[uint64]bool{}
	for _, r := range resp.Ranges {
		if r.Range.Keyspace != kvpb.Keyspace_KEYSPACE_KV {
			continue
		}
		route := ranges.Route{Desc: r.Range, LeaderID: r.LeaderReplicaId}
		leaders[route.LeaderStore()] = true
		out = append(out, fmt.Sprintf("kv range %d [%q, %q) ver %d, leader on store %d", r.Range.Id, r.Range.Start, r.Range.End, r.Range.Ver, route.LeaderStore()))
	}
	sort.Strings(out)
	return append([]string{fmt.Sprintf("%d kv ranges after the run, led from %d stores", len(out), len(leaders))}, out...)
}

// routerTarget drives Bifrost as its frontends do: a client-side
// ranges.Router over a routing table learnt from the stores, which sends
// each request straight to the store that leads the key's range (Execute on
// the store service), and follows refusals and leader changes.
type routerTarget struct {
	seeds  []*ranges.Client
	router *ranges.Router
	table  *ranges.Table

	mu     sync.Mutex
	stores map[uint64]*ranges.Client // by store ID
	byAddr map[string]*ranges.Client
	last   time.Time
}

func newRouterTarget(ctx context.Context, endpoints []string) (*routerTarget, error) {
	t := &routerTarget{table: ranges.NewTable(), stores: map[uint64]*ranges.Client{}, byAddr: map[string]*ranges.Client{}}
	for _, e := range endpoints {
		c, err := ranges.Dial(e)
		if err != nil {
			t.Close()
			return nil, err
		}
		t.seeds = append(t.seeds, c)
		t.byAddr[e] = c
	}
	t.router = ranges.NewRouter(ranges.RouterConfig{}, t.table, t, t)
	return t, nil
}

// Refresh learns the stores' addresses and the ranges each store holds.
func (t *routerTarget) Refresh(ctx context.Context) error {
	t.mu.Lock()
	if time.Since(t.last) < 200*time.Millisecond {
		t.mu.Unlock()
		return nil
	}
	t.last = time.Now()
	t.mu.Unlock()
	var lastErr error
	for _, seed := range t.seeds {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		cl, err := seed.Admin.Cluster(cctx, &rangespb.ClusterRequest{})
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		for _, m := range cl.Members {
			if m.StoreId == 0 || m.GrpcAddr == "" {
				continue
			}
			c, err := t.client(m.GrpcAddr)
			if err != nil {
				lastErr = err
				continue
			}
			t.mu.Lock()
			t.stores[m.StoreId] = c
			t.mu.Unlock()
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			lr, err := rangespb.NewStoreClient(c.Conn()).LocalRanges(cctx, &rangespb.LocalRangesRequest{})
			cancel()
			if err != nil {
				lastErr = err
				continue
			}
			for _, info := range lr.Ranges {
				t.table.Update(info)
			}
		}
		return nil
	}
	return lastErr
}

func (t *routerTarget) client(addr string) (*ranges.Client, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.byAddr[addr]; c != nil {
		return c, nil
	}
	c, err := ranges.Dial(addr)
	if err != nil {
		return nil, err
	}
	t.byAddr[addr] = c
	return c, nil
}

// Execute is the router's transport: the store service of one store.
func (t *routerTarget) Execute(ctx context.Context, storeID uint64, req *rangespb.ExecuteRequest) (*rangespb.ExecuteResponse, error) {
	t.mu.Lock()
	c := t.stores[storeID]
	t.mu.Unlock()
	if c == nil {
		_ = t.Refresh(ctx)
		t.mu.Lock()
		c = t.stores[storeID]
		t.mu.Unlock()
		if c == nil {
			return nil, fmt.Errorf("store %d: %w", storeID, ranges.ErrUnknownStore)
		}
	}
	return rangespb.NewStoreClient(c.Conn()).Execute(ctx, req)
}

const ksKV = kvpb.Keyspace_KEYSPACE_KV

func (t *routerTarget) Put(ctx context.Context, key string, value []byte) error {
	k := []byte(key)
	_, err := t.router.Write(ctx, ksKV, k, nil, &kvpb.Op{Op: &kvpb.Op_Put{Put: &kvpb.PutOp{Key: k, Value: value}}})
	return err
}

func (t *routerTarget) Get(ctx context.Context, key string) error {
	k := []byte(key)
	res, err := t.router.Read(ctx, ksKV, k, false, &kvpb.Op{Op: &kvpb.Op_Get{Get: &kvpb.GetOp{Key: k}}})
	if err == nil && (len(res.Results) != 1 || !res.Results[0].Found) {
		return fmt.Errorf("get %s: not found", key)
	}
	return err
}

// PutVia checks that the i-th store answers on its KV service.
func (t *routerTarget) PutVia(ctx context.Context, i int, key string, value []byte) error {
	return t.seeds[i].Put(ctx, []byte(key), value)
}

func (t *routerTarget) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for _, c := range t.byAddr {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

func (t *routerTarget) notes(ctx context.Context) []string {
	return kvRangeNotes(ctx, t.seeds[0])
}
