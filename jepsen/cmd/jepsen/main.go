// Command jepsen runs Bifrost's consistency harness: real bifrost processes
// in network namespaces, a workload, faults on a seeded schedule, and the
// checkers. It needs root (namespaces, iptables).
//
//	jepsen -workload register -nemesis partition-halves,kill -duration 60s
//	jepsen -suite ci                  # the short profile; exit 1 if any run is not valid
//	jepsen -bugzoo bugzoo_stale_read  # build bifrost with a fault first
//	jepsen clean                      # remove what a crashed run left
//
// Exit status: 0 every run valid, 1 a run invalid or undecided, 2 a bad
// flag or a harness failure.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/bifrost-mq/bifrost/jepsen"
	"github.com/bifrost-mq/bifrost/jepsen/cluster"
	"github.com/bifrost-mq/bifrost/jepsen/history"
	"github.com/bifrost-mq/bifrost/jepsen/nemesis"
	"github.com/bifrost-mq/bifrost/jepsen/suite"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	workload, nemeses, suite, only, bin, tags, out string
	duration                                       time.Duration
	seed                                           uint64
	stores, frontends, concurrency                 int
	keep, verbose                                  bool
	checkTimeout, faultEvery                       time.Duration
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "clean" {
		removed, err := cluster.CleanLeftovers(context.Background())
		for _, r := range removed {
			fmt.Fprintln(stdout, "removed", r)
		}
		if err != nil {
			fmt.Fprintln(stderr, "jepsen clean:", err)
			return 2
		}
		return 0
	}
	if len(args) > 0 && args[0] == "check" {
		return check(args[1:], stdout, stderr)
	}
	var o options
	fs := flag.NewFlagSet("jepsen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.workload, "workload", "register", strings.Join(suite.Workloads, ", "))
	fs.StringVar(&o.nemeses, "nemesis", "partition-halves,kill", "comma-separated nemeses, or none: "+strings.Join(nemesis.Names, ", "))
	fs.StringVar(&o.suite, "suite", "", "run a profile instead of one test: ci or full")
	fs.StringVar(&o.only, "only", "", "with -suite: run only the profile's runs of these comma-separated workloads")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "how long the clients run")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of the schedule and the operations (0: a random one, printed)")
	fs.IntVar(&o.stores, "stores", 3, "storage nodes")
	fs.IntVar(&o.frontends, "frontends", 0, "MQTT frontends, each in its own namespace")
	fs.IntVar(&o.concurrency, "concurrency", 0, "client workers (default 2 per store)")
	fs.StringVar(&o.bin, "bin", "", "bifrost binary (default: go build ./cmd/bifrost, with -bugzoo tags)")
	fs.StringVar(&o.tags, "bugzoo", "", "build tags of a bug-zoo fault to build in (e.g. bugzoo_stale_read)")
	fs.StringVar(&o.out, "out", "jepsen-results", "directory that gets one directory per run")
	fs.BoolVar(&o.keep, "keep-data", false, "keep the nodes' data directories")
	fs.BoolVar(&o.verbose, "v", false, "log the harness's events")
	fs.DurationVar(&o.faultEvery, "fault-every", 0, "mean quiet time between faults (default 4s; 1s for split-merge-move alone)")
	fs.DurationVar(&o.checkTimeout, "check-timeout", 2*time.Minute, "porcupine's time limit per history")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "jepsen: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := cluster.RequireTools(); err != nil {
		fmt.Fprintln(stderr, "jepsen:", err)
		return 2
	}
	// Ctrl-C or SIGTERM cancels the run, which then removes its cluster.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if removed, err := cluster.CleanLeftovers(ctx); err == nil && len(removed) > 0 {
		fmt.Fprintf(stderr, "jepsen: removed %d leftovers of crashed runs\n", len(removed))
	}

	var specs []suite.Spec
	var err error
	if o.suite != "" {
		var ok bool
		if specs, ok = suite.Suites[o.suite]; !ok {
			fmt.Fprintf(stderr, "jepsen: unknown suite %q (ci, full)\n", o.suite)
			return 2
		}
		if o.only != "" {
			if specs, err = suite.Only(specs, strings.Split(o.only, ",")); err != nil {
				fmt.Fprintln(stderr, "jepsen:", err)
				return 2
			}
		}
	} else {
		if o.only != "" {
			fmt.Fprintln(stderr, "jepsen: -only needs -suite")
			return 2
		}
		var nems []string
		if o.nemeses != "none" && o.nemeses != "" {
			nems = strings.Split(o.nemeses, ",")
		}
		every := o.faultEvery
		if every == 0 && (o.nemeses == "split-merge-move" || o.nemeses == "split-merge-move-mqtt") {
			every = time.Second
		}
		specs = []suite.Spec{{Workload: o.workload, Nemeses: nems, Duration: o.duration, Stores: o.stores, Frontends: o.frontends, FaultEvery: every}}
	}
	var bin string
	bin, err = binary(ctx, o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "jepsen:", err)
		return 2
	}
	if o.seed == 0 {
		o.seed = rand.Uint64() % 1_000_000_000
	}
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	code := 0
	begin := time.Now()
	for i, spec := range specs {
		seed := o.seed + uint64(i)
		cfg, err := suite.Configure(spec, suite.Options{Out: o.out, Binary: bin, BuildTags: o.tags, Seed: seed,
			Concurrency: o.concurrency, CheckTimeout: o.checkTimeout, KeepData: o.keep, Logger: logger})
		if err != nil {
			fmt.Fprintln(stderr, "jepsen:", err)
			return 2
		}
		fmt.Fprintf(stdout, "=== %s × %s for %v, seed %d, %d stores → %s\n", spec.Workload, spec.Label(), spec.Duration, seed, cfg.Stores, cfg.Dir)
		res, err := jepsen.Run(ctx, cfg)
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "jepsen: interrupted; the cluster is removed")
			return 2
		}
		if err != nil {
			fmt.Fprintln(stderr, "jepsen: run failed:", err)
			code = 2
			continue
		}
		report(stdout, res)
		if res.Valid != jepsen.Valid && code == 0 {
			code = 1
		}
	}
	fmt.Fprintf(stdout, "=== %d runs in %v: exit %d\n", len(specs), time.Since(begin).Round(time.Second), code)
	return code
}

func report(w io.Writer, res *jepsen.Results) {
	fmt.Fprintf(w, "    ops: %d ok, %d fail, %d info; %d faults; took %s\n",
		res.Ops["ok"], res.Ops["fail"], res.Ops["info"], len(res.Faults), res.Duration)
	// By name, the checkers that did not find the run valid last, and
	// named again on the verdict's line: a log cut to its tail (CI's)
	// still says which one.
	names := make([]string, 0, len(res.Checkers))
	for name := range res.Checkers {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		vi, vj := res.Checkers[names[i]].Valid == jepsen.Valid, res.Checkers[names[j]].Valid == jepsen.Valid
		if vi != vj {
			return vi
		}
		return names[i] < names[j]
	})
	var failed []string
	for _, name := range names {
		r := res.Checkers[name]
		fmt.Fprintf(w, "    %-13s %-8s %s\n", name, r.Valid, r.Summary)
		if r.Valid != jepsen.Valid {
			failed = append(failed, name)
		}
	}
	verdict := strings.ToUpper(string(res.Valid))
	if len(failed) > 0 {
		verdict += " (" + strings.Join(failed, ", ") + ")"
	}
	fmt.Fprintf(w, "    => %s\n", verdict)
}

// binary returns -bin, or builds bifrost (with the bug-zoo tags) into the
// results directory.
func binary(ctx context.Context, o options, stderr io.Writer) (string, error) {
	if o.bin != "" {
		return filepath.Abs(o.bin)
	}
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return "", fmt.Errorf("no -bin and not inside the bifrost module to build one: %v", err)
	}
	out, err := filepath.Abs(filepath.Join(o.out, "bin", "bifrost"+strings.ReplaceAll("-"+o.tags, ",", "-")))
	if err != nil {
		return "", err
	}
	args := []string{"build", "-o", out}
	if o.tags != "" {
		args = append(args, "-tags", o.tags)
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/bifrost")...)
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	cmd.Stdout, cmd.Stderr = stderr, stderr
	fmt.Fprintf(stderr, "jepsen: building %s\n", out)
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build: %w", err)
	}
	return out, nil
}

// check runs a workload's checkers again on a run directory's history
// (jepsen check -workload register DIR), writing nothing but the checkers'
// files into DIR.
func check(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("jepsen check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	workload := fs.String("workload", "register", strings.Join(suite.Workloads, ", "))
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: jepsen check -workload NAME RUN_DIR")
		return 2
	}
	dir := fs.Arg(0)
	h, err := history.ReadFile(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		fmt.Fprintln(stderr, "jepsen check:", err)
		return 2
	}
	cfg, err := suite.Configure(suite.Spec{Workload: *workload}, suite.Options{Out: os.TempDir(), Binary: "unused"})
	if err != nil {
		fmt.Fprintln(stderr, "jepsen check:", err)
		return 2
	}
	code := 0
	for _, ch := range cfg.Workload.Checkers() {
		r := ch.Check(context.Background(), h, dir)
		fmt.Fprintf(stdout, "%-13s %-8s %s\n", ch.Name(), r.Valid, r.Summary)
		if r.Valid != jepsen.Valid {
			code = 1
		}
	}
	return code
}
