// Package history records a run's operations as Jepsen does: every
// operation is an invocation followed by one completion (ok, fail or info),
// tagged with the logical process that ran it, the node it talked to and a
// monotonic time since the run began. The recorder writes each event as a
// JSON line the moment it happens, so a crashed run still leaves the history
// up to the crash.
//
// Invariants: a process has at most one operation open at a time; a process
// whose operation ended in info (outcome unknown) is never used again (the
// harness gives its worker a new process number), so an unknown operation
// stays concurrent with everything after it, which is what a checker needs.
package history

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Type is an event's kind.
type Type string

const (
	// Invoke starts an operation.
	Invoke Type = "invoke"
	// OK: the operation took effect, and its value is what it returned.
	OK Type = "ok"
	// Fail: the operation certainly did not take effect.
	Fail Type = "fail"
	// Info: the outcome is unknown (a timeout, a lost connection); the
	// operation may take effect at any time from its invocation on.
	Info Type = "info"
)

// NemesisProcess is the process number of the fault injector's events.
const NemesisProcess = -1

// Op is one event of the history.
type Op struct {
	// Index is the event's position in the history, from 0.
	Index int  `json:"index"`
	Type  Type `json:"type"`
	// Process is the logical client; NemesisProcess for faults.
	Process int `json:"process"`
	// Node names the node the client talked to ("" when none).
	Node string `json:"node,omitempty"`
	// F is the operation's function, named by its workload ("read",
	// "write", "cas", "add", ...; "start"/"stop" for the nemesis).
	F string `json:"f"`
	// Key is the key or topic the operation is about, if any.
	Key string `json:"key,omitempty"`
	// Value is workload-defined JSON: the arguments in an invocation, the
	// result in a completion.
	Value json.RawMessage `json:"value,omitempty"`
	// Time is nanoseconds since the run began, from a monotonic clock.
	Time int64 `json:"time"`
	// Error explains a fail or an info.
	Error string `json:"error,omitempty"`
}

// IsNemesis reports whether the event is the fault injector's.
func (o Op) IsNemesis() bool { return o.Process == NemesisProcess }

// Recorder appends events to a history in memory and, when it has a
// writer, as JSON lines. It is safe for concurrent use.
type Recorder struct {
	start time.Time

	mu  sync.Mutex
	ops []Op
	w   *bufio.Writer
	f   io.Closer
	err error
}

// NewRecorder starts a history now. w may be nil (memory only).
func NewRecorder(w io.Writer) *Recorder {
	r := &Recorder{start: time.Now()}
	if w != nil {
		r.w = bufio.NewWriter(w)
	}
	return r
}

// Create starts a history that is also written to the file at path.
func Create(path string) (*Recorder, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	r := NewRecorder(f)
	r.f = f
	return r, nil
}

// Now is the monotonic time since the history began, in nanoseconds.
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// Start is the wall-clock time the history began.
func (r *Recorder) Start() time.Time { return r.start }

// Record stamps op with its index and (when zero) the current time, keeps
// it and writes it out; it returns the stamped op.
func (r *Recorder) Record(op Op) Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	if op.Time == 0 {
		op.Time = r.Now()
	}
	op.Index = len(r.ops)
	r.ops = append(r.ops, op)
	if r.w != nil && r.err == nil {
		b, err := json.Marshal(op)
		if err == nil {
			b = append(b, '\n')
			_, err = r.w.Write(b)
		}
		if err == nil {
			// One flush per event: the file is the record of a run that may
			// crash, and the rate is a few thousand events a second at most.
			err = r.w.Flush()
		}
		r.err = err
	}
	return op
}

// Ops returns a copy of the events so far.
func (r *Recorder) Ops() History {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append(History(nil), r.ops...)
}

// Close flushes and closes the file, returning the first write error.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w != nil && r.err == nil {
		r.err = r.w.Flush()
	}
	if r.f != nil {
		if err := r.f.Close(); err != nil && r.err == nil {
			r.err = err
		}
		r.f = nil
	}
	return r.err
}

// History is a sequence of events in the order they were recorded.
type History []Op

// Read parses a JSON-lines history.
func Read(rd io.Reader) (History, error) {
	var h History
	dec := json.NewDecoder(rd)
	for {
		var op Op
		err := dec.Decode(&op)
		if err == io.EOF {
			return h, nil
		}
		if err != nil {
			return h, fmt.Errorf("event %d: %w", len(h), err)
		}
		h = append(h, op)
	}
}

// ReadFile parses a JSON-lines history file.
func ReadFile(path string) (History, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Read(f)
}

// Pair is an operation: its invocation and its completion. A completion
// missing from the history (the run ended first) counts as info.
type Pair struct {
	Invoke     Op
	Completion Op
}

// Pairs matches every client invocation with its completion, in invocation
// order; nemesis events are left out. An invocation with no completion gets
// an info completion at the end of the history.
func (h History) Pairs() ([]Pair, error) {
	open := map[int]int{} // process -> index in pairs
	var pairs []Pair
	var end int64
	for _, op := range h {
		end = max(end, op.Time)
		if op.IsNemesis() {
			continue
		}
		switch op.Type {
		case Invoke:
			if _, busy := open[op.Process]; busy {
				return nil, fmt.Errorf("event %d: process %d invoked while an operation was open", op.Index, op.Process)
			}
			open[op.Process] = len(pairs)
			pairs = append(pairs, Pair{Invoke: op})
		case OK, Fail, Info:
			i, ok := open[op.Process]
			if !ok {
				return nil, fmt.Errorf("event %d: process %d completed with no open operation", op.Index, op.Process)
			}
			delete(open, op.Process)
			pairs[i].Completion = op
		default:
			return nil, fmt.Errorf("event %d: unknown type %q", op.Index, op.Type)
		}
	}
	for _, i := range open {
		inv := pairs[i].Invoke
		pairs[i].Completion = Op{Index: -1, Type: Info, Process: inv.Process, Node: inv.Node, F: inv.F, Key: inv.Key, Time: end, Error: "no completion recorded"}
	}
	return pairs, nil
}

// Fault is a period during which a nemesis fault was in force.
type Fault struct {
	Name  string `json:"name"`
	Desc  string `json:"desc"`
	Start int64  `json:"start"`
	End   int64  `json:"end"`
}

// Faults returns the nemesis periods: a fault begins when its "start"
// is invoked (Key names the fault, the completion's Value describes it) and
// ends when the next "stop" with the same Key completes. A momentary fault,
// such as a split, starts and stops at once. A fault still open at the end
// lasts to the end of the history.
func (h History) Faults() []Fault {
	var out []Fault
	open := map[string]int{}
	var end int64
	for _, op := range h {
		end = max(end, op.Time)
		if !op.IsNemesis() {
			continue
		}
		switch {
		case op.F == "start" && op.Type == Invoke:
			if _, ok := open[op.Key]; !ok {
				open[op.Key] = len(out)
				out = append(out, Fault{Name: op.Key, Start: op.Time, End: -1})
			}
		case op.F == "start":
			if i, ok := open[op.Key]; ok && out[i].Desc == "" {
				var desc string
				if json.Unmarshal(op.Value, &desc) != nil {
					desc = string(op.Value)
				}
				out[i].Desc = desc
				if op.Type == Fail {
					out[i].Desc = "failed: " + op.Error
				}
			}
		case op.F == "stop" && op.Type != Invoke:
			if i, ok := open[op.Key]; ok {
				out[i].End = op.Time
				delete(open, op.Key)
			}
		}
	}
	for i := range out {
		if out[i].End < 0 {
			out[i].End = end
		}
	}
	return out
}
