package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// dialWidth is how many connections are opened at once when a scenario sets
// up; more would overflow the brokers' listen backlogs, whose SYNs are then
// retried after a second.
const dialWidth = 32

// maxConnectErrors is how many failed cycles in a row end the connect
// scenario.
const maxConnectErrors = 100

// runConnects measures CONNECT/CONNACK/DISCONNECT cycles per second on
// cfg.dialers concurrent dialers. A cycle ends when the broker closes the
// connection after the DISCONNECT, so it is the whole life of a session,
// and it is the broker that closes first: the generator's side of the
// socket does not sit in TIME_WAIT holding an ephemeral port.
func runConnects(ctx context.Context, cfg *config, r *result) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t0 := now() + cfg.warmup
	t1 := t0 + cfg.duration
	type dialer struct {
		cycles uint64
		took   histogram
		err    error
	}
	ds := make([]dialer, cfg.dialers)
	var wg sync.WaitGroup
	for i := range ds {
		d := &ds[i]
		wg.Go(func() {
			failures := 0
			for n := 0; ctx.Err() == nil; n++ {
				begin := now()
				if begin >= t1 {
					return
				}
				err := connectCycle(ctx, cfg.addr, cfg.clientID(r.Scenario, fmt.Sprint(i), n))
				end := now()
				if err != nil {
					if failures++; failures >= maxConnectErrors {
						d.err = fmt.Errorf("%d cycles in a row failed, the last: %w", failures, err)
						cancel()
						return
					}
					continue
				}
				failures = 0
				if end >= t0 && end < t1 {
					d.cycles++
					d.took.record(end - begin)
				}
			}
		})
	}
	var cpu0, cpu1 cpuSample
	if sleepUntil(ctx, t0) {
		cpu0 = cfg.sampleCPU()
		if sleepUntil(ctx, t1) {
			cpu1 = cfg.sampleCPU()
		}
	}
	wg.Wait()
	var took histogram
	var cycles uint64
	for i := range ds {
		if ds[i].err != nil {
			return ds[i].err
		}
		cycles += ds[i].cycles
		took.merge(&ds[i].took)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.Rate = float64(cycles) / cfg.duration.Seconds()
	r.P50Ms = milliseconds(took.quantile(0.50))
	r.P99Ms = milliseconds(took.quantile(0.99))
	r.setCPU(cpu0, cpu1)
	return nil
}

// connectCycle connects, disconnects, and waits for the broker to close.
func connectCycle(ctx context.Context, addr, clientID string) error {
	c, err := dial(ctx, addr, clientID, 0)
	if err != nil {
		return err
	}
	return c.disconnectAndWait()
}

// runIdle measures the broker's resident memory per idle connection: its
// RSS growth while cfg.idle connections (CONNECT done, no subscription, no
// keep-alive) are opened and left alone for cfg.settle.
func runIdle(ctx context.Context, cfg *config, r *result) error {
	if len(cfg.pids) == 0 {
		return errors.New("needs the broker's --pid")
	}
	before, err := cfg.brokerRSS()
	if err != nil {
		return err
	}
	conns := make([]*client, cfg.idle)
	defer func() { disconnectAll(conns) }()
	err = parallel(ctx, cfg.idle, dialWidth, func(i int) error {
		c, err := dial(ctx, cfg.addr, cfg.clientID(r.Scenario, "", i), 0)
		if err != nil {
			return err
		}
		c.in = nil // the generator's own memory stays small too
		conns[i] = c
		return nil
	})
	if err != nil {
		return err
	}
	if !sleepUntil(ctx, now()+cfg.settle) {
		return ctx.Err()
	}
	after, err := cfg.brokerRSS()
	if err != nil {
		return err
	}
	r.RSSBefore, r.RSSAfter = before, after
	r.BytesPerConn = float64(after-before) / float64(cfg.idle)
	return nil
}

// probe checks that the broker connects, subscribes and delivers, to
// persistent sessions too: a QoS 1 message published to a topic of its own
// comes back to a session with clean session 0, which is then discarded. On
// a cluster just started this waits for every part a scenario uses (the
// routes and, for Bifrost, the inbox ranges) to have a leader.
func probe(ctx context.Context, cfg *config) error {
	id := cfg.clientID("probe", "", 0)
	c, err := dialSession(ctx, cfg.addr, id, 0, false)
	if err != nil {
		return err
	}
	defer func() {
		// A session left by a probe that failed here is discarded by the
		// next one, which has the same client ID.
		if d, err := dial(ctx, cfg.addr, id, 0); err == nil {
			d.disconnect()
		}
	}()
	defer c.disconnect()
	if deadline, ok := ctx.Deadline(); ok {
		c.nc.SetDeadline(deadline)
	}
	topic := fmt.Sprintf("mqttbench/%s/probe", cfg.runID)
	if err := c.subscribe(topic, 1); err != nil {
		return err
	}
	if _, err := c.await(packet.SUBACK); err != nil {
		return err
	}
	payload := make([]byte, stampSize)
	if err := c.send(&packet.Publish{Topic: topic, QoS: 1, PacketID: 1, Payload: payload}); err != nil {
		return err
	}
	if err := c.flush(); err != nil {
		return err
	}
	// The PUBACK may come before or after the message.
	p, err := c.await(packet.PUBLISH)
	if err != nil {
		return err
	}
	if err := c.send(&packet.Puback{PacketID: p.(*packet.Publish).PacketID}); err != nil {
		return err
	}
	return c.flush()
}

// waitReady probes the broker until it answers, for a broker that has just
// been started.
func waitReady(ctx context.Context, cfg *config) error {
	deadline := time.Now().Add(cfg.readyTimeout)
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := probe(pctx, cfg)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("broker at %s not ready after %v: %w", cfg.addr, cfg.readyTimeout, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// disconnectAll disconnects every non-nil client, a few at a time.
func disconnectAll(cs []*client) {
	parallel(context.Background(), len(cs), dialWidth, func(i int) error {
		if cs[i] != nil {
			cs[i].disconnect()
		}
		return nil
	})
}

// parallel calls fn(0), ..., fn(n-1) on at most width goroutines and
// returns the first error (the calls not yet started are then skipped), or
// ctx's.
func parallel(ctx context.Context, n, width int, fn func(i int) error) error {
	var (
		next   atomic.Int64
		failed atomic.Bool
		once   sync.Once
		first  error
		wg     sync.WaitGroup
	)
	for range min(width, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || failed.Load() || ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					failed.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// sleepUntil sleeps until the generator's clock reads t; false if ctx ended
// first.
func sleepUntil(ctx context.Context, t time.Duration) bool {
	timer := time.NewTimer(t - now())
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
