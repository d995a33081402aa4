package history

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestRecorderWritesJSONLines: every event is on disk as a JSON line as
// soon as it is recorded, indexed and time-stamped, and reads back equal.
func TestRecorderWritesJSONLines(t *testing.T) {
	var buf bytes.Buffer
	r := NewRecorder(&buf)
	a := r.Record(Op{Type: Invoke, Process: 0, Node: "n1", F: "write", Key: "k", Value: json.RawMessage(`{"value":"1"}`)})
	if got := strings.Count(buf.String(), "\n"); got != 1 {
		t.Fatalf("after one event the writer holds %d lines, want 1 (written as the run goes)", got)
	}
	b := r.Record(Op{Type: OK, Process: 0, Node: "n1", F: "write", Key: "k"})
	if a.Index != 0 || b.Index != 1 || a.Time <= 0 || b.Time < a.Time {
		t.Fatalf("stamps: %+v %+v", a, b)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	h, err := Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].Key != "k" || string(h[0].Value) != `{"value":"1"}` || h[1].Type != OK || h[0].Time != a.Time {
		t.Fatalf("read back %+v", h)
	}
}

// TestPairs: invocations pair with their process's completion; a process
// invoking twice is an error; an operation never completed is info.
func TestPairs(t *testing.T) {
	h := History{
		{Index: 0, Type: Invoke, Process: 0, F: "read", Time: 1},
		{Index: 1, Type: Invoke, Process: 1, F: "write", Time: 2},
		{Index: 2, Type: OK, Process: 0, F: "read", Time: 3},
		{Index: 3, Type: Invoke, Process: NemesisProcess, F: "start", Key: "kill", Time: 4},
		{Index: 4, Type: Invoke, Process: 0, F: "read", Time: 5},
	}
	pairs, err := h.Pairs()
	if err != nil {
		t.Fatal(err)
	}
	if len(pairs) != 3 {
		t.Fatalf("%d pairs, want 3: %+v", len(pairs), pairs)
	}
	if pairs[0].Completion.Index != 2 || pairs[1].Completion.Type != Info || pairs[2].Completion.Type != Info || pairs[1].Completion.Time != 5 {
		t.Fatalf("pairs %+v", pairs)
	}
	bad := History{{Type: Invoke, Process: 0}, {Index: 1, Type: Invoke, Process: 0}}
	if _, err := bad.Pairs(); err == nil {
		t.Fatal("a process with two open operations was accepted")
	}
	orphan := History{{Type: OK, Process: 3}}
	if _, err := orphan.Pairs(); err == nil {
		t.Fatal("a completion with no invocation was accepted")
	}
}

// TestFaults: a fault lasts from its start's invocation to its stop's
// completion; one never stopped lasts to the end.
func TestFaults(t *testing.T) {
	n := NemesisProcess
	h := History{
		{Type: Invoke, Process: n, F: "start", Key: "kill", Time: 10},
		{Type: OK, Process: n, F: "start", Key: "kill", Value: json.RawMessage(`"killed n2"`), Time: 12},
		{Type: Invoke, Process: 0, F: "read", Time: 13},
		{Type: Invoke, Process: n, F: "stop", Key: "kill", Time: 20},
		{Type: OK, Process: n, F: "stop", Key: "kill", Time: 25},
		{Type: Invoke, Process: n, F: "start", Key: "pause", Time: 30},
		{Type: Fail, Process: n, F: "start", Key: "pause", Error: "no node", Time: 31},
		{Type: OK, Process: 0, F: "read", Time: 40},
	}
	f := h.Faults()
	want := []Fault{{Name: "kill", Desc: "killed n2", Start: 10, End: 25}, {Name: "pause", Desc: "failed: no node", Start: 30, End: 40}}
	if len(f) != len(want) || f[0] != want[0] || f[1] != want[1] {
		t.Fatalf("faults %+v, want %+v", f, want)
	}
}
