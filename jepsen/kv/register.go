package kv

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/bifrost-mq/bifrost/jepsen"
	"github.com/bifrost-mq/bifrost/jepsen/cluster"
	"github.com/bifrost-mq/bifrost/jepsen/history"
)

// RegisterConfig shapes a register workload.
type RegisterConfig struct {
	// Name names the workload (default "kv-register").
	Name string
	// Prefix starts every key (default "reg/").
	Prefix string
	// Keys is how many keys are in use at once (default 4).
	Keys int
	// OpsPerKey retires the keys in use after about this many operations
	// each and moves on to fresh ones, which keeps each key's history small
	// enough for porcupine (default 150; negative: the same Keys keys for
	// the whole run, which the moving-keys workload uses).
	OpsPerKey int
	// Values is the size of the value domain: writes and CASes use 0..Values-1
	// (default 5), so that CASes often succeed.
	Values int
	// CheckTimeout bounds porcupine's search (default 2m); past it the
	// verdict is unknown.
	CheckTimeout time.Duration
	// SplitKeys, when set, are split points the workload's Setup splits
	// the kv keyspace at before the clients start.
	SplitKeys []string
}

// Register is the register workload: reads, writes and compare-and-sets on
// a few keys at a time, checked linearizable key by key.
type Register struct {
	cfg RegisterConfig
	ops atomic.Int64
}

// NewRegister returns a register workload; see RegisterConfig for defaults.
func NewRegister(cfg RegisterConfig) *Register {
	if cfg.Name == "" {
		cfg.Name = "kv-register"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "reg/"
	}
	if cfg.Keys <= 0 {
		cfg.Keys = 4
	}
	if cfg.OpsPerKey == 0 {
		cfg.OpsPerKey = 150
	}
	if cfg.Values <= 0 {
		cfg.Values = 5
	}
	return &Register{cfg: cfg}
}

// NewMovingKeys is the moving-keys workload: many keys, never retired,
// spread over ranges (split at every tenth key at setup) that a nemesis
// splits, merges and moves while the clients run; each key is checked
// linearizable.
func NewMovingKeys(keys int) *Register {
	var splits []string
	for i := 10; i < keys; i += 10 {
		splits = append(splits, MovingKey(i))
	}
	return NewRegister(RegisterConfig{Name: "kv-moving-keys", Prefix: MovingPrefix, Keys: keys, OpsPerKey: -1, SplitKeys: splits})
}

// MovingPrefix starts the keys of the moving-keys workload.
const MovingPrefix = "mk/"

// MovingKey is the i'th key of the moving-keys workload.
func MovingKey(i int) string { return keyName(MovingPrefix, i) }

func keyName(prefix string, i int) string { return fmt.Sprintf("%s%06d", prefix, i) }

func (r *Register) Name() string { return r.cfg.Name }

func (r *Register) Setup(ctx context.Context, c *cluster.Cluster) error {
	return splitAt(ctx, c, r.cfg.SplitKeys)
}

func (r *Register) NewClient(ctx context.Context, c *cluster.Cluster, worker int) (jepsen.Client, error) {
	return newClient(ctx, c, worker)
}

func (r *Register) key(rng *rand.Rand) string {
	n := r.ops.Add(1)
	base := 0
	if r.cfg.OpsPerKey > 0 {
		base = int(n/int64(r.cfg.OpsPerKey*r.cfg.Keys)) * r.cfg.Keys
	}
	return keyName(r.cfg.Prefix, base+rng.IntN(r.cfg.Keys))
}

func (r *Register) Next(rng *rand.Rand, _ int) history.Op {
	op := history.Op{Key: r.key(rng)}
	v := func() string { return strconv.Itoa(rng.IntN(r.cfg.Values)) }
	switch x := rng.IntN(4); {
	case x < 2:
		op.F = FRead
	case x == 2:
		op.F, op.Value = FWrite, mustJSON(Args{Value: v()})
	default:
		op.F, op.Value = FCAS, mustJSON(Args{From: v(), Value: v()})
	}
	return op
}

// Final has no final operation: every key's history is checked as it is.
// The harness's final-operation check still needs one success after
// healing, so a read of a fresh key.
func (r *Register) Final() []history.Op {
	return []history.Op{{F: FRead, Key: r.cfg.Prefix + "final"}}
}

func (r *Register) Checkers() []jepsen.Checker {
	return []jepsen.Checker{&Linearizable{CheckerName: "linearizable", Timeout: r.cfg.CheckTimeout}, RoutesChecker{}}
}

// SetCheckTimeout sets porcupine's time limit.
func (r *Register) SetCheckTimeout(d time.Duration) { r.cfg.CheckTimeout = d }
