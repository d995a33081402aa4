package mqtt

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bifrost-mq/bifrost/jepsen"
	"github.com/bifrost-mq/bifrost/jepsen/cluster"
	"github.com/bifrost-mq/bifrost/jepsen/history"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// Will operation names.
const (
	FDisconnect = "disconnect" // a DISCONNECT (reason 0): the will must not be published
	FResume     = "resume"     // drop the connection, reconnect at once to the same session
)

// WillFilter is what the will workload's watcher subscribes to.
const WillFilter = "w/#"

// WillDelay is the will delay of the delayed variant.
const WillDelay = 3 * time.Second

// WillValue describes one connection's will.
type WillValue struct {
	Frontend string `json:"frontend,omitempty"`
	Conn     string `json:"conn,omitempty"`
	ClientID string `json:"client_id,omitempty"`
	// Will is the will's payload, unique per connection.
	Will    string `json:"will"`
	DelayMs int64  `json:"delay_ms"`
	Version string `json:"version,omitempty"`
	// Resumed (resume): the next connection reattached to the session
	// before the delay passed, so Will must not be published.
	Resumed bool   `json:"resumed,omitempty"`
	Next    string `json:"next,omitempty"` // resume: the new connection's will
	// ReconnectFailed (resume): the reconnect got no CONNACK; it may have
	// resumed the session (cancelling the will) or not: the will is not
	// checked.
	ReconnectFailed bool `json:"reconnect_failed,omitempty"`
}

// Will is the mqtt-will workload: worker 0 is a persistent watcher of
// WillFilter (QoS 1, reconnecting anywhere, drained at the end); every other
// worker connects with a will (QoS 1, a payload unique to the connection)
// in one of three kinds: 3.1.1, 5.0 with no delay, or 5.0 with a will delay
// of WillDelay and a session that outlives it. Connections end by a
// DISCONNECT (no will), by the client dropping them (a crash: the will), by
// a fault (the frontend killed or cut off: the will), or by a resume of the
// delayed kind (dropped and reconnected at once to the same session: no
// will). Checker will: each will due is published once, not before its
// delay, and no other.
type Will struct {
	q *Queue

	mu      sync.Mutex
	clients map[int]*willClient
	serial  atomic.Int64
}

// NewWill returns the will workload.
func NewWill() *Will {
	// The drain waits out the inbox leaders' check of dead frontends'
	// sessions (2 s in the harness's stores) after the final restart,
	// within a final operation's 5 s.
	return &Will{q: NewQueue(QueueConfig{Subscribers: 1, Filter: WillFilter, CrashProbability: -1, DrainQuiet: 3 * time.Second}), clients: map[int]*willClient{}}
}

func (wl *Will) Name() string { return "mqtt-will" }

func (wl *Will) Setup(ctx context.Context, c *cluster.Cluster) error {
	sub := wl.q.subscriber(0)
	sub.qos = 1
	return wl.q.Setup(ctx, c)
}

func (wl *Will) client(w int) *willClient {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	c := wl.clients[w]
	if c == nil {
		c = &willClient{wl: wl, w: w}
		wl.clients[w] = c
	}
	return c
}

func (wl *Will) NewClient(_ context.Context, _ *cluster.Cluster, w int) (jepsen.Client, error) {
	if w == 0 {
		return &queueClient{q: wl.q, sub: wl.q.subscriber(0)}, nil
	}
	return wl.client(w), nil
}

func (wl *Will) Next(rng *rand.Rand, w int) history.Op {
	if w == 0 {
		return wl.q.Next(rng, 0)
	}
	c := wl.client(w)
	c.mu.Lock()
	live := c.conn != nil && c.conn.Reason() == ""
	kind := c.kind
	c.mu.Unlock()
	if !live {
		return history.Op{F: FConnect, Key: fmt.Sprintf("wc%d", w), Value: mustJSON(map[string]any{"frontend": wl.q.pick(rng), "kind": rng.IntN(3)})}
	}
	switch r := rng.Float64(); {
	case r < 0.15:
		return history.Op{F: FDisconnect, Key: fmt.Sprintf("wc%d", w)}
	case r < 0.3:
		return history.Op{F: FCrash, Key: fmt.Sprintf("wc%d", w)}
	case r < 0.4 && kind == 2:
		return history.Op{F: FResume, Key: fmt.Sprintf("wc%d", w)}
	}
	return history.Op{F: FHold, Key: fmt.Sprintf("wc%d", w)}
}

// Final drains the watcher after the delayed wills are due.
func (wl *Will) Final() []history.Op { return []history.Op{{F: FDrain, Key: "sub0"}} }

func (wl *Will) Checkers() []jepsen.Checker { return []jepsen.Checker{WillChecker{}} }

// willClient is a worker with a will.
type willClient struct {
	wl *Will
	w  int

	mu       sync.Mutex
	conn     *Conn
	frontend string
	kind     int
	clientID string
	will     WillValue
	record   func(history.Op)
}

func (c *willClient) Node() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frontend
}

func (c *willClient) Observe(record func(history.Op)) {
	c.mu.Lock()
	c.record = record
	c.mu.Unlock()
}

func (c *willClient) Close() error {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
	return nil
}

// dial connects with a new will; clientID "" makes a new one.
func (c *willClient) dial(ctx context.Context, fe string, kind int, clientID string) (*Conn, WillValue, bool, error) {
	n := c.wl.serial.Add(1)
	if clientID == "" {
		clientID = fmt.Sprintf("wc%d-%d", c.w, n)
	}
	v := WillValue{Frontend: fe, ClientID: clientID, Will: fmt.Sprintf("will-%d-%d", c.w, n), Version: "3.1.1"}
	o := ConnectOptions{ClientID: clientID, Version: packet.V311, Clean: true, KeepAlive: 30,
		Will: &packet.Will{Topic: fmt.Sprintf("w/%d", c.w), Payload: []byte(v.Will), QoS: 1}}
	switch kind {
	case 1:
		o.Version, v.Version = packet.V5, "5.0"
	case 2:
		o.Version, v.Version = packet.V5, "5.0"
		o.Clean, o.SessionExpiry = clientID != c.clientID, 10
		o.Will.Properties.WillDelayInterval, o.Will.Properties.HasWillDelayInterval = uint32(WillDelay/time.Second), true
		v.DelayMs = WillDelay.Milliseconds()
	}
	c.mu.Lock()
	record := c.record
	c.mu.Unlock()
	conn, ack, err := Dial(ctx, c.wl.q.addrs[fe], o, nil, nil)
	if err != nil {
		return nil, v, false, err
	}
	v.Conn = watch(conn, fe, record, clientID)
	c.mu.Lock()
	c.conn, c.frontend, c.kind, c.clientID, c.will = conn, fe, kind, clientID, v
	c.mu.Unlock()
	return conn, v, ack.SessionPresent, nil
}

func (c *willClient) Invoke(ctx context.Context, op history.Op) history.Op {
	c.mu.Lock()
	conn, will := c.conn, c.will
	c.mu.Unlock()
	switch op.F {
	case FConnect:
		var a struct {
			Frontend string `json:"frontend"`
			Kind     int    `json:"kind"`
		}
		_ = json.Unmarshal(op.Value, &a)
		_, v, _, err := c.dial(ctx, a.Frontend, a.Kind, "")
		if err != nil {
			// A CONNECT whose CONNACK did not come may have opened a
			// session with a will; it is not checked.
			return outcome(err)
		}
		return history.Op{Type: history.OK, Value: mustJSON(v)}
	case FHold:
		if conn == nil {
			return history.Op{Type: history.Fail, Error: "not connected"}
		}
		select {
		case <-conn.Done():
			return history.Op{Type: history.Fail, Error: "connection ended: " + conn.Reason(), Value: mustJSON(will)}
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
		return history.Op{Type: history.OK}
	case FDisconnect:
		if conn == nil || conn.Reason() != "" {
			return history.Op{Type: history.Fail, Error: "not connected"}
		}
		conn.Disconnect()
		return history.Op{Type: history.OK, Value: mustJSON(will)}
	case FCrash:
		if conn == nil {
			return history.Op{Type: history.Fail, Error: "not connected"}
		}
		conn.Close()
		return history.Op{Type: history.OK, Value: mustJSON(will)}
	case FDrain:
		// The final drain of the watcher, retried through any worker's
		// client when the first attempt fails.
		return c.wl.q.drain(ctx, c.wl.q.subscriber0(op.Key), op)
	case FResume:
		if conn == nil {
			return history.Op{Type: history.Fail, Error: "not connected"}
		}
		conn.Close()
		dropped := time.Now()
		_, next, present, err := c.dial(ctx, will.Frontend, 2, will.ClientID)
		v := will
		if err == nil {
			v.Next = next.Will
			// In time, by the client's clock, with a second to spare.
			v.Resumed = present && time.Since(dropped) < WillDelay-time.Second
		} else {
			v.ReconnectFailed = true
		}
		// The drop is done whatever the reconnect did.
		return history.Op{Type: history.OK, Value: mustJSON(v)}
	}
	return history.Op{Type: history.Fail, Error: "unknown operation " + op.F}
}

// WillChecker judges the wills: a will is due when its connection ended
// otherwise than by the client's DISCONNECT (the client dropped it, or the
// server or a fault ended it) and the session was not resumed in time; it
// must then be published once (two deliveries to the watcher that are not
// DUP resends are two publications) and not before its delay from the end
// the client saw. A will not due must not be published. Wills of
// connections that ended before the watcher's first SUBACK, or were open
// at the end, are not checked.
type WillChecker struct{}

func (WillChecker) Name() string { return "will" }

// WillDetails is the checker's details.
type WillDetails struct {
	Due        int                 `json:"due"`
	NotDue     int                 `json:"not_due"`
	Published  int                 `json:"published"`
	Lost       int                 `json:"lost"`
	Unexpected int                 `json:"unexpected"`
	Twice      int                 `json:"twice"`
	Early      int                 `json:"early"`
	Unchecked  int                 `json:"unchecked"`
	ByEnd      map[string]int      `json:"due_by_end,omitempty"`
	Examples   map[string][]string `json:"examples,omitempty"`
}

func (WillChecker) Check(_ context.Context, h history.History, _ string) jepsen.Result {
	pairs, err := h.Pairs()
	if err != nil {
		return jepsen.Result{Valid: jepsen.Unknown, Summary: "unreadable history: " + err.Error()}
	}
	d := WillDetails{ByEnd: map[string]int{}, Examples: map[string][]string{}}
	example := func(kind, s string) {
		if len(d.Examples[kind]) < 5 {
			d.Examples[kind] = append(d.Examples[kind], s)
		}
	}
	type conn struct {
		will    WillValue
		end     int64
		ended   bool
		how     string // disconnect, crash, resumed, server: <reason>
		delayNs int64
	}
	byConn := map[string]*conn{}
	byWill := map[string]*conn{}
	get := func(v WillValue) *conn {
		c := byWill[v.Will]
		if c == nil {
			c = &conn{will: v, delayNs: v.DelayMs * 1e6}
			byWill[v.Will] = c
		}
		if v.Conn != "" {
			c.will.Conn = v.Conn
			byConn[v.Conn] = c
		}
		return c
	}
	var watchFrom int64 = -1
	type delivery struct {
		t   int64
		dup bool
	}
	published := map[string][]delivery{}
	var closes []history.Pair
	for _, p := range pairs {
		var v WillValue
		switch p.Invoke.F {
		case FConnect:
			if p.Completion.Type == history.OK && json.Unmarshal(p.Completion.Value, &v) == nil && v.Will != "" {
				get(v)
			}
		case FDisconnect, FCrash, FResume:
			if p.Completion.Type != history.OK || json.Unmarshal(p.Completion.Value, &v) != nil || v.Will == "" {
				continue
			}
			c := get(v)
			how := p.Invoke.F
			if p.Invoke.F == FResume {
				how = FCrash
				switch {
				case v.Resumed:
					how = "resumed"
				case v.ReconnectFailed:
					how = "ambiguous" // the reconnect may have resumed it
				}
			}
			if !c.ended {
				c.end, c.ended, c.how = p.Invoke.Time, true, how
			}
		case FSubscribe:
			if watchFrom < 0 {
				watchFrom = p.Invoke.Time
			}
		case FDeliver:
			var dv DeliverValue
			if json.Unmarshal(p.Invoke.Value, &dv) == nil && strings.HasPrefix(dv.Topic, "w/") {
				published[dv.Message] = append(published[dv.Message], delivery{p.Invoke.Time, dv.Dup})
			}
		case FClosed:
			closes = append(closes, p)
		}
	}
	// A close the client did not cause ends its connection as the server
	// or a fault did, unless an operation had ended it already.
	for _, p := range closes {
		var v ClosedValue
		if json.Unmarshal(p.Invoke.Value, &v) != nil {
			continue
		}
		c := byConn[v.Conn]
		if c == nil || c.ended || strings.HasSuffix(v.Reason, "by client") {
			continue
		}
		c.end, c.ended, c.how = p.Invoke.Time, true, "server: "+v.Reason
	}
	wills := make([]string, 0, len(byWill))
	for w := range byWill {
		wills = append(wills, w)
	}
	sort.Strings(wills)
	for _, w := range wills {
		c := byWill[w]
		if !c.ended || watchFrom < 0 || c.end < watchFrom || c.how == "ambiguous" {
			d.Unchecked++
			continue
		}
		var fresh []delivery
		for _, dl := range published[w] {
			if !dl.dup {
				fresh = append(fresh, dl)
			}
		}
		if len(published[w]) > 0 {
			d.Published++
		}
		due := c.how != FDisconnect && c.how != "resumed"
		if !due {
			d.NotDue++
			if len(published[w]) > 0 {
				d.Unexpected++
				example("unexpected", fmt.Sprintf("%s (%s, delay %d ms) ended by %s at %.3fs, published at %.3fs", w, c.will.ClientID, c.will.DelayMs, c.how, float64(c.end)/1e9, float64(published[w][0].t)/1e9))
			}
			continue
		}
		d.Due++
		d.ByEnd[strings.SplitN(c.how, ":", 2)[0]]++
		switch {
		case len(published[w]) == 0:
			d.Lost++
			example("lost", fmt.Sprintf("%s (%s on %s, delay %d ms) ended by %s at %.3fs, never published", w, c.will.ClientID, c.will.Frontend, c.will.DelayMs, c.how, float64(c.end)/1e9))
		case len(fresh) > 1:
			d.Twice++
			example("twice", fmt.Sprintf("%s published %d times", w, len(fresh)))
		}
		if len(published[w]) > 0 && published[w][0].t < c.end+c.delayNs-int64(500*time.Millisecond) {
			d.Early++
			example("early", fmt.Sprintf("%s (delay %d ms) ended at %.3fs, published at %.3fs", w, c.will.DelayMs, float64(c.end)/1e9, float64(published[w][0].t)/1e9))
		}
	}
	res := jepsen.Result{Valid: jepsen.Valid, Details: d,
		Summary: fmt.Sprintf("%d wills due (%v), %d not: %d lost, %d published twice, %d early, %d published though not due; %d unchecked",
			d.Due, d.ByEnd, d.NotDue, d.Lost, d.Twice, d.Early, d.Unexpected, d.Unchecked)}
	switch {
	case d.Lost+d.Twice+d.Early+d.Unexpected > 0:
		res.Valid = jepsen.Invalid
	case d.Due == 0:
		res.Valid = jepsen.Unknown
	}
	return res
}
