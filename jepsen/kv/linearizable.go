package kv

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/bifrost-mq/bifrost/jepsen"
	"github.com/bifrost-mq/bifrost/jepsen/history"
)

// The register model of one key. The state is the key's value, "" when
// absent (the workloads never write an empty value).

type regInput struct {
	F     string
	Key   string
	Value string // written by a write or a CAS
	From  string // a CAS's expected value
}

type regOutput struct {
	// Unknown: an info completion; the write may apply at any time after
	// its invocation, or never (porcupine may place it after everything).
	Unknown bool
	// Value and Found: what a read, or a CAS that did not write, found.
	Value string
	Found bool
	// CASOK: the CAS wrote.
	CASOK bool
}

func regStep(state, input, output any) (bool, any) {
	s, in, out := state.(string), input.(regInput), output.(regOutput)
	found := out.Value
	if !out.Found {
		found = ""
	}
	switch in.F {
	case FRead:
		return s == found, s
	case FWrite:
		return true, in.Value
	case FCAS:
		switch {
		case out.Unknown:
			if s == in.From {
				return true, in.Value
			}
			return true, s
		case out.CASOK:
			return s == in.From, in.Value
		default:
			return s != in.From && s == found, s
		}
	}
	return false, s
}

func describeRegOp(input, output any) string {
	in, out := input.(regInput), output.(regOutput)
	show := func(v string, found bool) string {
		if !found || v == "" {
			return "∅"
		}
		return v
	}
	var s string
	switch in.F {
	case FRead:
		s = fmt.Sprintf("read → %s", show(out.Value, out.Found))
	case FWrite:
		s = fmt.Sprintf("write %s", in.Value)
	case FCAS:
		s = fmt.Sprintf("cas %s→%s", in.From, in.Value)
		if !out.Unknown {
			if out.CASOK {
				s += " ✓"
			} else {
				s += " ✗ found " + show(out.Value, out.Found)
			}
		}
	}
	if out.Unknown {
		s += " ?"
	}
	return s
}

func partitionByKey[T any](items []T, key func(T) string) [][]T {
	byKey := map[string][]T{}
	var keys []string
	for _, it := range items {
		k := key(it)
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], it)
	}
	sort.Strings(keys)
	out := make([][]T, 0, len(keys))
	for _, k := range keys {
		out = append(out, byKey[k])
	}
	return out
}

// RegisterModel is porcupine's model of a map of registers, partitioned by
// key so that every key is checked on its own.
var RegisterModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		return partitionByKey(h, func(op porcupine.Operation) string { return op.Input.(regInput).Key })
	},
	Init:              func() any { return "" },
	Step:              regStep,
	DescribeOperation: describeRegOp,
	DescribeState: func(state any) string {
		if s := state.(string); s != "" {
			return s
		}
		return "∅"
	},
}

// Linearizable checks the register operations of a history (read, write,
// cas) with porcupine, key by key, and writes porcupine's visualization
// with the fault periods marked.
type Linearizable struct {
	// CheckerName names the checker and its HTML file.
	CheckerName string
	// Timeout bounds the search (default 2m): past it the verdict is unknown.
	Timeout time.Duration
}

func (l *Linearizable) Name() string { return l.CheckerName }

// illegalKeys checks each key's operations on their own and returns the
// keys that are not linearizable.
func illegalKeys(ops []porcupine.Operation, timeout time.Duration) []string {
	var bad []string
	for _, part := range RegisterModel.Partition(ops) {
		if porcupine.CheckOperationsTimeout(RegisterModel, part, timeout) == porcupine.Illegal {
			bad = append(bad, part[0].Input.(regInput).Key)
		}
	}
	return bad
}

// Operations converts a history's register operations to porcupine's:
// failed reads and writes are dropped (they did nothing); a CAS that failed
// on a mismatch is kept as an observation of the value it found; an info
// write stays open to the end of the history.
func Operations(h history.History) ([]porcupine.Operation, error) {
	pairs, err := h.Pairs()
	if err != nil {
		return nil, err
	}
	var end int64
	for _, op := range h {
		end = max(end, op.Time)
	}
	var ops []porcupine.Operation
	for _, p := range pairs {
		inv, comp := p.Invoke, p.Completion
		if inv.F != FRead && inv.F != FWrite && inv.F != FCAS {
			continue
		}
		var args Args
		if len(inv.Value) > 0 {
			if err := json.Unmarshal(inv.Value, &args); err != nil {
				return nil, fmt.Errorf("event %d: %w", inv.Index, err)
			}
		}
		in := regInput{F: inv.F, Key: inv.Key, Value: args.Value, From: args.From}
		var out regOutput
		ret := comp.Time
		switch comp.Type {
		case history.OK:
			out.CASOK = inv.F == FCAS
		case history.Fail:
			if inv.F != FCAS || len(comp.Value) == 0 {
				continue
			}
		case history.Info:
			if inv.F == FRead {
				continue
			}
			out.Unknown, ret = true, end+1
		}
		if len(comp.Value) > 0 && comp.Type != history.Info {
			var r Result
			if err := json.Unmarshal(comp.Value, &r); err != nil {
				return nil, fmt.Errorf("event %d: %w", comp.Index, err)
			}
			out.Value, out.Found = r.Value, r.Found
		}
		ops = append(ops, porcupine.Operation{ClientId: inv.Process, Input: in, Call: inv.Time, Output: out, Return: ret})
	}
	return ops, nil
}

func (l *Linearizable) Check(_ context.Context, h history.History, dir string) jepsen.Result {
	ops, err := Operations(h)
	if err != nil {
		return jepsen.Result{Valid: jepsen.Unknown, Summary: "unreadable history: " + err.Error()}
	}
	if len(ops) == 0 {
		return jepsen.Result{Valid: jepsen.Unknown, Summary: "no register operations to check"}
	}
	// porcupine's visualization wants client IDs from 0 without big gaps.
	ids := map[int]int{}
	for i := range ops {
		id, ok := ids[ops[i].ClientId]
		if !ok {
			id = len(ids)
			ids[ops[i].ClientId] = id
		}
		ops[i].ClientId = id
	}
	timeout := l.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(RegisterModel, ops, timeout)
	keys := len(RegisterModel.Partition(ops))
	var notes []porcupine.Annotation
	for _, f := range h.Faults() {
		notes = append(notes, porcupine.Annotation{Tag: "nemesis", Start: f.Start, End: f.End, Description: f.Name, Details: f.Desc, BackgroundColor: "#f3b0b0"})
	}
	info.AddAnnotations(notes)
	r := jepsen.Result{Details: map[string]any{"operations": len(ops), "keys": keys, "check_time": time.Since(start).Round(time.Millisecond).String()}}
	file := l.CheckerName + ".html"
	if err := porcupine.VisualizePath(RegisterModel, info, filepath.Join(dir, file)); err == nil {
		r.Files = []string{file}
	}
	switch res {
	case porcupine.Ok:
		r.Valid, r.Summary = jepsen.Valid, fmt.Sprintf("%d operations on %d keys are linearizable", len(ops), keys)
	case porcupine.Illegal:
		bad := illegalKeys(ops, timeout)
		r.Details.(map[string]any)["illegal_keys"] = bad
		r.Valid, r.Summary = jepsen.Invalid, fmt.Sprintf("not linearizable: %d operations on %d keys, keys %v are not (see %s)", len(ops), keys, bad, file)
	default:
		r.Valid, r.Summary = jepsen.Unknown, fmt.Sprintf("porcupine did not decide within %v (%d operations on %d keys)", timeout, len(ops), keys)
	}
	return r
}
