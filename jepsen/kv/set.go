package kv

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/bifrost-mq/bifrost/jepsen"
	"github.com/bifrost-mq/bifrost/jepsen/cluster"
	"github.com/bifrost-mq/bifrost/jepsen/history"
)

// SetPrefix starts the set workload's keys: element e is the key
// SetPrefix + e (zero-padded), so the set spreads over the ranges a split
// makes.
const SetPrefix = "set/"

// Set is the set workload: every operation adds a new, unique element
// (a put of its own key); after healing, one read of every key under the
// prefix must hold every element whose add succeeded and none that was
// never added.
type Set struct {
	next      atomic.Int64
	splitKeys []string
}

// NewSet returns a set workload; splitKeys (may be nil) are split points the
// setup makes, so the final read crosses ranges.
func NewSet(splitKeys []string) *Set { return &Set{splitKeys: splitKeys} }

// SetKey is the key of element e.
func SetKey(e int64) string { return fmt.Sprintf("%s%09d", SetPrefix, e) }

func (s *Set) Name() string { return "kv-set" }

func (s *Set) Setup(ctx context.Context, c *cluster.Cluster) error {
	return splitAt(ctx, c, s.splitKeys)
}

func (s *Set) NewClient(ctx context.Context, c *cluster.Cluster, worker int) (jepsen.Client, error) {
	return newClient(ctx, c, worker)
}

// SplitKey picks a split point among the elements added so far and the
// next thousand, so that splits land where the adds go as well as behind
// them.
func (s *Set) SplitKey(rng *rand.Rand) string { return SetKey(rng.Int64N(s.next.Load() + 1000)) }

func (s *Set) Next(*rand.Rand, int) history.Op {
	e := s.next.Add(1)
	return history.Op{F: FAdd, Key: SetKey(e), Value: mustJSON(Args{Value: strconv.FormatInt(e, 10)})}
}

func (s *Set) Final() []history.Op { return []history.Op{{F: FReadAll, Key: SetPrefix}} }

func (s *Set) Checkers() []jepsen.Checker { return []jepsen.Checker{SetChecker{}, RoutesChecker{}} }

// SetChecker compares the adds with the last successful final read: an
// element whose add succeeded but is missing is lost, an element present
// that no add attempted (or whose add certainly failed) is unexpected;
// either makes the history invalid. Elements of adds with unknown outcome
// may be present or not.
type SetChecker struct{}

func (SetChecker) Name() string { return "set" }

func (SetChecker) Check(_ context.Context, h history.History, _ string) jepsen.Result {
	pairs, err := h.Pairs()
	if err != nil {
		return jepsen.Result{Valid: jepsen.Unknown, Summary: "unreadable history: " + err.Error()}
	}
	status := map[string]history.Type{} // key -> completion of its add
	var final []string
	haveFinal := false
	for _, p := range pairs {
		switch p.Invoke.F {
		case FAdd:
			status[p.Invoke.Key] = p.Completion.Type
		case FReadAll:
			if p.Completion.Type == history.OK {
				final = nil
				if err := json.Unmarshal(p.Completion.Value, &final); err != nil {
					return jepsen.Result{Valid: jepsen.Unknown, Summary: "unreadable final read: " + err.Error()}
				}
				haveFinal = true
			}
		}
	}
	if !haveFinal {
		return jepsen.Result{Valid: jepsen.Unknown, Summary: "no final read succeeded"}
	}
	present := map[string]bool{}
	var unexpected, lost []string
	recovered := 0
	for _, k := range final {
		present[k] = true
		switch status[k] {
		case history.OK:
		case history.Info:
			recovered++
		default: // never attempted, or failed for certain
			unexpected = append(unexpected, strings.TrimPrefix(k, SetPrefix))
		}
	}
	okCount := 0
	for k, t := range status {
		if t == history.OK {
			okCount++
			if !present[k] {
				lost = append(lost, strings.TrimPrefix(k, SetPrefix))
			}
		}
	}
	sort.Strings(lost)
	sort.Strings(unexpected)
	details := map[string]any{
		"attempted": len(status), "acknowledged": okCount, "read": len(final),
		"lost_count": len(lost), "unexpected_count": len(unexpected), "recovered_unknown": recovered,
		"lost": firstN(lost, 50), "unexpected": firstN(unexpected, 50),
	}
	if len(lost) > 0 || len(unexpected) > 0 {
		return jepsen.Result{Valid: jepsen.Invalid, Details: details,
			Summary: fmt.Sprintf("%d acknowledged elements lost, %d unexpected, of %d attempted", len(lost), len(unexpected), len(status))}
	}
	return jepsen.Result{Valid: jepsen.Valid, Details: details,
		Summary: fmt.Sprintf("all %d acknowledged elements read, none unexpected (%d of unknown outcome present)", okCount, recovered)}
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
