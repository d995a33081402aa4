// Command kvbench is a load generator for replicated key-value stores: it
// drives etcd (through its v3 client, go.etcd.io/etcd/client/v3) or a
// Bifrost cluster (through the KV gRPC service the admin client uses, or a
// client-side ranges.Router) with the same load, and compares two runs.
//
// The load: a key space of --keys keys, preloaded once; then for each count
// of concurrent clients in --clients, a window of puts (--value random bytes
// to a random key) and a window of linearizable gets of random keys. Each
// client is a goroutine with one request in flight; ops/s counts the
// requests completed in the window, and the latency percentiles are over
// those requests.
//
// Linearizable gets: etcd's default Get is linearizable (a ReadIndex
// through the leader), not serializable; Bifrost's KV Get without the stale
// flag is its ReadIndex read (SyncRead). Both stores fsync their Raft logs
// before a write is acknowledged (each one's default).
//
// Like cmd/mqttbench it measures itself: next to each figure it reports its
// own CPU use and the servers' (given --pids), and warns when it used more
// than the servers did.
//
//	kvbench --system etcd --endpoints 127.0.0.1:2379,... --pids 11,12,13 --json etcd.json
//	kvbench --system bifrost --endpoints 127.0.0.1:7948,... --pids 21,22,23 --json bifrost.json
//	kvbench compare etcd.json bifrost.json
//
// cmd/kvbench/run.sh (make bench-kv) runs a 3-member etcd and 3 Bifrost
// stores on this machine, one after the other, and prints the comparison.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var err error
	if len(args) > 0 && args[0] == "compare" {
		err = runCompare(args[1:], stdout)
	} else {
		err = runBench(args, stdout, stderr)
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errPhaseFailed):
		return 1
	}
	fmt.Fprintln(stderr, "kvbench:", err)
	return 2
}

// errPhaseFailed: a phase failed; the others ran and were reported.
var errPhaseFailed = errors.New("a phase failed")

// The systems kvbench drives, and Bifrost's two ways in.
const (
	systemEtcd    = "etcd"
	systemBifrost = "bifrost"

	// apiKV: the public KV gRPC service (rangespb.KV), each call to the next
	// endpoint in turn; a store that does not lead the key's range forwards
	// it, as an etcd member that does not lead forwards to its leader.
	apiKV = "kv"
	// apiRouter: a client-side ranges.Router, which learns the ranges from
	// the stores and sends each request to the store that leads the key's
	// range (what a Bifrost frontend does).
	apiRouter = "router"
)

// The operations measured.
const (
	opPut = "put"
	opGet = "get"
)

// config is what one run measures, from the flags.
type config struct {
	system      string
	api         string
	endpoints   []string
	pids        []int
	name        string
	jsonPath    string
	clients     []int
	ops         []string
	duration    time.Duration
	warmup      time.Duration
	keys        int
	valueSize   int
	timeout     time.Duration
	pause       time.Duration
	readyWait   time.Duration
	preloadConc int
	cpuProfile  string
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{}
	fs := flag.NewFlagSet("kvbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kvbench --system etcd|bifrost --endpoints A,B,C [flags]\n       kvbench compare A.json B.json\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var endpoints, pids, clients, ops string
	fs.StringVar(&cfg.system, "system", "", "what to drive: etcd or bifrost")
	fs.StringVar(&cfg.api, "api", apiKV, "bifrost only: kv (the KV gRPC service, round-robin over the endpoints) or router (a client-side ranges.Router, straight to each range's leader)")
	fs.StringVar(&endpoints, "endpoints", "", "comma-separated host:port of every member (etcd client URLs without the scheme; Bifrost stores' gRPC)")
	fs.StringVar(&pids, "pids", "", "comma-separated process IDs of the servers, for their CPU use (empty: not measured)")
	fs.StringVar(&cfg.name, "name", "", "the system's name in the report (default: --system)")
	fs.StringVar(&cfg.jsonPath, "json", "", "also write the results to this JSON file, for 'kvbench compare'")
	fs.StringVar(&clients, "clients", "1,16,64", "comma-separated counts of concurrent clients, one phase of each op per count")
	fs.StringVar(&ops, "ops", "put,get", "comma-separated operations to measure at each client count: put, get")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "measurement window of each phase")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "load before each window, not measured")
	fs.IntVar(&cfg.keys, "keys", 10000, "size of the key space (keys kvbench-00000000 on), preloaded before the first phase")
	fs.IntVar(&cfg.valueSize, "value", 100, "bytes of each put's value")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "time limit of one request; a request over it counts as an error")
	fs.DurationVar(&cfg.pause, "pause", time.Second, "idle time between phases")
	fs.DurationVar(&cfg.readyWait, "ready-timeout", 60*time.Second, "how long to wait for every endpoint to answer a put before the first phase")
	fs.IntVar(&cfg.preloadConc, "preload-clients", 32, "concurrent clients of the preload")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write the generator's own CPU profile to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	cfg.endpoints = splitList(endpoints)
	if cfg.pids, err = parseInts("--pids", pids); err != nil {
		return nil, err
	}
	if cfg.clients, err = parseInts("--clients", clients); err != nil {
		return nil, err
	}
	cfg.ops = splitList(ops)
	if cfg.name == "" {
		cfg.name = cfg.system
	}
	return cfg, cfg.validate()
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseInts(flagName, s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a number", flagName, f)
		}
		out = append(out, n)
	}
	return out, nil
}

func (c *config) validate() error {
	switch {
	case c.system != systemEtcd && c.system != systemBifrost:
		return fmt.Errorf("--system %q: want etcd or bifrost", c.system)
	case c.api != apiKV && c.api != apiRouter:
		return fmt.Errorf("--api %q: want kv or router", c.api)
	case c.system == systemEtcd && c.api != apiKV:
		return errors.New("--api router is for bifrost only")
	case len(c.endpoints) == 0:
		return errors.New("--endpoints: at least one host:port")
	case len(c.clients) == 0:
		return errors.New("--clients: at least one count")
	case len(c.ops) == 0:
		return errors.New("--ops: at least one of put, get")
	case c.duration <= 0:
		return errors.New("--duration must be positive")
	case c.warmup < 0 || c.pause < 0:
		return errors.New("--warmup and --pause must not be negative")
	case c.keys < 1:
		return errors.New("--keys must be at least 1")
	case c.valueSize < 1 || c.valueSize > 1<<20:
		return errors.New("--value must be 1 to 1048576 bytes")
	case c.timeout <= 0 || c.readyWait <= 0:
		return errors.New("--timeout and --ready-timeout must be positive")
	case c.preloadConc < 1:
		return errors.New("--preload-clients must be at least 1")
	}
	for _, e := range c.endpoints {
		if strings.Contains(e, "://") || !strings.Contains(e, ":") {
			return fmt.Errorf("--endpoints: %q is not host:port", e)
		}
	}
	for _, n := range c.clients {
		if n < 1 || n > 4096 {
			return fmt.Errorf("--clients: %d is not in [1, 4096]", n)
		}
	}
	for _, p := range c.pids {
		if p < 1 {
			return fmt.Errorf("--pids: %d is not a process ID", p)
		}
	}
	for _, op := range c.ops {
		if op != opPut && op != opGet {
			return fmt.Errorf("--ops: unknown operation %q (want put or get)", op)
		}
	}
	return nil
}

// report is a run's results, as written to --json.
type report struct {
	System    string    `json:"system"`
	Name      string    `json:"name"`
	API       string    `json:"api,omitempty"`
	Endpoints []string  `json:"endpoints"`
	PIDs      []int     `json:"pids,omitempty"`
	Started   time.Time `json:"started"`
	Keys      int       `json:"keys"`
	ValueSize int       `json:"value_bytes"`
	Duration  string    `json:"duration"`
	// Notes are what the system reported of itself after the run (Bifrost:
	// its kv ranges and their leaders).
	Notes   []string  `json:"notes,omitempty"`
	Results []*result `json:"results"`
}

// result is one phase: one operation at one count of clients.
type result struct {
	Op      string  `json:"op"`
	Clients int     `json:"clients"`
	Rate    float64 `json:"ops_per_sec"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	MeanMs  float64 `json:"mean_ms"`
	MaxMs   float64 `json:"max_ms"`
	Ops     int64   `json:"ops"`
	Errors  int64   `json:"errors"`
	// FirstError is the first failed request's error, to say why.
	FirstError string `json:"first_error,omitempty"`
	// CPU use over the window in percent of one core; absent when not
	// measured. ServerCPU sums every server process.
	GeneratorCPU *float64 `json:"generator_cpu_pct,omitempty"`
	ServerCPU    *float64 `json:"server_cpu_pct,omitempty"`
	Error        string   `json:"error,omitempty"`
}

// noter is a target that can describe the system after a run.
type noter interface {
	notes(ctx context.Context) []string
}

// phaseKey names a phase in reports and the comparison.
func (r *result) phaseKey() string { return fmt.Sprintf("%s/%d", r.Op, r.Clients) }

func runBench(args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	t, err := newTarget(ctx, cfg)
	if err != nil {
		return err
	}
	defer t.Close()
	fmt.Fprintf(stderr, "kvbench: waiting for every endpoint of %s to take a put\n", cfg.name)
	if err := waitReady(ctx, cfg, t); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "kvbench: preloading %d keys of %d bytes\n", cfg.keys, cfg.valueSize)
	if err := preload(ctx, cfg, t); err != nil {
		return err
	}
	rep := &report{System: cfg.system, Name: cfg.name, Endpoints: cfg.endpoints, PIDs: cfg.pids,
		Started: time.Now().UTC(), Keys: cfg.keys, ValueSize: cfg.valueSize, Duration: cfg.duration.String()}
	if cfg.system == systemBifrost {
		rep.API = cfg.api
	}
	fmt.Fprintf(stdout, "kvbench: %s at %s, %v windows after %v of warm-up, %d keys, %d-byte values\n",
		cfg.name, strings.Join(cfg.endpoints, ","), cfg.duration, cfg.warmup, cfg.keys, cfg.valueSize)
	failed := false
	for _, n := range cfg.clients {
		for _, op := range cfg.ops {
			r := runPhase(ctx, cfg, t, op, n)
			if r.Error != "" {
				failed = true
			}
			rep.Results = append(rep.Results, r)
			printResult(stdout, r)
			if ctx.Err() != nil {
				break
			}
			sleepCtx(ctx, cfg.pause)
		}
		if ctx.Err() != nil {
			break
		}
	}
	if ns, ok := t.(noter); ok && ctx.Err() == nil {
		rep.Notes = ns.notes(ctx)
		for _, n := range rep.Notes {
			fmt.Fprintf(stdout, "note: %s\n", n)
		}
	}
	if cfg.jsonPath != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(cfg.jsonPath, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if failed {
		return errPhaseFailed
	}
	return nil
}

func printResult(w io.Writer, r *result) {
	fmt.Fprintf(w, "%-4s %3d clients  ", r.Op, r.Clients)
	if r.Error != "" {
		fmt.Fprintf(w, "FAILED: %s\n", r.Error)
		return
	}
	fmt.Fprintf(w, "%8.0f ops/s  p50 %6.2f ms  p99 %7.2f ms  max %7.1f ms  errors %d  CPU %% of a core: generator %s, servers %s\n",
		r.Rate, r.P50Ms, r.P99Ms, r.MaxMs, r.Errors, formatPercent(r.GeneratorCPU), formatPercent(r.ServerCPU))
	if r.generatorBound() {
		fmt.Fprintln(w, "          warning: the generator used more CPU than the servers: read the figures as a lower bound")
	}
}

func formatPercent(p *float64) string {
	if p == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.0f", *p)
}

// generatorBound says whether the generator used more CPU than the servers.
func (r *result) generatorBound() bool {
	return r.GeneratorCPU != nil && r.ServerCPU != nil && *r.GeneratorCPU > *r.ServerCPU
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// opIndex orders ops in the comparison (put before get).
func opIndex(op string) int { return slices.Index([]string{opPut, opGet}, op) }
