// Package jepsen is Bifrost's consistency harness: it runs a workload's
// clients against a real cluster (jepsen/cluster) while nemeses inject
// faults on a seeded schedule, records every operation (jepsen/history),
// then heals the cluster, runs the workload's final operations and hands
// the history to the workload's checkers. A run's directory holds its
// config and seed, the history, results.json and the checkers' and plots'
// files.
//
// The harness knows nothing of keys or topics: a Workload supplies the
// clients, the operations and the checkers, so the KV workloads (jepsen/kv)
// and later MQTT workloads plug in the same way. A run is invalid when a
// checker finds the history invalid, when a node exits on its own, when
// fewer operations than Config.MinOKRate per second succeeded before the
// first fault, or when a final operation after healing does not succeed.
package jepsen

import (
	"context"
	"math/rand/v2"

	"github.com/bifrost-mq/bifrost/jepsen/cluster"
	"github.com/bifrost-mq/bifrost/jepsen/history"
)

// Workload is a kind of test: what the clients do and how it is checked.
type Workload interface {
	// Name names the workload in results ("kv-register").
	Name() string
	// Setup runs once the cluster is ready, before any client.
	Setup(ctx context.Context, c *cluster.Cluster) error
	// NewClient opens the client of a worker; worker numbers run from 0 to
	// Config.Concurrency-1, and a worker keeps its client for the run.
	NewClient(ctx context.Context, c *cluster.Cluster, worker int) (Client, error)
	// Next returns a worker's next invocation: F, Key and Value set. rng
	// is the worker's own; Next is called from many workers at once.
	Next(rng *rand.Rand, worker int) history.Op
	// Final returns the operations to run, each until it succeeds, after
	// the faults are healed (a final read, say); nil for none.
	Final() []history.Op
	// Checkers judge the history.
	Checkers() []Checker
}

// Client performs a workload's operations against one node.
type Client interface {
	// Node names the node the client talks to.
	Node() string
	// Invoke performs op (an invocation) and returns its completion: Type
	// is OK, Fail (certainly not done) or Info (unknown), Value the result.
	// ctx carries the operation's timeout; a timeout is Info, unless the
	// operation cannot have taken effect (a read).
	Invoke(ctx context.Context, op history.Op) history.Op
	Close() error
}

// Observer is implemented by a client that sees events it did not invoke
// (an MQTT subscriber's deliveries). Before the run the harness hands it
// record, which puts one such event in the history as an operation that
// completed at once (an invocation and an OK with the same F, Key, Value
// and time) under a process of the client's own; record is safe to call
// from any goroutine until the client is closed.
type Observer interface {
	Observe(record func(op history.Op))
}

// Verdict is a checker's judgement.
type Verdict string

const (
	Valid   Verdict = "valid"
	Invalid Verdict = "invalid"
	// Unknown: the checker could not decide (a search timed out, the final
	// read failed).
	Unknown Verdict = "unknown"
)

// Worst returns the worse of two verdicts: invalid over unknown over valid.
func Worst(a, b Verdict) Verdict {
	rank := map[Verdict]int{Valid: 0, Unknown: 1, Invalid: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// Result is one checker's judgement.
type Result struct {
	Valid Verdict `json:"valid"`
	// Summary is one line for people.
	Summary string `json:"summary"`
	// Details is checker-specific data for results.json.
	Details any `json:"details,omitempty"`
	// Files are files the checker wrote, relative to the run directory.
	Files []string `json:"files,omitempty"`
}

// Checker judges a history.
type Checker interface {
	Name() string
	// Check judges h; it may write files (a visualization) into dir.
	Check(ctx context.Context, h history.History, dir string) Result
}

// Nemesis injects one kind of fault.
type Nemesis interface {
	// Name names the fault in the history and the plots ("partition-halves").
	Name() string
	// Start injects the fault, choosing its targets with rng, and says what
	// it did.
	Start(ctx context.Context, c *cluster.Cluster, rng *rand.Rand) (string, error)
	// Stop heals what Start did.
	Stop(ctx context.Context, c *cluster.Cluster) error
}

// Momentary is implemented by a nemesis whose fault is an action rather
// than a state (a split, a leader transfer): the schedule does not hold it.
type Momentary interface {
	Momentary() bool
}
