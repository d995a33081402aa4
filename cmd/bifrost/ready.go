package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// readiness is what /healthz reports: not ready, with what the process waits
// for, until waitReady saw its probe succeed once.
type readiness struct {
	mu      sync.Mutex
	ready   bool
	waiting string
}

func newReadiness(initial string) *readiness { return &readiness{waiting: initial} }

// check is the /healthz answer: nil once ready.
func (r *readiness) check() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ready {
		return nil
	}
	return errors.New("not ready: waiting for " + r.waiting)
}

func (r *readiness) set(ready bool, waiting string) {
	r.mu.Lock()
	r.ready, r.waiting = ready, waiting
	r.mu.Unlock()
}

// readyProbeTimeout bounds one probe; readyRetry spaces the probes.
const (
	readyProbeTimeout = time.Second
	readyRetry        = 20 * time.Millisecond
	readyLogEvery     = 5 * time.Second
)

// waitReady runs probe until it succeeds (then logs "ready" once, with the
// time since start) or ctx ends. While it fails, /healthz names what it
// waits for, and the log says so a second after start and every 5 s after.
func waitReady(ctx context.Context, log *slog.Logger, r *readiness, start time.Time, probe func(context.Context) error) error {
	nextLog := start.Add(time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, readyProbeTimeout)
		err := probe(pctx)
		cancel()
		if err == nil {
			r.set(true, "")
			log.Info("ready", "after", time.Since(start).Round(time.Millisecond).String())
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.set(false, err.Error())
		if now := time.Now(); !now.Before(nextLog) {
			log.Info("not ready yet", "waiting_for", err.Error(), "after", now.Sub(start).Round(time.Millisecond).String())
			nextLog = now.Add(readyLogEvery)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(readyRetry):
		}
	}
}
