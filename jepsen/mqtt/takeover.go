package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bifrost-mq/bifrost/jepsen"
	"github.com/bifrost-mq/bifrost/jepsen/cluster"
	"github.com/bifrost-mq/bifrost/jepsen/history"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// takeoverPace is how long a worker waits before it connects again.
const takeoverPace = 300 * time.Millisecond

// TakeoverFilter is what the takeover workload's persistent clients
// subscribe to; its publishers publish under it.
const TakeoverFilter = "t/#"

// TakeoverConfig shapes the takeover workload.
type TakeoverConfig struct {
	// Persistent and Clean are the numbers of client IDs of each kind
	// (defaults 4 and 0); two workers share each ID. Of every four
	// persistent IDs the first two subscribe and the next two stay idle
	// (a session with nothing to deliver learns of a takeover only from
	// the Kick).
	Persistent, Clean int
	// Bound is how long two connections of one client ID may both live
	// (default 1s): the time the newer CONNACK may come before the older
	// connection ends.
	Bound time.Duration
}

// Takeover is the mqtt-takeover workload: two workers per client ID, each
// connecting through a random frontend whenever its connection is gone,
// so that each connection takes the session over from its partner's;
// persistent IDs (3.1.1 clean session 0 and 5.0 with a session expiry,
// alternately) subscribe to TakeoverFilter at QoS 1, or stay idle, while
// two more workers publish numbered messages under it. Checkers: takeover (no two
// live connections of one ID for longer than Bound; a persistent ID
// always finds its session) and queue (every acknowledged message reaches
// every persistent ID: the session's subscriptions and queue move whole).
type Takeover struct {
	cfg TakeoverConfig
	q   *Queue
	ids []*subscriber

	mu      sync.Mutex
	workers map[int]*takeoverWorker
}

type takeoverWorker struct {
	sub *subscriber

	mu       sync.Mutex
	conn     *Conn
	frontend string
	record   func(history.Op)
}

// NewTakeover returns the takeover workload.
func NewTakeover(cfg TakeoverConfig) *Takeover {
	if cfg.Persistent == 0 && cfg.Clean == 0 {
		cfg.Persistent = 4
	}
	if cfg.Bound == 0 {
		cfg.Bound = time.Second
	}
	t := &Takeover{cfg: cfg, q: NewQueue(QueueConfig{Subscribers: -1}), workers: map[int]*takeoverWorker{}}
	for i := 0; i < cfg.Persistent; i++ {
		s := &subscriber{id: fmt.Sprintf("tkp%d", i), version: packet.V311, qos: 1, sess: NewSession(), idle: (i/2)%2 == 1}
		if i%2 == 1 {
			s.version, s.recvMax = packet.V5, 16
		}
		t.ids = append(t.ids, s)
	}
	for i := 0; i < cfg.Clean; i++ {
		s := &subscriber{id: fmt.Sprintf("tkc%d", i), version: packet.V311, qos: 1, sess: NewSession(), clean: true}
		if i%2 == 1 {
			s.version = packet.V5
		}
		t.ids = append(t.ids, s)
	}
	for _, s := range t.ids {
		t.q.subs[s.id] = s
	}
	return t
}

// Concurrency is the number of workers the workload wants: two per client
// ID and two publishers.
func (t *Takeover) Concurrency() int { return 2*len(t.ids) + 2 }

func (t *Takeover) Name() string {
	if t.cfg.Clean > 0 {
		return "mqtt-takeover"
	}
	return "mqtt-takeover-persistent"
}

func (t *Takeover) Setup(ctx context.Context, c *cluster.Cluster) error { return t.q.Setup(ctx, c) }

func (t *Takeover) worker(w int) *takeoverWorker {
	t.mu.Lock()
	defer t.mu.Unlock()
	tw := t.workers[w]
	if tw == nil {
		tw = &takeoverWorker{sub: t.ids[(w/2)%len(t.ids)]}
		t.workers[w] = tw
	}
	return tw
}

func (t *Takeover) NewClient(_ context.Context, _ *cluster.Cluster, w int) (jepsen.Client, error) {
	if w < 2*len(t.ids) {
		return &takeoverClient{t: t, w: t.worker(w)}, nil
	}
	p := t.q.publisher(w)
	p.qos = 1
	return &queueClient{q: t.q, pub: p}, nil
}

func (t *Takeover) Next(rng *rand.Rand, w int) history.Op {
	if w >= 2*len(t.ids) {
		op := t.q.Next(rng, w)
		var v PublishValue
		_ = json.Unmarshal(op.Value, &v)
		v.QoS = 1
		op.Key, op.Value = "t/"+t.q.publisher(w).id, mustJSON(v)
		return op
	}
	tw := t.worker(w)
	tw.mu.Lock()
	live := tw.conn != nil && tw.conn.Reason() == ""
	tw.mu.Unlock()
	if live {
		return history.Op{F: FHold, Key: tw.sub.id}
	}
	return history.Op{F: FConnect, Key: tw.sub.id, Value: mustJSON(ConnectValue{Frontend: t.q.pick(rng), Clean: tw.sub.clean})}
}

// Final drains every persistent client ID.
func (t *Takeover) Final() []history.Op {
	var ops []history.Op
	for _, s := range t.ids {
		if !s.clean {
			ops = append(ops, history.Op{F: FDrain, Key: s.id})
		}
	}
	return ops
}

func (t *Takeover) Checkers() []jepsen.Checker {
	cs := []jepsen.Checker{TakeoverChecker{Bound: t.cfg.Bound}}
	if t.cfg.Persistent > 0 {
		cs = append(cs, QueueChecker{})
	}
	return cs
}

// takeoverClient is one of the two workers of a client ID.
type takeoverClient struct {
	t *Takeover
	w *takeoverWorker
}

func (c *takeoverClient) Node() string {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	return c.w.frontend
}

func (c *takeoverClient) Observe(record func(history.Op)) {
	c.w.mu.Lock()
	c.w.record = record
	c.w.mu.Unlock()
	// The ID's deliveries and the final drain's connections go to the
	// first worker's recorder.
	s := c.w.sub
	s.mu.Lock()
	if s.record == nil {
		s.record = record
	}
	s.mu.Unlock()
}

func (c *takeoverClient) Close() error {
	c.w.mu.Lock()
	conn := c.w.conn
	c.w.conn = nil
	c.w.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
	return nil
}

func (c *takeoverClient) Invoke(ctx context.Context, op history.Op) history.Op {
	switch op.F {
	case FConnect:
		return c.connect(ctx, op)
	case FHold:
		c.w.mu.Lock()
		conn := c.w.conn
		c.w.mu.Unlock()
		if conn == nil {
			return history.Op{Type: history.Fail, Error: "not connected"}
		}
		select {
		case <-conn.Done():
			return history.Op{Type: history.Fail, Error: "connection ended: " + conn.Reason()}
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
		return history.Op{Type: history.OK}
	case FDrain:
		return c.t.q.drain(ctx, c.t.q.subscriber0(op.Key), op)
	}
	return history.Op{Type: history.Fail, Error: "unknown operation " + op.F}
}

// connect opens the worker's connection (its old one is gone) and, for a
// persistent ID whose session the server did not have, subscribes.
func (c *takeoverClient) connect(ctx context.Context, op history.Op) history.Op {
	var v ConnectValue
	_ = json.Unmarshal(op.Value, &v)
	s := c.w.sub
	c.w.mu.Lock()
	record := c.w.record
	c.w.frontend = v.Frontend
	c.w.mu.Unlock()
	// Pace the takeovers: each connection lives a little while before its
	// partner, just taken over, takes it back.
	select {
	case <-ctx.Done():
		return history.Op{Type: history.Fail, Error: ctx.Err().Error()}
	case <-time.After(takeoverPace):
	}
	conn, ack, name, err := c.t.q.dialNamed(ctx, s, v.Frontend, record)
	if err != nil {
		return outcome(err)
	}
	done := ConnectValue{Frontend: v.Frontend, Conn: name, Version: s.version.String(), Clean: s.clean, SessionPresent: ack.SessionPresent}
	s.mu.Lock()
	subscribed := s.subscribed
	s.mu.Unlock()
	if !s.clean && !ack.SessionPresent {
		done.LostSession = subscribed
	}
	// Until one of its connections had a SUBACK, a persistent ID
	// subscribes, session present or not (a takeover may have closed the
	// connection that had its session before it could subscribe).
	if !s.clean && !s.idle && (!ack.SessionPresent || !subscribed) {
		code, err := conn.Subscribe(ctx, TakeoverFilter, s.qos)
		if err != nil || code.IsError() {
			// The CONNACK came: the connection lived, and its close is
			// recorded; the subscription is unknown.
			conn.Close()
			return history.Op{Type: history.OK, Value: mustJSON(done), Error: fmt.Sprintf("subscribe: %v (0x%02x)", err, byte(code))}
		}
		s.mu.Lock()
		s.subscribed = true
		s.mu.Unlock()
		if record != nil {
			record(history.Op{F: FSubscribe, Key: s.id, Value: mustJSON(SubscribeValue{Filter: TakeoverFilter, QoS: s.qos, Frontend: v.Frontend})})
		}
	}
	c.w.mu.Lock()
	c.w.conn = conn
	c.w.mu.Unlock()
	return history.Op{Type: history.OK, Value: mustJSON(done)}
}

// TakeoverChecker judges that one client ID has one connection: for every
// two connections of an ID that each got a CONNACK, the time both were
// open (from the later CONNACK to the earlier close, as the clients saw
// them; a connection never seen to close is open to the history's end)
// is at most Bound. A persistent ID's CONNACK without session present,
// after it had subscribed, means its session did not move whole. Either
// is invalid; no two connections of one ID is unknown.
type TakeoverChecker struct{ Bound time.Duration }

func (TakeoverChecker) Name() string { return "takeover" }

// TakeoverDetails is the checker's details.
type TakeoverDetails struct {
	Connections  int `json:"connections"`
	Takeovers    int `json:"takeovers"` // connections of an ID that already had one
	Overlaps     int `json:"overlaps"`  // pairs open together longer than the bound
	OverlapClean int `json:"overlap_clean"`
	OverlapPers  int `json:"overlap_persistent"`
	// MaxOverlapMs is the longest time two connections of one ID were
	// both open.
	MaxOverlapMs int64 `json:"max_overlap_ms"`
	// PausedOverlaps are pairs open together longer than the bound only
	// counting the time the older connection's frontend was paused (a
	// stopped process closes nothing): not violations.
	PausedOverlaps int                 `json:"paused_overlaps"`
	LostSessions   int                 `json:"lost_sessions"`
	Examples       map[string][]string `json:"examples,omitempty"`
}

type connSpan struct {
	id, name, frontend string
	clean              bool
	open, close        int64
	closed             bool
	reason             string
}

func (tc TakeoverChecker) Check(_ context.Context, h history.History, _ string) jepsen.Result {
	pairs, err := h.Pairs()
	if err != nil {
		return jepsen.Result{Valid: jepsen.Unknown, Summary: "unreadable history: " + err.Error()}
	}
	var end int64
	for _, op := range h {
		end = max(end, op.Time)
	}
	d := TakeoverDetails{Examples: map[string][]string{}}
	example := func(kind, s string) {
		if len(d.Examples[kind]) < 5 {
			d.Examples[kind] = append(d.Examples[kind], s)
		}
	}
	spans := map[string]*connSpan{}
	paused := pausedIntervals(h)
	for _, p := range pairs {
		switch p.Invoke.F {
		case FConnect, FDrain:
			var v ConnectValue
			if p.Completion.Type != history.OK || json.Unmarshal(p.Completion.Value, &v) != nil || v.Conn == "" {
				continue
			}
			if len(p.Invoke.Key) < 2 || p.Invoke.Key[:2] != "tk" {
				continue // a publisher
			}
			sp := spans[v.Conn]
			if sp == nil {
				sp = &connSpan{name: v.Conn}
				spans[v.Conn] = sp
			}
			sp.id, sp.frontend, sp.clean, sp.open = p.Invoke.Key, v.Frontend, v.Clean, p.Completion.Time
			if v.LostSession {
				d.LostSessions++
				example("lost_session", fmt.Sprintf("%s: connection %s on %s found no session (event %d)", p.Invoke.Key, v.Conn, v.Frontend, p.Completion.Index))
			}
		case FClosed:
			var v ClosedValue
			if json.Unmarshal(p.Invoke.Value, &v) != nil || v.Conn == "" {
				continue
			}
			sp := spans[v.Conn]
			if sp == nil {
				sp = &connSpan{name: v.Conn, open: -1}
				spans[v.Conn] = sp
			}
			sp.close, sp.closed, sp.reason = p.Invoke.Time, true, v.Reason
		}
	}
	byID := map[string][]*connSpan{}
	for _, sp := range spans {
		if sp.id == "" || sp.open < 0 {
			continue // no CONNACK recorded: never open as the client saw it
		}
		if !sp.closed {
			sp.close = end
		}
		byID[sp.id] = append(byID[sp.id], sp)
		d.Connections++
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	bound := tc.Bound.Nanoseconds()
	for _, id := range ids {
		cs := byID[id]
		sort.Slice(cs, func(i, j int) bool { return cs[i].open < cs[j].open })
		d.Takeovers += len(cs) - 1
		for j, b := range cs {
			for _, a := range cs[:j] {
				overlap := min(a.close, b.close) - b.open
				if overlap <= 0 {
					continue
				}
				d.MaxOverlapMs = max(d.MaxOverlapMs, overlap/1e6)
				if overlap <= bound {
					continue
				}
				// The time the older connection's frontend was stopped
				// does not count: it closes the connection once it runs.
				if running := overlap - paused.within(a.frontend, b.open, min(a.close, b.close)); running <= bound {
					d.PausedOverlaps++
					example("paused_overlap", fmt.Sprintf("%s: %s on %s got its CONNACK at %.3fs while %s on %s was open and its frontend paused; closed %.3fs later, %.3fs of that running",
						id, b.name, b.frontend, float64(b.open)/1e9, a.name, a.frontend, float64(a.close-b.open)/1e9, float64(running)/1e9))
					continue
				}
				d.Overlaps++
				if b.clean {
					d.OverlapClean++
				} else {
					d.OverlapPers++
				}
				closed := fmt.Sprintf("closed %.3fs later (%s)", float64(a.close-b.open)/1e9, a.reason)
				if !a.closed {
					closed = "never closed"
				}
				example("overlap", fmt.Sprintf("%s: %s on %s got its CONNACK at %.3fs while %s on %s was open; %s",
					id, b.name, b.frontend, float64(b.open)/1e9, a.name, a.frontend, closed))
			}
		}
	}
	res := jepsen.Result{Valid: jepsen.Valid, Details: d,
		Summary: fmt.Sprintf("%d connections, %d takeovers: %d pairs of one client ID open together longer than %v (%d clean, %d persistent), longest %d ms; %d longer only while the older one's frontend was paused; %d sessions lost",
			d.Connections, d.Takeovers, d.Overlaps, tc.Bound, d.OverlapClean, d.OverlapPers, d.MaxOverlapMs, d.PausedOverlaps, d.LostSessions)}
	switch {
	case d.Overlaps > 0 || d.LostSessions > 0:
		res.Valid = jepsen.Invalid
	case d.Takeovers == 0:
		res.Valid = jepsen.Unknown
	}
	return res
}

// pauses are, per node name, the intervals a nemesis had it paused.
type pauses map[string][][2]int64

// pausedIntervals reads the pause faults from the history (nemesis events,
// which Pairs leaves out): from a start's completion "paused <names>" to
// the next stop's invocation of that nemesis, the least the nodes were
// surely paused.
func pausedIntervals(h history.History) pauses {
	out := pauses{}
	open := map[string][]string{} // nemesis key -> nodes paused by its start
	since := map[string]int64{}
	for _, op := range h {
		if op.Process != history.NemesisProcess {
			continue
		}
		switch {
		case op.F == "start" && op.Type == history.OK:
			var desc string
			if json.Unmarshal(op.Value, &desc) != nil || !strings.HasPrefix(desc, "paused ") {
				continue
			}
			open[op.Key] = strings.Split(strings.TrimPrefix(desc, "paused "), ",")
			since[op.Key] = op.Time
		case op.F == "stop" && op.Type == history.Invoke:
			for _, n := range open[op.Key] {
				out[n] = append(out[n], [2]int64{since[op.Key], op.Time})
			}
			delete(open, op.Key)
		}
	}
	for key, nodes := range open { // never stopped: paused to the end
		for _, n := range nodes {
			out[n] = append(out[n], [2]int64{since[key], 1<<62 - 1})
		}
	}
	return out
}

// within is how long node was paused between from and to.
func (ps pauses) within(node string, from, to int64) int64 {
	var d int64
	for _, iv := range ps[node] {
		if lo, hi := max(iv[0], from), min(iv[1], to); hi > lo {
			d += hi - lo
		}
	}
	return d
}

// TakeoverInboxSplitKey picks a split point of the inbox keyspace between
// the inboxes of the persistent client IDs tkp0 .. tkp<n-1>.
func TakeoverInboxSplitKey(n int) func(rng *rand.Rand) string {
	return func(rng *rand.Rand) string {
		return tenant + "\x00" + fmt.Sprintf("tkp%d", rng.IntN(max(n, 1))) + "\x00"
	}
}
