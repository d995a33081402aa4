package jepsen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/bifrost-mq/bifrost/jepsen/cluster"
	"github.com/bifrost-mq/bifrost/jepsen/history"
	"github.com/bifrost-mq/bifrost/jepsen/plot"
)

// Config is one run.
type Config struct {
	// Dir is the run's results directory (required; created).
	Dir string `json:"dir"`
	// Binary is the bifrost binary (required); BuildTags is recorded only.
	Binary    string `json:"binary"`
	BuildTags string `json:"build_tags,omitempty"`
	// Stores and Frontends size the cluster (default 3 and 0).
	Stores    int      `json:"stores"`
	Frontends int      `json:"frontends"`
	StoreArgs []string `json:"store_args,omitempty"`

	Workload Workload  `json:"-"`
	Nemeses  []Nemesis `json:"-"`

	// Seed drives every random choice of the harness: the fault schedule
	// and its targets, and each worker's operations. The same seed replays
	// the same schedule (the interleaving of real processes differs).
	Seed uint64 `json:"seed"`
	// Duration is how long the clients run (default 30s).
	Duration time.Duration `json:"duration"`
	// Concurrency is the number of client workers (default 2 per store).
	Concurrency int `json:"concurrency"`
	// OpTimeout bounds one operation (default 2s).
	OpTimeout time.Duration `json:"op_timeout"`
	// OpDelay is each worker's pause between operations (default 10ms).
	OpDelay time.Duration `json:"op_delay"`
	// QuietStart is the time before the first fault (default 5s).
	QuietStart time.Duration `json:"quiet_start"`
	// FaultEvery is the mean quiet time between faults and FaultFor the
	// mean time a fault holds (defaults 4s and 5s); each is drawn from
	// [0.5, 1.5] times the mean.
	FaultEvery time.Duration `json:"fault_every"`
	FaultFor   time.Duration `json:"fault_for"`
	// Recovery is the wait between healing and the final operations
	// (default 3s); FinalTimeout bounds each final operation's retries
	// (default 30s).
	Recovery     time.Duration `json:"recovery"`
	FinalTimeout time.Duration `json:"final_timeout"`
	// MinOKRate is the least rate of successful operations per second
	// before the first fault (default 5) for the run to count.
	MinOKRate float64 `json:"min_ok_rate"`
	// DelayProxy runs the stores' links through the delay proxy (needed by
	// the delay nemesis).
	DelayProxy bool `json:"delay_proxy"`
	// KeepData keeps the nodes' data directories (logs are always kept).
	KeepData bool `json:"keep_data"`

	Logger *slog.Logger `json:"-"`
}

// Validate fills defaults and checks the config.
func (c *Config) Validate() error {
	if c.Dir == "" || c.Binary == "" {
		return errors.New("jepsen: Dir and Binary are required")
	}
	if c.Workload == nil {
		return errors.New("jepsen: Workload is required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Stores == 0 {
		c.Stores = 3
	}
	if c.Concurrency == 0 {
		c.Concurrency = 2 * c.Stores
	}
	def(&c.Duration, 30*time.Second)
	def(&c.OpTimeout, 2*time.Second)
	def(&c.OpDelay, 10*time.Millisecond)
	def(&c.QuietStart, 5*time.Second)
	def(&c.FaultEvery, 4*time.Second)
	def(&c.FaultFor, 5*time.Second)
	def(&c.Recovery, 3*time.Second)
	def(&c.FinalTimeout, 30*time.Second)
	if c.MinOKRate == 0 {
		c.MinOKRate = 5
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Concurrency < 1 || c.Duration < 0 {
		return fmt.Errorf("jepsen: concurrency %d, duration %v", c.Concurrency, c.Duration)
	}
	return nil
}

// Results is results.json.
type Results struct {
	Workload string   `json:"workload"`
	Nemeses  []string `json:"nemeses"`
	Seed     uint64   `json:"seed"`
	// Started is the wall-clock time of the history's time 0, to line the
	// history up with the nodes' logs.
	Started  time.Time         `json:"started"`
	Valid    Verdict           `json:"valid"`
	Checkers map[string]Result `json:"checkers"`
	// Ops counts client operations by completion type.
	Ops      map[history.Type]int `json:"ops"`
	Faults   []history.Fault      `json:"faults"`
	Crashes  []cluster.Crash      `json:"crashes,omitempty"`
	Duration string               `json:"duration"`
	Files    []string             `json:"files"`
	// Error is a harness failure that stopped the run early.
	Error string `json:"error,omitempty"`
}

// Run runs one test and writes its directory. The returned error is a
// failure of the harness itself (the cluster did not start); a history
// that checks invalid is a Results with Valid == Invalid and no error.
// Whatever happens, the cluster's processes, namespaces and bridge are
// removed before Run returns.
func Run(ctx context.Context, cfg Config) (res *Results, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	log := cfg.Logger
	begin := time.Now()
	res = &Results{Workload: cfg.Workload.Name(), Seed: cfg.Seed, Checkers: map[string]Result{}, Ops: map[history.Type]int{}}
	for _, n := range cfg.Nemeses {
		res.Nemeses = append(res.Nemeses, n.Name())
	}
	if err := writeJSON(filepath.Join(cfg.Dir, "config.json"), struct {
		Config
		Workload string   `json:"workload"`
		Nemeses  []string `json:"nemeses"`
	}{cfg, res.Workload, res.Nemeses}); err != nil {
		return nil, err
	}
	defer func() {
		res.Duration = time.Since(begin).Round(time.Millisecond).String()
		if err != nil {
			res.Error = err.Error()
			res.Valid = Worst(res.Valid, Unknown)
		}
		if werr := writeJSON(filepath.Join(cfg.Dir, "results.json"), res); werr != nil && err == nil {
			err = werr
		}
	}()

	rec, err := history.Create(filepath.Join(cfg.Dir, "history.jsonl"))
	if err != nil {
		return res, err
	}
	defer rec.Close()
	res.Started = rec.Start().UTC()
	nodesDir := filepath.Join(cfg.Dir, "nodes")
	c, err := cluster.New(ctx, cluster.Config{Binary: cfg.Binary, Dir: nodesDir, Stores: cfg.Stores, Frontends: cfg.Frontends, StoreArgs: cfg.StoreArgs, DelayProxy: cfg.DelayProxy, Logger: log})
	if err != nil {
		return res, err
	}
	defer func() {
		if cerr := c.Close(); cerr != nil && err == nil {
			err = cerr
		}
		if !cfg.KeepData {
			for _, n := range c.Nodes() {
				os.RemoveAll(n.DataDir())
			}
		}
	}()
	startCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := c.Start(startCtx); err != nil {
		return res, err
	}
	if err := c.WaitReady(startCtx, "jepsen-probe"); err != nil {
		return res, err
	}
	if err := cfg.Workload.Setup(startCtx, c); err != nil {
		return res, fmt.Errorf("workload setup: %w", err)
	}
	log.Info("cluster ready", "after", time.Since(begin).Round(time.Millisecond))

	clients := make([]Client, cfg.Concurrency)
	for w := range clients {
		cl, err := cfg.Workload.NewClient(startCtx, c, w)
		if err != nil {
			return res, fmt.Errorf("client %d: %w", w, err)
		}
		clients[w] = cl
		defer cl.Close()
		if o, ok := cl.(Observer); ok {
			o.Observe(observer(rec, observerProcess+w, cl.Node()))
		}
	}

	// Clients and the nemesis run for Duration; then everything heals.
	runCtx, stopRun := context.WithTimeout(ctx, cfg.Duration)
	defer stopRun()
	clientsStart := rec.Now()
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runWorker(runCtx, cfg, rec, clients[w], w)
		}()
	}
	nem := &scheduler{cfg: cfg, c: c, rec: rec, log: log, rng: rand.New(rand.NewPCG(cfg.Seed, 0x6e656d65736973))}
	nemErr := nem.run(runCtx)
	wg.Wait()
	healErr := nem.healAll(context.Background())
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if nemErr != nil {
		log.Error("nemesis", "err", nemErr)
	}

	// The final operations, after the cluster had time to recover.
	time.Sleep(cfg.Recovery)
	final := runFinal(ctx, cfg, rec, c)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if healErr != nil {
		final = Result{Valid: Unknown, Summary: "healing failed: " + healErr.Error()}
	}

	h := rec.Ops()
	res.Faults = h.Faults()
	res.Crashes = c.Crashes()
	pairs, err := h.Pairs()
	if err != nil {
		return res, err
	}
	for _, p := range pairs {
		res.Ops[p.Completion.Type]++
	}
	res.Checkers["final"] = final
	res.Checkers["availability"] = availability(cfg, pairs, res.Faults, clientsStart)
	res.Checkers["crashes"] = crashes(res.Crashes)
	for _, ch := range cfg.Workload.Checkers() {
		r := ch.Check(ctx, h, cfg.Dir)
		res.Checkers[ch.Name()] = r
		log.Info("checked", "checker", ch.Name(), "valid", r.Valid, "summary", r.Summary)
	}
	res.Valid = Valid
	for _, r := range res.Checkers {
		res.Valid = Worst(res.Valid, r.Valid)
	}
	for name, draw := range map[string]func(string, []history.Pair, []history.Fault) error{
		"latency.svg": plot.Latency, "throughput.svg": plot.Throughput,
	} {
		if err := draw(filepath.Join(cfg.Dir, name), pairs, res.Faults); err != nil {
			log.Error("plot", "file", name, "err", err)
			continue
		}
		res.Files = append(res.Files, name)
	}
	res.Files = append(res.Files, "config.json", "history.jsonl", "results.json", "nodes/")
	sort.Strings(res.Files)
	return res, nil
}

func runWorker(ctx context.Context, cfg Config, rec *history.Recorder, cl Client, w int) {
	rng := rand.New(rand.NewPCG(cfg.Seed, uint64(w)+1))
	process := w
	for ctx.Err() == nil {
		inv := cfg.Workload.Next(rng, w)
		inv.Type, inv.Process, inv.Node, inv.Time = history.Invoke, process, cl.Node(), 0
		inv = rec.Record(inv)
		// The operation runs to its own timeout even when the run ends, so
		// that the last operations complete rather than turn into info.
		opCtx, cancel := context.WithTimeout(context.Background(), cfg.OpTimeout)
		comp := cl.Invoke(opCtx, inv)
		cancel()
		comp.Process, comp.Node, comp.F, comp.Key, comp.Time = process, inv.Node, inv.F, inv.Key, 0
		if comp.Type == history.Invoke || comp.Type == "" {
			comp.Type = history.Info
		}
		rec.Record(comp)
		if comp.Type == history.Info {
			// The operation may still take effect: it stays open forever, so
			// this worker goes on as a new process.
			process += cfg.Concurrency
		}
		delay := cfg.OpDelay
		if comp.Type != history.OK && comp.Error != "" {
			// Back off from a node that is down or cut off, rather than
			// fill the history with its failures.
			delay += 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
	}
}

// observerProcess+w is the process of worker w's observed events.
const observerProcess = 2_000_000

// observer records an observed event as an operation done at once.
func observer(rec *history.Recorder, process int, node string) func(history.Op) {
	var mu sync.Mutex
	return func(op history.Op) {
		mu.Lock()
		defer mu.Unlock()
		op.Process, op.Node, op.Time, op.Error = process, node, rec.Now(), ""
		op.Type = history.Invoke
		rec.Record(op)
		op.Type = history.OK
		rec.Record(op)
	}
}

// finalProcess is the first process number of the final operations, after
// every worker's.
const finalProcess = 1_000_000

// runFinal runs the workload's final operations, each retried until it
// succeeds or FinalTimeout passes, through a client of the first store that
// answers.
func runFinal(ctx context.Context, cfg Config, rec *history.Recorder, c *cluster.Cluster) Result {
	ops := cfg.Workload.Final()
	if len(ops) == 0 {
		return Result{Valid: Valid, Summary: "no final operations"}
	}
	process := finalProcess
	var failed []string
	for _, op := range ops {
		deadline := time.Now().Add(cfg.FinalTimeout)
		ok := false
		for attempt := 0; !ok && time.Now().Before(deadline) && ctx.Err() == nil; attempt++ {
			cl, err := cfg.Workload.NewClient(ctx, c, attempt)
			if err != nil {
				time.Sleep(500 * time.Millisecond)
				continue
			}
			inv := op
			inv.Type, inv.Process, inv.Node, inv.Time = history.Invoke, process, cl.Node(), 0
			rec.Record(inv)
			opCtx, cancel := context.WithTimeout(ctx, max(cfg.OpTimeout, 5*time.Second))
			comp := cl.Invoke(opCtx, inv)
			cancel()
			cl.Close()
			comp.Process, comp.Node, comp.F, comp.Key, comp.Time = process, inv.Node, inv.F, inv.Key, 0
			if comp.Type == history.Invoke || comp.Type == "" {
				comp.Type = history.Info
			}
			rec.Record(comp)
			process++
			ok = comp.Type == history.OK
			if !ok {
				time.Sleep(500 * time.Millisecond)
			}
		}
		if !ok {
			failed = append(failed, op.F+" "+op.Key)
		}
	}
	if len(failed) > 0 {
		return Result{Valid: Invalid, Summary: fmt.Sprintf("final operations did not succeed within %v after healing: %v", cfg.FinalTimeout, failed)}
	}
	return Result{Valid: Valid, Summary: fmt.Sprintf("%d final operations succeeded after healing", len(ops))}
}

// availability judges the rate of successful client operations before the
// first fault (over the whole run when there was none).
func availability(cfg Config, pairs []history.Pair, faults []history.Fault, start int64) Result {
	var end int64
	for _, p := range pairs {
		end = max(end, p.Completion.Time)
	}
	if len(faults) > 0 {
		end = faults[0].Start
	}
	var ok int
	for _, p := range pairs {
		if p.Invoke.Process < finalProcess && p.Completion.Type == history.OK && p.Completion.Time <= end {
			// Workers' own operations only: not final ones, not observations.
			ok++
		}
	}
	secs := float64(end-start) / 1e9
	if secs <= 0 {
		return Result{Valid: Invalid, Summary: "no time before the first fault"}
	}
	rate := float64(ok) / secs
	r := Result{Valid: Valid, Details: map[string]float64{"ok_per_second": rate, "seconds": secs},
		Summary: fmt.Sprintf("%.1f ok operations/s over the %.1fs before the first fault (minimum %.1f)", rate, secs, cfg.MinOKRate)}
	if rate < cfg.MinOKRate {
		r.Valid = Invalid
	}
	return r
}

func crashes(cr []cluster.Crash) Result {
	if len(cr) == 0 {
		return Result{Valid: Valid, Summary: "no node exited on its own"}
	}
	return Result{Valid: Invalid, Summary: fmt.Sprintf("%d node exits nobody caused, first %s: %s", len(cr), cr[0].Node, cr[0].Err), Details: cr}
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
