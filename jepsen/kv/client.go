// Package kv holds the harness's workloads on the store's key-value API
// (the `kv` keyspace through a store's gRPC KV service): a register per key
// checked linearizable with porcupine (Register; with many keys and a
// nemesis that splits, merges and moves ranges it is the moving-keys
// workload), and a grow-only set checked for lost and unexpected elements
// after a final read (Set).
//
// Errors decide an operation's completion: a read that errs is a fail (it
// changed nothing); a write that the server refused as malformed is a fail;
// any other write error (a timeout, an unavailable range, a lost
// connection) is info, since the write may have applied.
package kv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/bifrost-mq/bifrost/jepsen/cluster"
	"github.com/bifrost-mq/bifrost/jepsen/history"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangespb"
)

// Args are an invocation's arguments: the value a write writes; a CAS
// writes Value where the key holds From.
type Args struct {
	Value string `json:"value,omitempty"`
	From  string `json:"from,omitempty"`
}

// Result is what a read found, or what a CAS that did not write found.
type Result struct {
	Value string `json:"value"`
	Found bool   `json:"found"`
}

// Operation names.
const (
	FRead  = "read"
	FWrite = "write"
	FCAS   = "cas"
	FAdd   = "add"
	// FReadAll reads every key under a prefix (the Key), in one scan.
	FReadAll = "read-all"
	// FStaleRoute is an event, not an invocation: a store refused a
	// routed worker's command or query for its stale route (StaleRoute:
	// a stale epoch, a key outside the range, or no replica of the range
	// there), and the worker's router retried it.
	FStaleRoute = "stale-route"
)

// StaleRoute is the value of an FStaleRoute event.
type StaleRoute struct {
	Range  uint64 `json:"range"`
	Status string `json:"status"`
}

// client is a worker's client: its operations go through one store's KV
// service, or, for every other worker, through a router of its own with
// cached routes (routedAPI); scans always go through the store.
type client struct {
	node    string
	cl      *ranges.Client
	api     kvAPI
	routed  *routedAPI
	cluster *cluster.Cluster
}

// newClient opens worker's client. Odd workers route by themselves, so a
// run has clients with stale routes beside clients of the stores' fresh
// ones.
func newClient(ctx context.Context, c *cluster.Cluster, worker int) (*client, error) {
	stores := c.Stores()
	n := stores[worker%len(stores)]
	cl, err := ranges.Dial(n.GRPCAddr())
	if err != nil {
		return nil, err
	}
	if worker%2 == 0 {
		return &client{node: n.Name, cl: cl, api: storeAPI{cl}, cluster: c}, nil
	}
	r, err := newRoutedAPI(ctx, c)
	if err != nil {
		cl.Close()
		return nil, err
	}
	return &client{node: routedNode, cl: cl, api: r, routed: r, cluster: c}, nil
}

// routedNode is the node of a routed worker's operations in the history.
const routedNode = "router"

func (c *client) Node() string { return c.node }

// Observe implements jepsen.Observer: a routed worker records the stale
// routes stores refused as FStaleRoute events.
func (c *client) Observe(record func(history.Op)) {
	if c.routed != nil {
		c.routed.setRecord(record)
	}
}

func (c *client) Close() error {
	if c.routed != nil {
		c.Observe(nil)
		c.routed.close()
	}
	return c.cl.Close()
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// writeFailure is the completion of a write that returned err: fail when
// the server refused it as malformed, or when the worker's one call to its
// store certainly never reached the store (gRPC could not connect), info
// otherwise. A routed worker's error is only its last attempt's: an
// earlier attempt may have reached a leader and applied, so a routed write
// that could not connect in the end is info too.
func (c *client) writeFailure(op history.Op, err error) history.Op {
	op.Error = err.Error()
	op.Type = history.Info
	if errors.Is(err, ranges.ErrBadRequest) || (c.routed == nil && neverSent(err)) {
		op.Type = history.Fail
	}
	return op
}

// neverSent reports whether gRPC failed the call before sending it: the
// connection to the store could not be made (the store is down), so the
// store never saw the request.
func neverSent(err error) bool {
	return errors.Is(err, ranges.ErrUnavailable) && strings.Contains(err.Error(), "Error while dialing")
}

func (c *client) Invoke(ctx context.Context, op history.Op) history.Op {
	var args Args
	if len(op.Value) > 0 {
		if err := json.Unmarshal(op.Value, &args); err != nil {
			op.Type, op.Error = history.Fail, "bad arguments: "+err.Error()
			return op
		}
	}
	op.Value = nil
	switch op.F {
	case FRead:
		v, found, err := c.api.get(ctx, []byte(op.Key))
		if err != nil {
			op.Type, op.Error = history.Fail, err.Error()
			return op
		}
		op.Type, op.Value = history.OK, mustJSON(Result{Value: string(v), Found: found})
	case FWrite, FAdd:
		if err := c.api.put(ctx, []byte(op.Key), []byte(args.Value)); err != nil {
			return c.writeFailure(op, err)
		}
		op.Type = history.OK
	case FCAS:
		ok, cur, found, err := c.api.cas(ctx, []byte(op.Key), []byte(args.From), []byte(args.Value))
		if err != nil {
			return c.writeFailure(op, err)
		}
		if ok {
			op.Type = history.OK
			return op
		}
		// The CAS found another value: it did not write, and what it found
		// is a linearizable observation of the key. (No Error: the store
		// answered; the harness backs off only after errors.)
		op.Type = history.Fail
		op.Value = mustJSON(Result{Value: string(cur), Found: found})
	case FReadAll:
		keys, err := c.scan(ctx, op.Key)
		if err != nil {
			op.Type, op.Error = history.Fail, err.Error()
			return op
		}
		op.Type, op.Value = history.OK, mustJSON(keys)
	default:
		op.Type, op.Error = history.Fail, fmt.Sprintf("unknown operation %q", op.F)
	}
	return op
}

// scan returns every key under prefix. It reads through a router of its
// own, which asks each range's leader first: a store's router reads its
// own replica first, and a store that holds a split's parent and child
// holds, in its one engine, a key a faulty build wrote through the parent
// after the split, so reading there would hide the fault from the checker
// (bugzoo_skip_version). A store's scan is the fallback.
func (c *client) scan(ctx context.Context, prefix string) ([]string, error) {
	start, end := []byte(prefix), append([]byte(prefix), 0xff)
	r := c.routed
	if r == nil && c.cluster != nil {
		var err error
		if r, err = newRoutedAPI(ctx, c.cluster); err == nil {
			defer r.close()
		}
	}
	if r != nil {
		return r.scan(ctx, start, end)
	}
	var keys []string
	for {
		resp, err := c.cl.KV.Scan(ctx, &rangespb.ScanRequest{Start: start, End: end, Limit: 1000})
		if err != nil {
			return nil, ranges.FromStatus(err)
		}
		for _, p := range resp.Pairs {
			keys = append(keys, string(p.Key))
		}
		if !resp.More {
			return keys, nil
		}
		start = resp.NextKey
	}
}
