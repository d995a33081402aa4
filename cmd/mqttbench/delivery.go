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

// drainTimeout bounds the wait, after the publishers stop, for what they
// published to arrive.
const drainTimeout = 5 * time.Second

// flow is one publisher with its topics and their subscribers. The
// publisher publishes to its topics in turn (its message seq goes to topic
// (seq-1) mod len(topics)) and keeps at most window messages published but
// not yet received by every subscriber: a closed loop, so that a QoS 0
// publisher cannot outrun the broker into dropping messages or into queues
// without bound (which would measure the queue, not the broker). Latency is
// then that of a saturated broker with a bounded queue: by Little's law
// about window × publishers / throughput, so compare latencies of runs with
// the same window.
type flow struct {
	topics []string
	pub    *publisher
	subs   []*subscriber
	// wake is poked (never blocking) when a subscriber makes progress, for
	// a publisher waiting on its window.
	wake chan struct{}
}

// delivered is the highest sequence number up to which every subscriber
// has reached every message of its topic.
func (f *flow) delivered() uint64 {
	stride := uint64(len(f.topics))
	low := uint64(math.MaxUint64)
	for _, s := range f.subs {
		// The next message s waits for: its topic's first, or the one
		// after the last it reached.
		next := uint64(s.topic) + 1
		if r := s.reached.Load(); r > 0 {
			next = r + stride
		}
		low = min(low, next-1)
	}
	return low
}

// load is the shape of a delivery scenario: topics in all, dealt to the
// publishers in turn (topic j to publisher j mod publishers), perTopic
// subscribers on each. With persistent the subscribers' sessions are
// persistent (clean session 0), so every message goes through the broker's
// durable queue.
type load struct {
	publishers, topics, perTopic int
	qos                          byte
	persistent                   bool
}

// subscribers is the number of subscriber sessions.
func (l load) subscribers() int { return l.topics * l.perTopic }

type subscriber struct {
	c *client
	f *flow
	// topic is the index of its topic in f.topics.
	topic int
	// reached is the highest sequence number received; messages of one
	// publisher arrive in order, so a message lost in between (QoS 0) does
	// not hold the window shut.
	reached atomic.Uint64
	// With seen set (offline), run marks each message of its topic there
	// by its round (its sequence number's place among the topic's) and
	// counts a message marked already as a duplicate; first and lastFirst
	// are then the count of messages received for the first time and when
	// the last of them arrived (generator clock), published once per
	// batch like reached.
	seen       []uint64
	duplicated uint64
	first      atomic.Uint64
	lastFirst  atomic.Int64

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
	var (
		last      uint64
		first     uint64
		lastFirst time.Duration
		stride    = uint64(len(s.f.topics))
		maxRounds = uint64(len(s.seen)) * 64
	)
	s.c.streaming()
	s.c.beforeRead = func() error {
		if last != s.reached.Load() {
			s.reached.Store(last)
			select {
			case s.f.wake <- struct{}{}:
			default:
			}
		}
		if first != s.first.Load() {
			s.lastFirst.Store(int64(lastFirst))
			s.first.Store(first)
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
		if s.seen != nil {
			round, topic := (seq-1)/stride, (seq-1)%stride
			if seq == 0 || topic != uint64(s.topic) || round >= maxRounds {
				return fmt.Errorf("%s: message %d is not one of the topic's", msg.Topic, seq)
			}
			if bit := uint64(1) << (round % 64); s.seen[round/64]&bit != 0 {
				s.duplicated++
			} else {
				s.seen[round/64] |= bit
				first++
				lastFirst = at
			}
		}
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
	// stallTimeout is how long run waits for its window to open (its
	// subscribers to receive, or the broker to PUBACK) before it fails.
	stallTimeout time.Duration
	// limit, if not 0, is how many messages run publishes before it
	// returns; readAcks closes acked when the broker has acknowledged
	// that many, and sets lastAck to when the last acknowledgement came.
	limit   uint64
	acks    atomic.Uint64
	acked   chan struct{}
	lastAck time.Duration
}

// run publishes until ctx ends or it has published p.limit messages, at
// most window messages ahead of the slowest subscriber.
func (p *publisher) run(ctx context.Context, window uint64) error {
	stall := time.NewTimer(p.stallTimeout)
	stall.Stop()
	// wait flushes what is gathered (the broker must see it for the window
	// to open) and receives from ready; false when ctx ended or the stall
	// timeout passed (then with an error).
	wait := func(ready <-chan struct{}, what string) (bool, error) {
		if err := p.c.flush(); err != nil {
			return false, err
		}
		stall.Reset(p.stallTimeout)
		defer stall.Stop()
		select {
		case <-ready:
			return true, nil
		case <-ctx.Done():
			return false, nil
		case <-stall.C:
			return false, fmt.Errorf("%s: no %s in %v", p.msg.Topic, what, p.stallTimeout)
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
	for ctx.Err() == nil && (p.limit == 0 || p.sent < p.limit) {
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
		p.msg.Topic = p.f.topics[(seq-1)%uint64(len(p.f.topics))]
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
			if p.acks.Add(1) == p.limit {
				p.lastAck = now()
				close(p.acked)
			}
		}
	}
}

// runDelivery measures the load l at qos: the messages received per second,
// the latency from publish to receipt, and what was lost. Persistent
// sessions are discarded afterwards.
func runDelivery(ctx context.Context, cfg *config, r *result, l load) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fs := newFlows(cfg, r.Scenario, l)
	defer closeFlows(cfg, r.Scenario, fs, l)
	if err := dialSubscribers(ctx, cfg, r.Scenario, fs, l); err != nil {
		return err
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
		if l.qos > 0 {
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
	r.Lost = r.Sent*int64(l.perTopic) - r.Received
	r.Rate = float64(inWindow) / cfg.duration.Seconds()
	r.P50Ms = milliseconds(latency.quantile(0.50))
	r.P99Ms = milliseconds(latency.quantile(0.99))
	r.setCPU(cpu0, cpu1)
	return nil
}

// newFlows makes l's flows, with their topics and subscribers (not yet
// connected).
func newFlows(cfg *config, scenario string, l load) []*flow {
	fs := make([]*flow, l.publishers)
	for i := range fs {
		fs[i] = &flow{wake: make(chan struct{}, 1)}
	}
	for j := range l.topics {
		f := fs[j%l.publishers]
		f.topics = append(f.topics, fmt.Sprintf("mqttbench/%s/%s/%d", cfg.runID, scenario, j))
		for range l.perTopic {
			f.subs = append(f.subs, &subscriber{f: f, topic: len(f.topics) - 1})
		}
	}
	return fs
}

// forSubscribers calls fn for every subscriber on at most dialWidth
// goroutines, with its index among all of l's (which names its client).
func forSubscribers(ctx context.Context, fs []*flow, l load, fn func(i int, s *subscriber) error) error {
	return parallel(ctx, l.subscribers(), dialWidth, func(i int) error {
		// Topic j is flow j mod publishers' topic j / publishers.
		j, k := i/l.perTopic, i%l.perTopic
		f := fs[j%l.publishers]
		return fn(i, f.subs[j/l.publishers*l.perTopic+k])
	})
}

// dialSubscribers connects every subscriber and has it subscribe to its
// topic: all subscriptions are in place (SUBACK) when it returns.
func dialSubscribers(ctx context.Context, cfg *config, scenario string, fs []*flow, l load) error {
	err := forSubscribers(ctx, fs, l, func(i int, s *subscriber) error {
		c, err := dialSession(ctx, cfg.addr, cfg.clientID(scenario, "sub", i), 0, !l.persistent)
		if err != nil {
			return err
		}
		s.c = c
		if err := c.subscribe(s.f.topics[s.topic], l.qos); err != nil {
			return err
		}
		return c.awaitSuback()
	})
	if err != nil {
		return fmt.Errorf("subscribers: %w", err)
	}
	return nil
}

// dialPublishers connects every flow's publisher.
func dialPublishers(ctx context.Context, cfg *config, scenario string, fs []*flow, l load) error {
	err := parallel(ctx, len(fs), dialWidth, func(i int) error {
		c, err := dial(ctx, cfg.addr, cfg.clientID(scenario, "pub", i), 0)
		if err != nil {
			return err
		}
		p := &publisher{c: c, f: fs[i], msg: packet.Publish{QoS: l.qos, Payload: make([]byte, cfg.payload)}, stallTimeout: cfg.stallTimeout}
		if l.qos > 0 {
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
	return nil
}

// closeFlows disconnects every client of fs and discards the persistent
// sessions of l's subscribers.
func closeFlows(cfg *config, scenario string, fs []*flow, l load) {
	var cs []*client
	for _, f := range fs {
		if f.pub != nil {
			cs = append(cs, f.pub.c)
		}
		for _, s := range f.subs {
			if s.c != nil {
				cs = append(cs, s.c)
			}
		}
	}
	disconnectAll(cs)
	if l.persistent {
		discardSessions(cfg, scenario, l.subscribers())
	}
}

// discardSessions ends the persistent sessions of a scenario's n
// subscribers: a connect with a clean session discards what the broker
// kept (MQTT-3.1.2-6), so that runs do not leave queues behind.
func discardSessions(cfg *config, scenario string, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	_ = parallel(ctx, n, dialWidth, func(i int) error {
		// One that fails does not keep the others from being discarded.
		if c, err := dial(ctx, cfg.addr, cfg.clientID(scenario, "sub", i), 0); err == nil {
			c.disconnect()
		}
		return nil
	})
}
