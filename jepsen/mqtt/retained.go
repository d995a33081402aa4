package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bifrost-mq/bifrost/jepsen"
	"github.com/bifrost-mq/bifrost/jepsen/cluster"
	"github.com/bifrost-mq/bifrost/jepsen/history"
	"github.com/bifrost-mq/bifrost/jepsen/kv"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// RetainedTopics is the number of topics (registers) of mqtt-retained.
const RetainedTopics = 4

// Retained is the mqtt-retained workload: the retained message of each of
// a few topics (r/0 .. r/3) is a register. A write is a QoS 1 retained
// publish of a value (ok at PUBACK) through the worker's connection; a read
// is a fresh subscription on a fresh connection to a random frontend: the
// retained message the server sends after the SUBACK is the value, and a
// PINGREQ answered means none is coming (the server answers a
// connection's packets in order), so a read that finds none is a read of
// the empty register. Checked like the KV register (kv.Linearizable,
// porcupine, per topic), with its HTML visualization.
type Retained struct {
	q            *Queue
	checkTimeout time.Duration
	reads        atomic.Int64
}

// NewRetained returns the retained workload; checkTimeout bounds
// porcupine (default 2m).
func NewRetained(checkTimeout time.Duration) *Retained {
	return &Retained{q: NewQueue(QueueConfig{Subscribers: -1}), checkTimeout: checkTimeout}
}

func (r *Retained) Name() string { return "mqtt-retained" }

func (r *Retained) Setup(ctx context.Context, c *cluster.Cluster) error { return r.q.Setup(ctx, c) }

func (r *Retained) NewClient(_ context.Context, _ *cluster.Cluster, w int) (jepsen.Client, error) {
	return &retainedClient{r: r, pub: r.q.publisher(w)}, nil
}

// RetainedTopic is register i's topic.
func RetainedTopic(i int) string { return "r/" + strconv.Itoa(i) }

func (r *Retained) Next(rng *rand.Rand, _ int) history.Op {
	topic := RetainedTopic(rng.IntN(RetainedTopics))
	fe := r.q.pick(rng)
	if rng.IntN(2) == 0 {
		return history.Op{F: kv.FRead, Key: topic, Value: mustJSON(retainedArgs{Frontend: fe})}
	}
	return history.Op{F: kv.FWrite, Key: topic, Value: mustJSON(retainedArgs{Args: kv.Args{Value: strconv.Itoa(1 + rng.IntN(5))}, Frontend: fe})}
}

// retainedArgs is kv.Args with the frontend the operation goes to.
type retainedArgs struct {
	kv.Args
	Frontend string `json:"frontend"`
}

func (r *Retained) Final() []history.Op { return nil }

func (r *Retained) Checkers() []jepsen.Checker {
	return []jepsen.Checker{&kv.Linearizable{CheckerName: "linearizable", Timeout: r.checkTimeout}}
}

type retainedClient struct {
	r   *Retained
	pub *publisher
	mu  sync.Mutex
	fe  string
}

func (c *retainedClient) Node() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fe
}

func (c *retainedClient) Close() error {
	c.pub.mu.Lock()
	conn := c.pub.conn
	c.pub.conn = nil
	c.pub.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
	return nil
}

func (c *retainedClient) Invoke(ctx context.Context, op history.Op) history.Op {
	var a retainedArgs
	_ = json.Unmarshal(op.Value, &a)
	c.mu.Lock()
	c.fe = a.Frontend
	c.mu.Unlock()
	if op.F == kv.FWrite {
		v, _ := json.Marshal(PublishValue{Message: a.Value, QoS: 1, Frontend: a.Frontend})
		return (&queueClient{q: c.r.q, pub: c.pub}).publishRetained(ctx, op.Key, v)
	}
	return c.read(ctx, op.Key, a.Frontend)
}

// read subscribes on a fresh connection and returns the retained message
// the server sends. Reads change nothing: every failure is a fail.
func (c *retainedClient) read(ctx context.Context, topic, fe string) history.Op {
	id := fmt.Sprintf("rr%d", c.r.reads.Add(1))
	got := make(chan Delivery, 4)
	conn, _, err := Dial(ctx, c.r.q.addrs[fe], ConnectOptions{ClientID: id, Version: packet.V311, Clean: true}, nil, func(d Delivery) {
		if d.Retain {
			select {
			case got <- d:
			default:
			}
		}
	})
	if err != nil {
		return history.Op{Type: history.Fail, Error: err.Error()}
	}
	defer conn.Disconnect()
	code, err := conn.Subscribe(ctx, topic, 1)
	if err == nil && code.IsError() {
		err = fmt.Errorf("SUBACK 0x%02x", byte(code))
	}
	if err == nil {
		err = conn.Ping(ctx)
	}
	if err != nil {
		return history.Op{Type: history.Fail, Error: err.Error()}
	}
	select {
	case d := <-got:
		return history.Op{Type: history.OK, Value: mustJSON(kv.Result{Value: string(d.Payload), Found: true})}
	default:
		return history.Op{Type: history.OK, Value: mustJSON(kv.Result{})}
	}
}

// publishRetained publishes v (a PublishValue) to topic as a retained
// message through the publisher's connection: ok at PUBACK, fail when the
// connection did not open or the PUBACK refused, info otherwise.
func (c *queueClient) publishRetained(ctx context.Context, topic string, v json.RawMessage) history.Op {
	var pv PublishValue
	_ = json.Unmarshal(v, &pv)
	conn, err := c.pubConn(ctx, pv.Frontend)
	if err != nil {
		return history.Op{Type: history.Fail, Error: "connect: " + err.Error()}
	}
	err = conn.Publish(ctx, topic, []byte(pv.Message), 1, true)
	if err == nil {
		return history.Op{Type: history.OK}
	}
	if errors.Is(err, ErrRefused) {
		return history.Op{Type: history.Fail, Error: err.Error()}
	}
	conn.Close()
	return history.Op{Type: history.Info, Error: err.Error()}
}
