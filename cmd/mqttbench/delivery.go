package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// stallTimeout is how long a publisher waits for its window to open (its
// subscribers to receive, or the broker to PUBACK) before the run fails.
const stallTimeout = 10 * time.Second

// drainTimeout bounds the wait, after the publishers stop, for what they
// published to arrive.
const drainTimeout = 5 * time.Second

// flow is one topic with its publisher and subscribers. The publisher keeps
// at most window messages published but not yet received by every
// subscriber: a closed loop, so that a QoS 0 publisher cannot outrun the
// broker into dropping messages or into queues without bound (which would
// measure the queue, not the broker). Latency is then that of a saturated
// broker with a bounded queue: by Little's law about window × topics /
// throughput, so compare latencies of runs with the same window.
type flow struct {
	topic string
	pub   *publisher
	subs  []*subscriber
	// wake is poked (never blocking) when a subscriber makes progress, for
	// a publisher waiting on its window.
	wake chan struct{}
}

// delivered is the highest sequence number every subscriber has reached.
func (f *flow) delivered() uint64 {
	low := uint64(math.MaxUint64)
	for _, s := range f.subs {
		low = min(low, s.reached.Load())
	}
	return low
}

type subscriber struct {
	c *client
	f *flow
	// reached is the highest sequence number received; messages of one
	// publisher arrive in order, so a message lost in between (QoS 0) does
	// not hold the window shut.
	reached atomic.Uint64

	// Owned by run until it returns.
	received uint64 // messages
	inWindow uint64 // messages received within the measurement window
	latency  histogram
	ack      packet.Puback
}

// run receives until the connection fails or its read deadline passes.
// Latency is recorded for messages published within [t0, t1), throughput
// counts messages received within it.
func (s *subscriber) run(t0, t1 time.Duration) error {
	var last uint64
	s.c.streaming()
	s.c.beforeRead = func() error {
		if last != s.reached.Load() {
			s.reached.Store(last)
			select {
			case s.f.wake <- struct{}{}:
			default:
			}
		}
		return s.c.flush()
	}
	for {
		p, err := s.c.next()
		if err != nil {
			return err
		}
		msg, ok := p.(*packet.Publish)
		if !ok {
			continue
		}
		at := now()
		seq, sent, ok := readStamp(msg.Payload)
		if !ok {
			return fmt.Errorf("%s: a payload of %d bytes, too short for a stamp", msg.Topic, len(msg.Payload))
		}
		s.received++
		if at >= t0 && at < t1 {
			s.inWindow++
		}
		if sent >= t0 && sent < t1 {
			s.latency.record(at - sent)
		}
		last = max(last, seq)
		if msg.QoS > 0 {
			s.ack.PacketID = msg.PacketID
			if err := s.c.send(&s.ack); err != nil {
				return err
			}
		}
	}
}

type publisher struct {
	c   *client
	f   *flow
	msg packet.Publish
	// tokens holds one token per QoS 1 publish the broker may still have
	// unacknowledged: a publish takes one, a PUBACK gives it back. Nil for
	// QoS 0.
	tokens chan struct{}
	// sent is the last sequence number published; read after run returns.
	sent uint64
}

// run publishes until ctx ends, at most window messages ahead of the
// slowest subscriber.
func (p *publisher) run(ctx context.Context, window uint64) error {
	stall := time.NewTimer(stallTimeout)
	stall.Stop()
	// wait flushes what is gathered (the broker must see it for the window
	// to open) and receives from ready; false when ctx ended or the stall
	// timeout passed (then with an error).
	wait := func(ready <-chan struct{}, what string) (bool, error) {
		if err := p.c.flush(); err != nil {
			return false, err
		}
		stall.Reset(stallTimeout)
		defer stall.Stop()
		select {
		case <-ready:
			return true, nil
		case <-ctx.Done():
			return false, nil
		case <-stall.C:
			return false, fmt.Errorf("%s: no %s in %v", p.f.topic, what, stallTimeout)
		}
	}
	// Once blocked, the publisher waits for a quarter of a window to open
	// before it goes on, so that it writes in batches rather than a
	// message per system call as each acknowledgement or delivery frees
	// one place (which would make the generator, not the broker, the
	// bottleneck).
	var (
		low    uint64 // p.f.delivered(), as last seen
		resume = window - window/4
		credit int // tokens taken and not yet used
		batch  = max(1, cap(p.tokens)/4)
	)
	for ctx.Err() == nil {
		seq := p.sent + 1
		if seq-low > window {
			if low = p.f.delivered(); seq-low > window {
				for seq-low > resume {
					if ok, err := wait(p.f.wake, "delivery"); !ok {
						return err
					}
					low = p.f.delivered()
				}
			}
		}
		if p.tokens != nil {
			for credit == 0 {
				select {
				case <-p.tokens:
					credit++
				default:
					for credit < batch {
						if ok, err := wait(p.tokens, "PUBACK"); !ok {
							return err
						}
						credit++
					}
				}
			}
			credit--
			p.msg.PacketID = uint16(seq%math.MaxUint16) + 1
		}
		putStamp(p.msg.Payload, seq, now())
		if err := p.c.send(&p.msg); err != nil {
			return err
		}
		p.sent = seq
		if len(p.c.out) >= flushAt {
			if err := p.c.flush(); err != nil {
				return err
			}
		}
	}
	return p.c.flush()
}

// readAcks returns a token per PUBACK until the connection fails or its
// read deadline passes.
func (p *publisher) readAcks() error {
	p.c.streaming()
	for {
		pk, err := p.c.next()
		if err != nil {
			return err
		}
		if pk.Type() == packet.PUBACK {
			select {
			case p.tokens <- struct{}{}:
			default: // an acknowledgement of nothing outstanding
			}
		}
	}
}

// runDelivery measures flows topics, each with one publisher and perFlow
// subscribers, all at qos: the messages received per second, the latency
// from publish to receipt, and what was lost. With persistent, the
// subscribers' sessions are persistent (clean session 0), so every message
// goes through the broker's durable queue; they are discarded afterwards.
func runDelivery(ctx context.Context, cfg *config, r *result, flows, perFlow int, qos byte, persistent bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fs := make([]*flow, flows)
	for i := range fs {
		fs[i] = &flow{
			topic: fmt.Sprintf("mqttbench/%s/%s/%d", cfg.runID, r.Scenario, i),
			subs:  make([]*subscriber, perFlow),
			wake:  make(chan struct{}, 1),
		}
	}
	defer func() {
		var cs []*client
		for _, f := range fs {
			if f.pub != nil {
				cs = append(cs, f.pub.c)
			}
			for _, s := range f.subs {
				if s != nil {
					cs = append(cs, s.c)
				}
			}
		}
		disconnectAll(cs)
		if persistent {
			discardSessions(cfg, r.Scenario, flows*perFlow)
		}
	}()

	// Every subscription is in place (SUBACK) before anything is published.
	err := parallel(ctx, flows*perFlow, dialWidth, func(i int) error {
		f := fs[i/perFlow]
		c, err := dialSession(ctx, cfg.addr, cfg.clientID(r.Scenario, "sub", i), 0, !persistent)
		if err != nil {
			return err
		}
		f.subs[i%perFlow] = &subscriber{c: c, f: f}
		if err := c.subscribe(f.topic, qos); err != nil {
			return err
		}
		return c.awaitSuback()
	})
	if err != nil {
		return fmt.Errorf("subscribers: %w", err)
	}
	err = parallel(ctx, flows, dialWidth, func(i int) error {
		c, err := dial(ctx, cfg.addr, cfg.clientID(r.Scenario, "pub", i), 0)
		if err != nil {
			return err
		}
		p := &publisher{c: c, f: fs[i], msg: packet.Publish{Topic: fs[i].topic, QoS: qos, Payload: make([]byte, cfg.payload)}}
		if qos > 0 {
			p.tokens = make(chan struct{}, cfg.inflight)
			for range cfg.inflight {
				p.tokens <- struct{}{}
			}
		}
		fs[i].pub = p
		return nil
	})
	if err != nil {
		return fmt.Errorf("publishers: %w", err)
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
	t0 := now() + cfg.warmup
	t1 := t0 + cfg.duration
	pubCtx, stopPublishing := context.WithCancel(ctx)
	defer stopPublishing()
	var readers, writers sync.WaitGroup
	for _, f := range fs {
		for _, s := range f.subs {
			readers.Go(func() { fail(s.run(t0, t1)) })
		}
		writers.Go(func() { fail(f.pub.run(pubCtx, uint64(cfg.window))) })
		if qos > 0 {
			readers.Go(func() { fail(f.pub.readAcks()) })
		}
	}
	var cpu0, cpu1 cpuSample
	if sleepUntil(ctx, t0) {
		cpu0 = cfg.sampleCPU()
		if sleepUntil(ctx, t1) {
			cpu1 = cfg.sampleCPU()
		}
	}
	stopPublishing()
	writers.Wait()
	// Let what was published arrive, for the loss count and the latency of
	// the window's last messages.
	for deadline := time.Now().Add(drainTimeout); time.Now().Before(deadline) && ctx.Err() == nil; {
		done := true
		for _, f := range fs {
			done = done && f.delivered() >= f.pub.sent
		}
		if done {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopping.Store(true)
	for _, f := range fs {
		f.pub.c.nc.SetReadDeadline(time.Now())
		for _, s := range f.subs {
			s.c.nc.SetReadDeadline(time.Now())
		}
	}
	readers.Wait()
	if failure != nil {
		return failure
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	var latency histogram
	var inWindow uint64
	for _, f := range fs {
		r.Sent += int64(f.pub.sent)
		for _, s := range f.subs {
			r.Received += int64(s.received)
			inWindow += s.inWindow
			latency.merge(&s.latency)
		}
	}
	r.Lost = r.Sent*int64(perFlow) - r.Received
	r.Rate = float64(inWindow) / cfg.duration.Seconds()
	r.P50Ms = milliseconds(latency.quantile(0.50))
	r.P99Ms = milliseconds(latency.quantile(0.99))
	r.setCPU(cpu0, cpu1)
	return nil
}

// discardSessions ends the persistent sessions of a scenario's n
// subscribers: a connect with a clean session discards what the broker
// kept (MQTT-3.1.2-6), so that runs do not leave queues behind.
func discardSessions(cfg *config, scenario string, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	_ = parallel(ctx, n, dialWidth, func(i int) error {
		c, err := dial(ctx, cfg.addr, cfg.clientID(scenario, "sub", i), 0)
		if err != nil {
			return err
		}
		c.disconnect()
		return nil
	})
}
