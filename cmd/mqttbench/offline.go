package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// runOffline measures a broker's queues for disconnected persistent
// sessions in two phases. Enqueue: the sessions subscribe (clean session 0)
// and disconnect, then the publishers publish cfg.offlineMessages QoS 1
// messages to each, as fast as their in-flight windows allow; its rate is
// the messages acknowledged per second from the first publish to the last
// PUBACK. Drain: every session reconnects (clean session 0) and receives
// what was queued; its rate is the messages received per second from the
// start of the reconnects to the last message. Every message is expected
// exactly once: the lost and the duplicated are counted. The sessions are
// discarded afterwards.
func runOffline(ctx context.Context, cfg *config, r *result) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l := load{publishers: cfg.offlinePublishers, topics: cfg.offlineSessions, perTopic: 1, qos: 1, persistent: true}
	fs := newFlows(cfg, r.Scenario, l)
	defer closeFlows(cfg, r.Scenario, fs, l)
	if err := dialSubscribers(ctx, cfg, r.Scenario, fs, l); err != nil {
		return err
	}
	// Offline: the broker has closed each connection, so every message
	// from here on is queued.
	err := forSubscribers(ctx, fs, l, func(_ int, s *subscriber) error { return s.c.disconnectAndWait() })
	if err != nil {
		return fmt.Errorf("subscribers disconnecting: %w", err)
	}
	if err := dialPublishers(ctx, cfg, r.Scenario, fs, l); err != nil {
		return err
	}

	var (
		failOnce sync.Once
		failure  error
		stopping atomic.Bool
	)
	fail := func(err error) {
		if err != nil && !stopping.Load() {
			failOnce.Do(func() { failure = err; cancel() })
		}
	}
	var readers, writers sync.WaitGroup
	// stop ends the readers (and with them the scenario's goroutines).
	stop := func() {
		stopping.Store(true)
		for _, f := range fs {
			f.pub.c.nc.SetReadDeadline(time.Now())
			for _, s := range f.subs {
				if s.c != nil {
					s.c.nc.SetReadDeadline(time.Now())
				}
			}
		}
		writers.Wait()
		readers.Wait()
	}
	// abort ends the scenario early and returns the failure that did, if
	// one did.
	abort := func() error {
		cancel() // a publisher still waiting for PUBACKs
		stop()
		return failure
	}
	defer abort()

	// Enqueue.
	messages := uint64(cfg.offlineMessages)
	var total uint64
	for _, f := range fs {
		f.pub.limit = uint64(len(f.topics)) * messages
		f.pub.acked = make(chan struct{})
		total += f.pub.limit
	}
	cpu0 := cfg.sampleCPU()
	t0 := now()
	for _, f := range fs {
		// No subscriber receives yet: no delivery window.
		writers.Go(func() { fail(f.pub.run(ctx, math.MaxUint64)) })
		readers.Go(func() { fail(f.pub.readAcks()) })
	}
	var acked uint64
	err = waitProgress(ctx, cfg.stallTimeout, func() (uint64, bool) {
		acked = 0
		done := true
		for _, f := range fs {
			n := f.pub.acks.Load()
			acked += n
			done = done && n >= f.pub.limit
		}
		return acked, done
	})
	if err != nil {
		if failure := abort(); failure != nil {
			return failure
		}
		return fmt.Errorf("enqueue: %d of %d messages acknowledged: %w", acked, total, err)
	}
	var t1 time.Duration
	for _, f := range fs {
		<-f.pub.acked
		t1 = max(t1, f.pub.lastAck)
	}

	// Drain.
	for _, f := range fs {
		for _, s := range f.subs {
			s.c = nil
			s.seen = make([]uint64, (messages+63)/64)
		}
	}
	t2 := now()
	err = forSubscribers(ctx, fs, l, func(i int, s *subscriber) error {
		c, err := dialSession(ctx, cfg.addr, cfg.clientID(r.Scenario, "sub", i), 0, false)
		if err != nil {
			return err
		}
		s.c = c
		readers.Go(func() { fail(s.run(t2, math.MaxInt64)) })
		return nil
	})
	if err != nil {
		if failure := abort(); failure != nil {
			return failure
		}
		return fmt.Errorf("subscribers reconnecting: %w", err)
	}
	var received uint64
	err = waitProgress(ctx, cfg.stallTimeout, func() (uint64, bool) {
		received = 0
		for _, f := range fs {
			for _, s := range f.subs {
				received += s.first.Load()
			}
		}
		return received, received >= total
	})
	cpu1 := cfg.sampleCPU()
	stop()
	if failure != nil {
		return failure
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// A drain that stalled (err) leaves messages lost, counted below.
	var t3 time.Duration
	var first int64
	for _, f := range fs {
		r.Sent += int64(f.pub.acks.Load())
		for _, s := range f.subs {
			r.Received += int64(s.received)
			r.Duplicated += int64(s.duplicated)
			first += int64(s.first.Load())
			t3 = max(t3, time.Duration(s.lastFirst.Load()))
		}
	}
	r.Lost = r.Sent - first
	r.Rate = float64(total) / (t1 - t0).Seconds()
	if t3 > t2 {
		r.DrainRate = float64(first) / (t3 - t2).Seconds()
	}
	r.setCPU(cpu0, cpu1)
	if err != nil && first == 0 {
		return fmt.Errorf("drain: %w", err)
	}
	return nil
}

// waitProgress polls progress until it reports done, ctx ends, or the count
// it reports has not grown for timeout.
func waitProgress(ctx context.Context, timeout time.Duration, progress func() (count uint64, done bool)) error {
	last, since := uint64(0), time.Now()
	for {
		n, done := progress()
		switch {
		case done:
			return nil
		case n != last:
			last, since = n, time.Now()
		case time.Since(since) > timeout:
			return fmt.Errorf("no progress in %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
