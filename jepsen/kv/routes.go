package kv

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/bifrost-mq/bifrost/jepsen"
	"github.com/bifrost-mq/bifrost/jepsen/history"
)

// RoutesChecker reports how much the run exercised stale routes: the
// refusals the routed workers met for a stale descriptor (FStaleRoute
// events), on how many ranges, and how the routed workers' own operations
// ended. It judges nothing the other checkers judge; its verdict is unknown
// when routed workers invoked operations and none succeeded, since then the
// run says nothing about routing by a cached table.
type RoutesChecker struct{}

func (RoutesChecker) Name() string { return "routes" }

func (RoutesChecker) Check(_ context.Context, h history.History, _ string) jepsen.Result {
	pairs, err := h.Pairs()
	if err != nil {
		return jepsen.Result{Valid: jepsen.Unknown, Summary: "unreadable history: " + err.Error()}
	}
	stale := 0
	byStatus := map[string]int{}
	ranges := map[uint64]bool{}
	done := map[history.Type]int{}
	for _, p := range pairs {
		if p.Invoke.F == FStaleRoute {
			var sr StaleRoute
			if err := json.Unmarshal(p.Invoke.Value, &sr); err != nil {
				return jepsen.Result{Valid: jepsen.Unknown, Summary: fmt.Sprintf("event %d: %v", p.Invoke.Index, err)}
			}
			stale++
			byStatus[sr.Status]++
			ranges[sr.Range] = true
			continue
		}
		if p.Invoke.Node == routedNode {
			done[p.Completion.Type]++
		}
	}
	details := map[string]any{
		"stale_routes": stale, "by_status": byStatus, "ranges": len(ranges),
		"routed_ok": done[history.OK], "routed_fail": done[history.Fail], "routed_info": done[history.Info],
	}
	invoked := done[history.OK] + done[history.Fail] + done[history.Info]
	summary := fmt.Sprintf("routed workers: %d stale routes refused and retried on %d ranges; their operations %d ok, %d fail, %d info",
		stale, len(ranges), done[history.OK], done[history.Fail], done[history.Info])
	if invoked > 0 && done[history.OK] == 0 {
		return jepsen.Result{Valid: jepsen.Unknown, Details: details, Summary: summary + ": none succeeded"}
	}
	return jepsen.Result{Valid: jepsen.Valid, Details: details, Summary: summary}
}
