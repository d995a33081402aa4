package kv

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/bifrost-mq/bifrost/jepsen"
	"github.com/bifrost-mq/bifrost/jepsen/history"
)

// ev builds one event; times are in milliseconds for readability.
func ev(typ history.Type, process int, f, key string, value any, ms int64) history.Op {
	op := history.Op{Type: typ, Process: process, F: f, Key: key, Time: ms * 1e6}
	if value != nil {
		op.Value, _ = json.Marshal(value)
	}
	return op
}

func index(h history.History) history.History {
	for i := range h {
		h[i].Index = i
	}
	return h
}

const (
	inv  = history.Invoke
	ok   = history.OK
	fail = history.Fail
	info = history.Info
)

func found(v string) Result { return Result{Value: v, Found: true} }

// TestLinearizableChecker: the register checker on synthetic histories,
// each a case the real faults produce.
func TestLinearizableChecker(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    history.History
		want jepsen.Verdict
	}{
		{"sequential write then read", history.History{
			ev(inv, 0, FWrite, "k", Args{Value: "1"}, 0), ev(ok, 0, FWrite, "k", nil, 1),
			ev(inv, 0, FRead, "k", nil, 2), ev(ok, 0, FRead, "k", found("1"), 3),
		}, jepsen.Valid},
		{"stale read after an acknowledged write (bugzoo_stale_read)", history.History{
			ev(inv, 0, FWrite, "k", Args{Value: "1"}, 0), ev(ok, 0, FWrite, "k", nil, 1),
			ev(inv, 0, FWrite, "k", Args{Value: "2"}, 2), ev(ok, 0, FWrite, "k", nil, 3),
			ev(inv, 1, FRead, "k", nil, 4), ev(ok, 1, FRead, "k", found("1"), 5),
		}, jepsen.Invalid},
		{"a read of a value never written", history.History{
			ev(inv, 0, FRead, "k", nil, 0), ev(ok, 0, FRead, "k", found("7"), 1),
		}, jepsen.Invalid},
		{"an absent key reads as absent", history.History{
			ev(inv, 0, FRead, "k", nil, 0), ev(ok, 0, FRead, "k", Result{}, 1),
		}, jepsen.Valid},
		{"concurrent write and read may see either value", history.History{
			ev(inv, 0, FWrite, "k", Args{Value: "1"}, 0), ev(ok, 0, FWrite, "k", nil, 1),
			ev(inv, 0, FWrite, "k", Args{Value: "2"}, 2),
			ev(inv, 1, FRead, "k", nil, 3), ev(ok, 1, FRead, "k", found("1"), 4),
			ev(ok, 0, FWrite, "k", nil, 5),
		}, jepsen.Valid},
		{"an info write may apply later", history.History{
			ev(inv, 0, FWrite, "k", Args{Value: "1"}, 0), ev(info, 0, FWrite, "k", nil, 1),
			ev(inv, 1, FRead, "k", nil, 2), ev(ok, 1, FRead, "k", Result{}, 3),
			ev(inv, 1, FRead, "k", nil, 4), ev(ok, 1, FRead, "k", found("1"), 5),
		}, jepsen.Valid},
		{"a failed write never applies", history.History{
			ev(inv, 0, FWrite, "k", Args{Value: "1"}, 0), ev(fail, 0, FWrite, "k", nil, 1),
			ev(inv, 1, FRead, "k", nil, 2), ev(ok, 1, FRead, "k", found("1"), 3),
		}, jepsen.Invalid},
		{"a CAS succeeds only on its expected value", history.History{
			ev(inv, 0, FWrite, "k", Args{Value: "1"}, 0), ev(ok, 0, FWrite, "k", nil, 1),
			ev(inv, 0, FCAS, "k", Args{From: "2", Value: "3"}, 2), ev(ok, 0, FCAS, "k", nil, 3),
		}, jepsen.Invalid},
		{"a CAS mismatch reports the value it found", history.History{
			ev(inv, 0, FWrite, "k", Args{Value: "1"}, 0), ev(ok, 0, FWrite, "k", nil, 1),
			ev(inv, 0, FCAS, "k", Args{From: "2", Value: "3"}, 2), ev(fail, 0, FCAS, "k", found("1"), 3),
			ev(inv, 0, FCAS, "k", Args{From: "1", Value: "3"}, 4), ev(ok, 0, FCAS, "k", nil, 5),
			ev(inv, 0, FRead, "k", nil, 6), ev(ok, 0, FRead, "k", found("3"), 7),
		}, jepsen.Valid},
		{"a CAS mismatch that found a value the key did not hold", history.History{
			ev(inv, 0, FWrite, "k", Args{Value: "1"}, 0), ev(ok, 0, FWrite, "k", nil, 1),
			ev(inv, 0, FCAS, "k", Args{From: "2", Value: "3"}, 2), ev(fail, 0, FCAS, "k", found("4"), 3),
		}, jepsen.Invalid},
		{"a lost acknowledged write (bugzoo_ack_before_commit)", history.History{
			ev(inv, 0, FWrite, "k", Args{Value: "1"}, 0), ev(ok, 0, FWrite, "k", nil, 1),
			ev(inv, 0, FRead, "k", nil, 2), ev(ok, 0, FRead, "k", Result{}, 3),
		}, jepsen.Invalid},
		{"keys are independent", history.History{
			ev(inv, 0, FWrite, "a", Args{Value: "1"}, 0), ev(ok, 0, FWrite, "a", nil, 1),
			ev(inv, 0, FRead, "b", nil, 2), ev(ok, 0, FRead, "b", Result{}, 3),
			ev(inv, 0, FRead, "a", nil, 4), ev(ok, 0, FRead, "a", found("1"), 5),
		}, jepsen.Valid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			h := index(append(history.History{
				ev(inv, history.NemesisProcess, "start", "kill", nil, 0), ev(ok, history.NemesisProcess, "start", "kill", "killed n1", 0),
			}, tc.h...))
			got := (&Linearizable{CheckerName: "lin"}).Check(context.Background(), h, dir)
			if got.Valid != tc.want {
				t.Fatalf("verdict %s (%s), want %s", got.Valid, got.Summary, tc.want)
			}
			if len(got.Files) != 1 {
				t.Fatalf("files %v, want the visualization", got.Files)
			}
			if fi, err := os.Stat(filepath.Join(dir, got.Files[0])); err != nil || fi.Size() == 0 {
				t.Fatalf("visualization: %v", err)
			}
		})
	}
}

// TestSetChecker: lost and unexpected elements make the set invalid; a
// missing final read makes it unknown; adds of unknown outcome may go
// either way.
func TestSetChecker(t *testing.T) {
	add := func(p int, e int64, typ history.Type, ms int64) history.History {
		return history.History{ev(inv, p, FAdd, SetKey(e), nil, ms), ev(typ, p, FAdd, SetKey(e), nil, ms+1)}
	}
	read := func(ms int64, keys ...int64) history.History {
		var ks []string
		for _, k := range keys {
			ks = append(ks, SetKey(k))
		}
		return history.History{ev(inv, 9, FReadAll, SetPrefix, nil, ms), ev(ok, 9, FReadAll, SetPrefix, ks, ms+1)}
	}
	cat := func(hs ...history.History) history.History {
		var out history.History
		for _, h := range hs {
			out = append(out, h...)
		}
		return index(out)
	}
	for _, tc := range []struct {
		name string
		h    history.History
		want jepsen.Verdict
	}{
		{"all acknowledged elements read", cat(add(0, 1, ok, 0), add(1, 2, ok, 0), read(10, 1, 2)), jepsen.Valid},
		{"an acknowledged element lost", cat(add(0, 1, ok, 0), add(1, 2, ok, 0), read(10, 1)), jepsen.Invalid},
		{"an element nobody added", cat(add(0, 1, ok, 0), read(10, 1, 3)), jepsen.Invalid},
		{"an element whose add certainly failed", cat(add(0, 1, fail, 0), read(10, 1)), jepsen.Invalid},
		{"an unknown add present", cat(add(0, 1, info, 0), read(10, 1)), jepsen.Valid},
		{"an unknown add absent", cat(add(0, 1, info, 0), read(10)), jepsen.Valid},
		{"no final read", cat(add(0, 1, ok, 0)), jepsen.Unknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := SetChecker{}.Check(context.Background(), tc.h, t.TempDir())
			if got.Valid != tc.want {
				t.Fatalf("verdict %s (%s), want %s", got.Valid, got.Summary, tc.want)
			}
		})
	}
}

// TestRoutesChecker: the routes checker counts the stale-route events and
// the routed workers' operations, and is unknown when routed workers
// invoked operations and none succeeded.
func TestRoutesChecker(t *testing.T) {
	routed := func(typ history.Type, p int, ms int64) history.History {
		i, c := ev(inv, p, FAdd, SetKey(int64(p)), nil, ms), ev(typ, p, FAdd, SetKey(int64(p)), nil, ms+1)
		i.Node, c.Node = routedNode, routedNode
		return history.History{i, c}
	}
	stale := func(rangeID uint64, ms int64) history.History {
		v := StaleRoute{Range: rangeID, Status: "STATUS_KEY_NOT_IN_RANGE"}
		return history.History{ev(inv, 2000, FStaleRoute, "set/1", v, ms), ev(ok, 2000, FStaleRoute, "set/1", v, ms)}
	}
	cat := func(hs ...history.History) history.History {
		var out history.History
		for _, h := range hs {
			out = append(out, h...)
		}
		return index(out)
	}
	got := RoutesChecker{}.Check(context.Background(), cat(routed(ok, 1, 0), stale(7, 2), stale(7, 3), stale(9, 4), routed(info, 3, 5)), "")
	d, isMap := got.Details.(map[string]any)
	if got.Valid != jepsen.Valid || !isMap || d["stale_routes"] != 3 || d["ranges"] != 2 || d["routed_ok"] != 1 || d["routed_info"] != 1 {
		t.Fatalf("got %s %v (%s), want valid with 3 stale routes on 2 ranges, 1 ok and 1 info", got.Valid, got.Details, got.Summary)
	}
	if got := (RoutesChecker{}).Check(context.Background(), cat(routed(fail, 1, 0), routed(info, 3, 5)), ""); got.Valid != jepsen.Unknown {
		t.Fatalf("no routed operation succeeded: got %s (%s), want unknown", got.Valid, got.Summary)
	}
	if got := (RoutesChecker{}).Check(context.Background(), index(history.History{ev(inv, 0, FAdd, SetKey(1), nil, 0), ev(ok, 0, FAdd, SetKey(1), nil, 1)}), ""); got.Valid != jepsen.Valid {
		t.Fatalf("no routed worker: got %s (%s), want valid", got.Valid, got.Summary)
	}
}
