package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// target is one system under load. Its methods are safe for concurrent use.
type target interface {
	Put(ctx context.Context, key string, value []byte) error
	// Get reads key linearizably.
	Get(ctx context.Context, key string) error
	// PutVia writes key through the i-th endpoint only (the readiness check).
	PutVia(ctx context.Context, i int, key string, value []byte) error
	Close() error
}

// keyName is the i-th key of the key space: fixed width, so every key has
// the same size on both systems.
func keyName(i int) string { return fmt.Sprintf("kvbench-%08d", i) }

// waitReady waits until a put through every endpoint succeeds.
func waitReady(ctx context.Context, cfg *config, t target) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.readyWait)
	defer cancel()
	value := make([]byte, cfg.valueSize)
	for i := range cfg.endpoints {
		for {
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
			err := t.PutVia(rctx, i, "kvbench-ready", value)
			rcancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("endpoint %s did not take a put within %v: %w", cfg.endpoints[i], cfg.readyWait, err)
			}
			sleepCtx(ctx, 200*time.Millisecond)
		}
	}
	return nil
}

// preload writes every key of the key space once, so that every get finds
// a value of the size the puts write.
func preload(ctx context.Context, cfg *config, t target) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, cfg.preloadConc)
	for w := range cfg.preloadConc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			value := make([]byte, cfg.valueSize)
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.keys || ctx.Err() != nil {
					return
				}
				_, _ = rand.Read(value)
				var err error
				for attempt := 0; attempt < 5; attempt++ {
					rctx, cancel := context.WithTimeout(ctx, cfg.timeout)
					err = t.Put(rctx, keyName(i), value)
					cancel()
					if err == nil || ctx.Err() != nil {
						break
					}
				}
				if err != nil {
					errs[w] = fmt.Errorf("preload %s: %w", keyName(i), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// worker is one client's tally of a window.
type worker struct {
	latencies []time.Duration
	errors    int64
	firstErr  error
}

// runPhase runs n clients doing op for warm-up plus window and reports the
// window. Each client has one request in flight.
func runPhase(ctx context.Context, cfg *config, t target, op string, n int) *result {
	r := &result{Op: op, Clients: n}
	workers := make([]*worker, n)
	var measuring, stopping atomic.Bool
	var wg sync.WaitGroup
	for w := range n {
		wk := &worker{latencies: make([]time.Duration, 0, 1<<14)}
		workers[w] = wk
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			value := make([]byte, cfg.valueSize)
			_, _ = rand.Read(value)
			for !stopping.Load() && ctx.Err() == nil {
				key := keyName(rng.IntN(cfg.keys))
				rctx, cancel := context.WithTimeout(ctx, cfg.timeout)
				start := time.Now()
				var err error
				if op == opPut {
					value[0]++ // every put writes a new value
					err = t.Put(rctx, key, value)
				} else {
					err = t.Get(rctx, key)
				}
				d := time.Since(start)
				cancel()
				if !measuring.Load() || stopping.Load() {
					continue
				}
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					wk.errors++
					if wk.firstErr == nil {
						wk.firstErr = err
					}
					continue
				}
				wk.latencies = append(wk.latencies, d)
			}
		}()
	}
	sleepCtx(ctx, cfg.warmup)
	before := sampleCPU(cfg.pids)
	measuring.Store(true)
	sleepCtx(ctx, cfg.duration)
	stopping.Store(true)
	after := sampleCPU(cfg.pids)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		r.Error = err.Error()
		return r
	}
	var all []time.Duration
	for _, wk := range workers {
		all = append(all, wk.latencies...)
		r.Errors += wk.errors
		if wk.firstErr != nil && r.FirstError == "" {
			r.FirstError = wk.firstErr.Error()
		}
	}
	window := after.at.Sub(before.at)
	summarize(r, all, window)
	r.setCPU(before, after)
	if r.Ops == 0 {
		r.Error = fmt.Sprintf("no request completed in the window (%d errors; first: %s)", r.Errors, r.FirstError)
	}
	return r
}

// summarize fills in the rate and latency figures from the latencies of the
// requests that completed within a window of the given length.
func summarize(r *result, latencies []time.Duration, window time.Duration) {
	r.Ops = int64(len(latencies))
	if window > 0 {
		r.Rate = float64(r.Ops) / window.Seconds()
	}
	if len(latencies) == 0 {
		return
	}
	slices.Sort(latencies)
	var sum time.Duration
	for _, d := range latencies {
		sum += d
	}
	r.P50Ms = milliseconds(percentile(latencies, 0.50))
	r.P99Ms = milliseconds(percentile(latencies, 0.99))
	r.MeanMs = milliseconds(sum / time.Duration(len(latencies)))
	r.MaxMs = milliseconds(latencies[len(latencies)-1])
}

// percentile is the nearest-rank q-quantile of sorted (ascending): the
// smallest value with at least a fraction q of the values at or below it;
// 0 for none.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func milliseconds(d time.Duration) float64 { return d.Seconds() * 1000 }

// cpuSample is a reading of the CPU this process and the servers have used.
type cpuSample struct {
	at       time.Time
	self     time.Duration
	servers  time.Duration
	serverOK bool
}

func sampleCPU(pids []int) cpuSample {
	s := cpuSample{at: time.Now(), self: selfCPU()}
	if len(pids) == 0 {
		return s
	}
	s.serverOK = true
	for _, pid := range pids {
		d, err := processCPU(pid)
		if err != nil {
			s.serverOK = false
			break
		}
		s.servers += d
	}
	return s
}

// setCPU sets the CPU use between two samples, in percent of one core.
func (r *result) setCPU(a, b cpuSample) {
	wall := b.at.Sub(a.at)
	if wall <= 0 {
		return
	}
	percent := func(d time.Duration) *float64 {
		p := 100 * d.Seconds() / wall.Seconds()
		return &p
	}
	r.GeneratorCPU = percent(b.self - a.self)
	if a.serverOK && b.serverOK {
		r.ServerCPU = percent(b.servers - a.servers)
	}
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// processCPU is the CPU (user and system) process pid has used, from
// /proc/<pid>/stat (fields 14 and 15, in USER_HZ = 100 ticks per second).
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime and stime of a /proc/<pid>/stat line. The
// command name (field 2) is in parentheses and may hold spaces and
// parentheses itself, so fields are counted from the last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: cpu time %q: %w", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / 100), nil
}
