package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	base := []string{"--system", "bifrost", "--endpoints", "127.0.0.1:1,127.0.0.1:2"}
	cfg, err := parseFlags(base, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.name != "bifrost" || cfg.api != apiKV || len(cfg.endpoints) != 2 || cfg.keys != 10000 || cfg.valueSize != 100 {
		t.Errorf("defaults: %+v", cfg)
	}
	if want := []int{1, 16, 64}; !equalInts(cfg.clients, want) {
		t.Errorf("clients %v, want %v", cfg.clients, want)
	}
	if want := []string{opPut, opGet}; strings.Join(cfg.ops, ",") != strings.Join(want, ",") {
		t.Errorf("ops %v, want %v", cfg.ops, want)
	}
	cfg, err = parseFlags(append(base, "--clients", " 4, 8 ", "--pids", "10,11", "--ops", "get"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !equalInts(cfg.clients, []int{4, 8}) || !equalInts(cfg.pids, []int{10, 11}) || len(cfg.ops) != 1 {
		t.Errorf("lists: clients %v pids %v ops %v", cfg.clients, cfg.pids, cfg.ops)
	}

	bad := []struct {
		args []string
		want string
	}{
		{[]string{"--endpoints", "a:1"}, "--system"},
		{[]string{"--system", "redis", "--endpoints", "a:1"}, "--system"},
		{[]string{"--system", "etcd"}, "--endpoints"},
		{[]string{"--system", "etcd", "--endpoints", "http://a:1"}, "not host:port"},
		{[]string{"--system", "etcd", "--endpoints", "a"}, "not host:port"},
		{[]string{"--system", "etcd", "--endpoints", "a:1", "--api", "router"}, "bifrost only"},
		{append(base, "--api", "rest"), "--api"},
		{append(base, "--clients", "0"), "--clients"},
		{append(base, "--clients", "x"), "not a number"},
		{append(base, "--clients", ""), "at least one count"},
		{append(base, "--ops", "scan"), "unknown operation"},
		{append(base, "--duration", "0s"), "--duration"},
		{append(base, "--warmup", "-1s"), "--warmup"},
		{append(base, "--keys", "0"), "--keys"},
		{append(base, "--value", "0"), "--value"},
		{append(base, "--pids", "-3"), "--pids"},
		{append(base, "--preload-clients", "0"), "--preload-clients"},
		{append(base, "extra"), "unexpected argument"},
	}
	for _, tc := range bad {
		_, err := parseFlags(tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one naming %q", tc.args, err, tc.want)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		values []time.Duration
		q      float64
		want   time.Duration
	}{
		{nil, 0.5, 0},
		{ms(7), 0.5, 7 * time.Millisecond},
		{ms(7), 0.99, 7 * time.Millisecond},
		{ms(1, 2), 0.5, 1 * time.Millisecond}, // nearest rank: ceil(0.5*2) = 1st
		{ms(1, 2, 3), 0.5, 2 * time.Millisecond},
		{ms(1, 2, 3, 4), 0.99, 4 * time.Millisecond},
		{hundred, 0.50, 50 * time.Millisecond},
		{hundred, 0.99, 99 * time.Millisecond},
		{hundred, 1, 100 * time.Millisecond},
		{hundred, 0, 1 * time.Millisecond},
	} {
		if got := percentile(tc.values, tc.q); got != tc.want {
			t.Errorf("percentile(%v of %d values) = %v, want %v", tc.q, len(tc.values), got, tc.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	r := &result{}
	// Unsorted on purpose: summarize sorts.
	summarize(r, []time.Duration{4 * time.Millisecond, time.Millisecond, 3 * time.Millisecond, 2 * time.Millisecond}, 2*time.Second)
	if r.Ops != 4 || r.Rate != 2 {
		t.Errorf("ops %d rate %v, want 4 and 2/s", r.Ops, r.Rate)
	}
	if r.P50Ms != 2 || r.P99Ms != 4 || r.MeanMs != 2.5 || r.MaxMs != 4 {
		t.Errorf("p50 %v p99 %v mean %v max %v, want 2 4 2.5 4", r.P50Ms, r.P99Ms, r.MeanMs, r.MaxMs)
	}
	empty := &result{}
	summarize(empty, nil, time.Second)
	if empty.Ops != 0 || empty.Rate != 0 || empty.P99Ms != 0 {
		t.Errorf("empty window: %+v", empty)
	}
}

func TestParseStatCPU(t *testing.T) {
	// utime 150 and stime 50 ticks (fields 14 and 15), a command name with
	// a space and a parenthesis.
	stat := "123 (etcd (x) y) S 1 123 123 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 8 0 100 0 0"
	got, err := parseStatCPU(stat)
	if err != nil || got != 2*time.Second {
		t.Errorf("parseStatCPU = %v, %v; want 2s", got, err)
	}
	if _, err := parseStatCPU("123 etcd S"); err == nil {
		t.Error("no command name: want an error")
	}
	if _, err := parseStatCPU("123 (etcd) S 1 2"); err == nil {
		t.Error("short line: want an error")
	}
}

func TestSetCPU(t *testing.T) {
	at := time.Now()
	a := cpuSample{at: at, self: time.Second, servers: 2 * time.Second, serverOK: true}
	b := cpuSample{at: at.Add(2 * time.Second), self: 2 * time.Second, servers: 5 * time.Second, serverOK: true}
	r := &result{}
	r.setCPU(a, b)
	if r.GeneratorCPU == nil || *r.GeneratorCPU != 50 || r.ServerCPU == nil || *r.ServerCPU != 150 {
		t.Fatalf("generator %v servers %v, want 50 and 150", r.GeneratorCPU, r.ServerCPU)
	}
	if r.generatorBound() {
		t.Error("generator at 50% and servers at 150%: not generator-bound")
	}
	b.serverOK = false
	r = &result{}
	r.setCPU(a, b)
	if r.ServerCPU != nil {
		t.Error("a server sample failed: its CPU must be absent, not a guess")
	}
}

func reportOf(name string, results ...*result) *report {
	return &report{Name: name, Results: results}
}

func TestCompareRowsAndTarget(t *testing.T) {
	etcd := reportOf("etcd",
		&result{Op: opGet, Clients: 16, Rate: 1000},
		&result{Op: opPut, Clients: 64, Rate: 400},
		&result{Op: opPut, Clients: 16, Rate: 200},
		&result{Op: opPut, Clients: 1, Rate: 100},
		&result{Op: opGet, Clients: 64, Rate: 1000, Error: "boom"})
	bifrost := reportOf("bifrost",
		&result{Op: opPut, Clients: 16, Rate: 300},
		&result{Op: opPut, Clients: 64, Rate: 400},
		&result{Op: opGet, Clients: 16, Rate: 900},
		&result{Op: opGet, Clients: 64, Rate: 5000},
		&result{Op: opPut, Clients: 1, Rate: 10})
	rs := rows(etcd, bifrost)
	var order []string
	for _, r := range rs {
		order = append(order, (&result{Op: r.op, Clients: r.clients}).phaseKey())
	}
	if got, want := strings.Join(order, " "), "put/1 put/16 put/64 get/16 get/64"; got != want {
		t.Errorf("rows %q, want %q", got, want)
	}
	if x, ok := rs[1].ratio(); !ok || x != 1.5 {
		t.Errorf("put/16 ratio %v %v, want 1.5", x, ok)
	}
	if _, ok := rs[4].ratio(); ok {
		t.Error("get/64 failed on one side: no ratio")
	}
	// get/16 is at 0.9x: not met (put/1 at 0.1x is not a target).
	if met, checked := targetMet(rs); met || !checked {
		t.Errorf("target met=%v checked=%v, want not met", met, checked)
	}
	bifrost.Results[2].Rate = 1000 // get/16 at exactly 1.0x
	if met, _ := targetMet(rows(etcd, bifrost)); !met {
		t.Error("1.0x at every targeted phase: want met")
	}
	if _, checked := targetMet(rows(reportOf("a", &result{Op: opPut, Clients: 1, Rate: 1}), reportOf("b"))); checked {
		t.Error("no targeted phase on both sides: want unchecked")
	}

	var out bytes.Buffer
	printComparison(&out, etcd, bifrost)
	for _, want := range []string{"bifrost/etcd", "1.50x", "etcd get/64 FAILED: boom", "target bifrost >= 1.0x etcd", ": met"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("comparison lacks %q:\n%s", want, out.String())
		}
	}
}

func TestCompareFiles(t *testing.T) {
	dir := t.TempDir()
	if err := runCompare([]string{filepath.Join(dir, "a.json")}, io.Discard); err == nil {
		t.Error("one file: want a usage error")
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := runCompare([]string{filepath.Join(dir, "bad.json"), filepath.Join(dir, "bad.json")}, io.Discard); err == nil {
		t.Error("broken JSON: want an error")
	}
}

// fakeTarget fails the gets of odd keys and counts calls.
type fakeTarget struct{ puts, gets atomic.Int64 }

func (f *fakeTarget) Put(ctx context.Context, key string, value []byte) error {
	f.puts.Add(1)
	return nil
}

func (f *fakeTarget) Get(ctx context.Context, key string) error {
	f.gets.Add(1)
	if key[len(key)-1]%2 == 1 {
		return errors.New("odd key")
	}
	return nil
}

func (f *fakeTarget) PutVia(ctx context.Context, i int, key string, value []byte) error { return nil }
func (f *fakeTarget) Close() error                                                      { return nil }

// TestPhaseTally checks what a phase counts, not how fast: every request in
// the window is either an op or an error, and the preload writes each key.
func TestPhaseTally(t *testing.T) {
	cfg := &config{keys: 10, valueSize: 8, timeout: time.Second, warmup: 10 * time.Millisecond,
		duration: 50 * time.Millisecond, preloadConc: 3, readyWait: time.Second, endpoints: []string{"a:1", "b:2"}}
	f := &fakeTarget{}
	ctx := context.Background()
	if err := waitReady(ctx, cfg, f); err != nil {
		t.Fatal(err)
	}
	if err := preload(ctx, cfg, f); err != nil {
		t.Fatal(err)
	}
	if n := f.puts.Load(); n != 10 {
		t.Errorf("preload wrote %d keys, want 10", n)
	}
	r := runPhase(ctx, cfg, f, opGet, 4)
	if r.Error != "" {
		t.Fatal(r.Error)
	}
	if r.Ops == 0 || r.Errors == 0 || r.FirstError != "odd key" {
		t.Errorf("ops %d errors %d first %q: want both kinds counted", r.Ops, r.Errors, r.FirstError)
	}
	if r.Ops+r.Errors > f.gets.Load() {
		t.Errorf("%d ops and %d errors counted from %d gets", r.Ops, r.Errors, f.gets.Load())
	}
	if r.Clients != 4 || r.Op != opGet || r.GeneratorCPU == nil || r.ServerCPU != nil {
		t.Errorf("phase fields: %+v", r)
	}
}
