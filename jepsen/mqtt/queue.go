package mqtt

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bifrost-mq/bifrost/jepsen"
	"github.com/bifrost-mq/bifrost/jepsen/cluster"
	"github.com/bifrost-mq/bifrost/jepsen/history"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// Operation and observation names of the MQTT workloads.
const (
	FConnect   = "connect"    // a CONNECT (Key: client ID), completed by its CONNACK
	FHold      = "hold"       // a subscriber stays connected for a while, receiving
	FCrash     = "crash"      // a client drops its connection without DISCONNECT
	FPublish   = "publish"    // a PUBLISH (Key: topic), completed by its PUBACK/PUBCOMP
	FDrain     = "drain"      // final: a subscriber reconnects and reads until quiet
	FSubscribe = "subscribed" // observed: a SUBACK granted the subscription
	FDeliver   = "deliver"    // observed: a PUBLISH the server sent
	FClosed    = "closed"     // observed: a connection ended
)

// ConnectValue is a connect's invocation value and completion value.
type ConnectValue struct {
	Frontend string `json:"frontend"`
	// Conn names the connection the CONNACK opened (its closed observation
	// names it too).
	Conn           string `json:"conn,omitempty"`
	Version        string `json:"version,omitempty"`
	Clean          bool   `json:"clean"`
	SessionPresent bool   `json:"session_present"`
	// LostSession: a persistent client that had subscribed found no
	// session (session present 0) though it had not expired.
	LostSession bool `json:"lost_session,omitempty"`
}

// PublishValue is a publish's invocation value.
type PublishValue struct {
	Message  string `json:"msg"` // "<publisher>:<n>", also the payload
	QoS      byte   `json:"qos"`
	Frontend string `json:"frontend"`
}

// DeliverValue is an observed delivery.
type DeliverValue struct {
	Topic    string `json:"topic"`
	Message  string `json:"msg"`
	QoS      byte   `json:"qos"`
	Dup      bool   `json:"dup"`
	PacketID uint16 `json:"pid"`
	Retain   bool   `json:"retain,omitempty"`
	// App: the client handed it to the application (false: a QoS 2 resend
	// of a packet ID the client holds unreleased, which it drops).
	App bool `json:"app"`
}

// SubscribeValue is an observed SUBACK.
type SubscribeValue struct {
	Filter   string `json:"filter"`
	QoS      byte   `json:"qos"`
	Frontend string `json:"frontend"`
}

// ClosedValue is an observed end of a connection.
type ClosedValue struct {
	Frontend string `json:"frontend"`
	Conn     string `json:"conn,omitempty"`
	Reason   string `json:"reason"`
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// QueueConfig sizes the queue workload.
type QueueConfig struct {
	// Subscribers is the number of workers that are persistent subscribers
	// (default 4: 3.1.1 QoS 1, 5.0 QoS 1, 3.1.1 QoS 2, 5.0 QoS 2); the
	// other workers publish, alternately at QoS 1 and 2.
	Subscribers int
	// ReceiveMaximum is the 5.0 subscribers' receive maximum (default 4):
	// a small window keeps messages queued in the inbox behind it.
	ReceiveMaximum uint16
	// QoS1Only runs every subscriber and publisher at QoS 1
	// (mqtt-queue-qos1).
	QoS1Only bool
	// ResendPublisher gives publisher p7 a session whose unfinished QoS 2
	// publish is resumed on its next connection (mqtt-queue-resend).
	ResendPublisher bool
	// Filter is what the subscribers subscribe to (default QueueFilter).
	Filter string
	// CrashProbability is the chance of a subscriber dropping its connection
	// (no DISCONNECT) between holds (default 0.05).
	CrashProbability float64
	// DrainQuiet is how long the final drain must see nothing (default
	// 1.5 s); less than a final operation's 5 s, or it never ends.
	DrainQuiet time.Duration
}

// DefaultSubscribers is QueueConfig.Subscribers' default.
const DefaultSubscribers = 4

// QueueFilter is what the queue's subscribers subscribe to.
const QueueFilter = "q/#"

func (q *Queue) filter() string {
	if q.cfg.Filter != "" {
		return q.cfg.Filter
	}
	return QueueFilter
}

// Queue is the mqtt-queue workload: persistent subscribers of QueueFilter
// on any frontend, reconnecting (to a random frontend) whenever a fault or
// their own crash cuts them off; publishers of numbered messages, one topic
// each (q/<publisher>), one message at a time. Each subscriber's session
// state (its unreleased QoS 2 packet IDs) lives in the workload, so it
// survives the subscriber's connections as a real client's does.
type Queue struct {
	cfg       QueueConfig
	frontends []string
	addrs     map[string]string

	mu   sync.Mutex
	subs map[string]*subscriber
	pubs map[int]*publisher
}

// NewQueue returns the queue workload.
func NewQueue(cfg QueueConfig) *Queue {
	if cfg.Subscribers == 0 {
		cfg.Subscribers = DefaultSubscribers
	}
	if cfg.ReceiveMaximum == 0 {
		cfg.ReceiveMaximum = 4
	}
	if cfg.CrashProbability == 0 {
		cfg.CrashProbability = 0.05
	}
	return &Queue{cfg: cfg, subs: map[string]*subscriber{}, pubs: map[int]*publisher{}, addrs: map[string]string{}}
}

func (q *Queue) Name() string {
	if q.cfg.QoS1Only {
		return "mqtt-queue-qos1"
	}
	if q.cfg.ResendPublisher {
		return "mqtt-queue-resend"
	}
	return "mqtt-queue"
}

func (q *Queue) Setup(ctx context.Context, c *cluster.Cluster) error {
	if len(c.Frontends()) == 0 {
		return errors.New("mqtt-queue needs frontends")
	}
	for _, f := range c.Frontends() {
		q.frontends = append(q.frontends, f.Name)
		q.addrs[f.Name] = f.MQTTAddr()
	}
	return WaitFrontends(ctx, c)
}

// WaitFrontends waits until every frontend acknowledges a QoS 1 publish
// (its listener opens before it can reach the stores).
func WaitFrontends(ctx context.Context, c *cluster.Cluster) error {
	for _, f := range c.Frontends() {
		var last error
		for {
			callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
			conn, _, err := Dial(callCtx, f.MQTTAddr(), ConnectOptions{ClientID: "jepsen-probe-" + f.Name, Clean: true}, nil, nil)
			if err == nil {
				err = conn.Publish(callCtx, "jepsen/probe", []byte("probe"), 1, false)
				conn.Disconnect()
			}
			cancel()
			if err == nil {
				break
			}
			last = err
			select {
			case <-ctx.Done():
				return fmt.Errorf("frontend %s not ready: %w (last error: %v)", f.Name, ctx.Err(), last)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// subscriber is one persistent subscriber's state across its connections.
type subscriber struct {
	id      string
	version packet.Version
	qos     byte
	recvMax uint16
	sess    *Session
	// clean: a clean session (mqtt-takeover's clean client IDs); idle: a
	// persistent session that never subscribes (mqtt-takeover's).
	clean, idle bool

	mu         sync.Mutex
	conn       *Conn
	frontend   string
	subscribed bool
	record     func(history.Op)
	lastSeen   time.Time
}

type publisher struct {
	id  string
	qos byte
	// persistent: a QoS 2 publisher with a session (clean 0) that resumes
	// a publish its connection did not see through on its next connection
	// (QoS2Flight), for the frontend to recognise the resend.
	persistent bool
	nextID     uint16
	flight     *QoS2Flight

	mu       sync.Mutex
	n        int
	conn     *Conn
	frontend string
	record   func(history.Op)
}

func (q *Queue) subscriber(w int) *subscriber {
	q.mu.Lock()
	defer q.mu.Unlock()
	id := fmt.Sprintf("sub%d", w)
	s := q.subs[id]
	if s == nil {
		s = &subscriber{id: id, version: packet.V311, qos: byte(1 + (w/2)%2), sess: NewSession()}
		if w%2 == 1 {
			s.version, s.recvMax = packet.V5, q.cfg.ReceiveMaximum
		}
		if q.cfg.QoS1Only {
			s.qos = 1
		}
		q.subs[id] = s
	}
	return s
}

func (q *Queue) publisher(w int) *publisher {
	q.mu.Lock()
	defer q.mu.Unlock()
	p := q.pubs[w]
	if p == nil {
		p = &publisher{id: fmt.Sprintf("p%d", w), qos: byte(1 + w%2)}
		if q.cfg.QoS1Only {
			p.qos = 1
		}
		// mqtt-queue-resend: every other QoS 2 publisher (p7 of p4..p7)
		// keeps a session.
		p.persistent = q.cfg.ResendPublisher && p.qos == 2 && (w/2)%2 == 1
		q.pubs[w] = p
	}
	return p
}

func (q *Queue) NewClient(_ context.Context, _ *cluster.Cluster, w int) (jepsen.Client, error) {
	if w < q.cfg.Subscribers {
		return &queueClient{q: q, sub: q.subscriber(w)}, nil
	}
	return &queueClient{q: q, pub: q.publisher(w)}, nil
}

func (q *Queue) pick(rng *rand.Rand) string { return q.frontends[rng.IntN(len(q.frontends))] }

func (q *Queue) Next(rng *rand.Rand, w int) history.Op {
	if w < q.cfg.Subscribers {
		s := q.subscriber(w)
		s.mu.Lock()
		connected := s.conn != nil && s.conn.Reason() == ""
		s.mu.Unlock()
		switch {
		case !connected:
			return history.Op{F: FConnect, Key: s.id, Value: mustJSON(ConnectValue{Frontend: q.pick(rng)})}
		case rng.Float64() < q.cfg.CrashProbability:
			return history.Op{F: FCrash, Key: s.id}
		}
		return history.Op{F: FHold, Key: s.id}
	}
	p := q.publisher(w)
	p.mu.Lock()
	p.n++
	n := p.n
	p.mu.Unlock()
	return history.Op{F: FPublish, Key: "q/" + p.id, Value: mustJSON(PublishValue{Message: fmt.Sprintf("%s:%d", p.id, n), QoS: p.qos, Frontend: q.pick(rng)})}
}

// Final drains every subscriber: each reconnects and reads until its
// queue stays quiet.
func (q *Queue) Final() []history.Op {
	var ops []history.Op
	for w := 0; w < q.cfg.Subscribers; w++ {
		ops = append(ops, history.Op{F: FDrain, Key: fmt.Sprintf("sub%d", w)})
	}
	return ops
}

func (q *Queue) Checkers() []jepsen.Checker { return []jepsen.Checker{QueueChecker{}} }

// queueClient is a worker's client: a subscriber or a publisher.
type queueClient struct {
	q   *Queue
	sub *subscriber
	pub *publisher
}

func (c *queueClient) Node() string {
	if c.sub != nil {
		c.sub.mu.Lock()
		defer c.sub.mu.Unlock()
		return c.sub.frontend
	}
	c.pub.mu.Lock()
	defer c.pub.mu.Unlock()
	return c.pub.frontend
}

func (c *queueClient) Observe(record func(history.Op)) {
	if c.sub != nil {
		c.sub.mu.Lock()
		c.sub.record = record
		c.sub.mu.Unlock()
		return
	}
	c.pub.mu.Lock()
	c.pub.record = record
	c.pub.mu.Unlock()
}

// Close leaves the subscriber's connection to the run's end: the final
// drain's clients share the workers' subscribers.
func (c *queueClient) Close() error {
	if c.pub != nil {
		c.pub.mu.Lock()
		conn := c.pub.conn
		c.pub.conn = nil
		c.pub.mu.Unlock()
		if conn != nil {
			conn.Close()
		}
	}
	return nil
}

func (c *queueClient) Invoke(ctx context.Context, op history.Op) history.Op {
	switch op.F {
	case FPublish:
		return c.publish(ctx, op)
	case FConnect:
		return c.q.connectSub(ctx, c.q.subscriber0(op.Key), op)
	case FHold:
		return c.q.hold(ctx, c.q.subscriber0(op.Key))
	case FCrash:
		s := c.q.subscriber0(op.Key)
		s.mu.Lock()
		conn := s.conn
		s.mu.Unlock()
		if conn != nil {
			conn.Close()
		}
		return history.Op{Type: history.OK}
	case FDrain:
		return c.q.drain(ctx, c.q.subscriber0(op.Key), op)
	}
	return history.Op{Type: history.Fail, Error: "unknown operation " + op.F}
}

// subscriber0 finds a subscriber by client ID.
func (q *Queue) subscriber0(id string) *subscriber {
	q.mu.Lock()
	s := q.subs[id]
	q.mu.Unlock()
	if s != nil {
		return s
	}
	var w int
	fmt.Sscanf(id, "sub%d", &w)
	return q.subscriber(w)
}

// connSerial numbers the harness's connections ("c17").
var connSerial atomic.Int64

// watch names a connection and records its end as an observation; it
// returns the name.
func watch(conn *Conn, frontend string, record func(history.Op), key string) string {
	name := fmt.Sprintf("c%d", connSerial.Add(1))
	go func() {
		<-conn.Done()
		if record != nil {
			record(history.Op{F: FClosed, Key: key, Value: mustJSON(ClosedValue{Frontend: frontend, Conn: name, Reason: conn.Reason()})})
		}
	}()
	return name
}

// outcome turns an error of a call whose effect is unknown into info, and
// one that certainly had none into fail.
func outcome(err error) history.Op {
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && !ne.Timeout() || errors.Is(err, ErrRefused) {
		return history.Op{Type: history.Fail, Error: err.Error()}
	}
	return history.Op{Type: history.Info, Error: err.Error()}
}

func (q *Queue) dialSub(ctx context.Context, s *subscriber, frontend string) (*Conn, *packet.Connack, error) {
	conn, ack, _, err := q.dialNamed(ctx, s, frontend, nil)
	return conn, ack, err
}

// dialNamed connects as s to frontend and returns the connection's name;
// record overrides s's recorder.
func (q *Queue) dialNamed(ctx context.Context, s *subscriber, frontend string, record func(history.Op)) (*Conn, *packet.Connack, string, error) {
	s.mu.Lock()
	if record == nil {
		record = s.record
	}
	s.mu.Unlock()
	o := ConnectOptions{ClientID: s.id, Version: s.version, KeepAlive: 30, Clean: s.clean}
	if s.version == packet.V5 && !s.clean {
		o.SessionExpiry, o.ReceiveMaximum = 600, s.recvMax
	}
	conn, ack, err := Dial(ctx, q.addrs[frontend], o, s.sess, func(d Delivery) {
		s.mu.Lock()
		s.lastSeen = time.Now()
		s.mu.Unlock()
		if record != nil {
			record(history.Op{F: FDeliver, Key: s.id, Value: mustJSON(DeliverValue{Topic: d.Topic, Message: string(d.Payload),
				QoS: d.QoS, Dup: d.Dup, PacketID: d.PacketID, Retain: d.Retain, App: d.App})})
		}
	})
	if err != nil {
		return nil, ack, "", err
	}
	return conn, ack, watch(conn, frontend, record, s.id), nil
}

// connectSub connects a subscriber to the frontend its invocation names
// and, when the server has no session for it, subscribes.
func (q *Queue) connectSub(ctx context.Context, s *subscriber, op history.Op) history.Op {
	var v ConnectValue
	_ = json.Unmarshal(op.Value, &v)
	s.mu.Lock()
	old := s.conn
	s.conn = nil
	s.frontend = v.Frontend
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
	conn, ack, err := q.dialSub(ctx, s, v.Frontend)
	if err != nil {
		return outcome(err)
	}
	done := ConnectValue{Frontend: v.Frontend, Version: s.version.String(), SessionPresent: ack.SessionPresent}
	s.mu.Lock()
	had := s.subscribed
	record := s.record
	s.mu.Unlock()
	if !ack.SessionPresent {
		done.LostSession = had
		code, err := conn.Subscribe(ctx, q.filter(), s.qos)
		if err != nil || code.IsError() {
			conn.Close()
			if err == nil {
				err = fmt.Errorf("SUBACK 0x%02x", byte(code))
			}
			r := outcome(err)
			r.Type, r.Value = history.Info, mustJSON(done)
			return r
		}
		s.mu.Lock()
		s.subscribed = true
		s.mu.Unlock()
		if record != nil {
			record(history.Op{F: FSubscribe, Key: s.id, Value: mustJSON(SubscribeValue{Filter: q.filter(), QoS: s.qos, Frontend: v.Frontend})})
		}
	}
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	return history.Op{Type: history.OK, Value: mustJSON(done)}
}

// hold keeps the subscriber connected for half a second.
func (q *Queue) hold(ctx context.Context, s *subscriber) history.Op {
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	if conn == nil {
		return history.Op{Type: history.Fail, Error: "not connected"}
	}
	t := time.NewTimer(500 * time.Millisecond)
	defer t.Stop()
	select {
	case <-conn.Done():
		return history.Op{Type: history.Fail, Error: "connection ended: " + conn.Reason()}
	case <-ctx.Done():
	case <-t.C:
	}
	return history.Op{Type: history.OK}
}

// drainQuiet is how long a draining subscriber must see nothing.
const drainQuiet = 1500 * time.Millisecond

// drain reconnects a subscriber (to a random frontend) and reads until
// nothing came for drainQuiet.
func (q *Queue) drain(ctx context.Context, s *subscriber, op history.Op) history.Op {
	s.mu.Lock()
	old := s.conn
	s.conn = nil
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
	fe := q.frontends[rand.IntN(len(q.frontends))]
	conn, ack, name, err := q.dialNamed(ctx, s, fe, nil)
	if err != nil {
		return outcome(err)
	}
	defer conn.Close()
	s.mu.Lock()
	s.lastSeen = time.Now()
	s.frontend = fe
	s.mu.Unlock()
	v := ConnectValue{Frontend: fe, Conn: name, Version: s.version.String(), SessionPresent: ack.SessionPresent, LostSession: !ack.SessionPresent}
	for {
		select {
		case <-conn.Done():
			return history.Op{Type: history.Info, Error: "connection ended: " + conn.Reason(), Value: mustJSON(v)}
		case <-ctx.Done():
			return history.Op{Type: history.Info, Error: "not quiet yet", Value: mustJSON(v)}
		case <-time.After(100 * time.Millisecond):
		}
		s.mu.Lock()
		quiet := time.Since(s.lastSeen) >= cmp.Or(q.cfg.DrainQuiet, drainQuiet)
		s.mu.Unlock()
		if quiet {
			return history.Op{Type: history.OK, Value: mustJSON(v)}
		}
	}
}

// publish publishes the invocation's message, connecting first (clean
// session, to the frontend the invocation names) when the publisher has
// no live connection. A connection that fails leaves the publish failed; a
// publish whose acknowledgement did not come is info, and its connection
// is dropped so that the next publish starts clean.
func (c *queueClient) publish(ctx context.Context, op history.Op) history.Op {
	var v PublishValue
	_ = json.Unmarshal(op.Value, &v)
	conn, err := c.pubConn(ctx, v.Frontend)
	if err != nil {
		return history.Op{Type: history.Fail, Error: "connect: " + err.Error()}
	}
	if c.pub.persistent {
		return c.publishResumable(ctx, conn, op, v)
	}
	err = conn.Publish(ctx, op.Key, []byte(v.Message), v.QoS, false)
	if err == nil {
		return history.Op{Type: history.OK}
	}
	if !errors.Is(err, ErrRefused) {
		conn.Close()
	}
	r := outcome(err)
	if !errors.Is(err, ErrRefused) {
		r.Type = history.Info
	}
	return r
}

// publishResumable is publish for a persistent QoS 2 publisher: a publish
// an earlier connection did not see through is resumed first (with its
// packet ID: its PUBLISH again with DUP 1, or its PUBREL), and this one is
// sent only once that one is done; a failure before this one's PUBLISH went
// out fails it.
func (c *queueClient) publishResumable(ctx context.Context, conn *Conn, op history.Op, v PublishValue) history.Op {
	p := c.pub
	p.mu.Lock()
	f := p.flight
	p.mu.Unlock()
	if f != nil {
		if err := conn.PublishQoS2(ctx, f, true); err != nil {
			if errors.Is(err, ErrRefused) {
				p.mu.Lock()
				p.flight = nil
				p.mu.Unlock()
			} else {
				conn.Close()
			}
			return history.Op{Type: history.Fail, Error: "resuming the previous publish: " + err.Error()}
		}
	}
	p.mu.Lock()
	p.nextID++
	if p.nextID == 0 {
		p.nextID = 1
	}
	f = &QoS2Flight{ID: p.nextID, Topic: op.Key, Payload: []byte(v.Message)}
	p.flight = f
	p.mu.Unlock()
	err := conn.PublishQoS2(ctx, f, false)
	if err == nil || errors.Is(err, ErrRefused) {
		p.mu.Lock()
		p.flight = nil
		p.mu.Unlock()
	}
	if err == nil {
		return history.Op{Type: history.OK}
	}
	if errors.Is(err, ErrRefused) {
		return outcome(err)
	}
	conn.Close()
	r := outcome(err)
	r.Type = history.Info
	return r
}

// tenant is the tenant of every client of the harness (the frontends
// allow all, as auth.DefaultTenant).
const tenant = "default"

// DistSplitKey picks a split point of the dist keyspace among the routes
// of the workloads' filters (the store aligns it to a filter's boundary).
func DistSplitKey(rng *rand.Rand) string {
	filters := []string{"q", "r", "t", "w"}
	return tenant + "\x00" + filters[rng.IntN(len(filters))] + "\x00"
}

// InboxSplitKey picks a split point of the inbox keyspace between the
// inboxes of subscribers sub0 .. sub<n-1>.
func InboxSplitKey(n int) func(rng *rand.Rand) string {
	return func(rng *rand.Rand) string { return tenant + "\x00" + fmt.Sprintf("sub%d", rng.IntN(n)) + "\x00" }
}

// pubConn returns the publisher's live connection, or connects to frontend
// (clean session, or the persistent publisher's session).
func (c *queueClient) pubConn(ctx context.Context, frontend string) (*Conn, error) {
	p := c.pub
	p.mu.Lock()
	conn := p.conn
	record := p.record
	p.mu.Unlock()
	if conn != nil && conn.Reason() == "" {
		return conn, nil
	}
	cn, ack, err := Dial(ctx, c.q.addrs[frontend], ConnectOptions{ClientID: p.id, Version: packet.V311, Clean: !p.persistent, KeepAlive: 30}, nil, nil)
	if err != nil {
		return nil, err
	}
	name := watch(cn, frontend, record, p.id)
	if record != nil {
		record(history.Op{F: FConnect, Key: p.id, Value: mustJSON(ConnectValue{Frontend: frontend, Conn: name, Version: "3.1.1", Clean: !p.persistent, SessionPresent: ack.SessionPresent})})
	}
	p.mu.Lock()
	p.conn, p.frontend = cn, frontend
	p.mu.Unlock()
	return cn, nil
}
