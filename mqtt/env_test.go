package mqtt_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/bifrost-mq/bifrost/coprocessors/dist"
	"github.com/bifrost-mq/bifrost/coprocessors/inbox"
	"github.com/bifrost-mq/bifrost/coprocessors/retain"
	"github.com/bifrost-mq/bifrost/kvstore"
	"github.com/bifrost-mq/bifrost/kvstore/kvpb"
	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/listener"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
	"github.com/bifrost-mq/bifrost/ranges"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// env is a real cluster (Dragonboat, Pebble, gRPC on loopback) whose every
// store also runs an MQTT frontend, as standalone does.
type env struct {
	t       testing.TB
	cluster *rangestest.Cluster
	mu      sync.Mutex
	fronts  map[int]*mqtt.Server
	// pending are the frontends of nodes still starting.
	pending map[*ranges.Node]*mqtt.Server
}

func startEnv(t testing.TB, stores int, tune func(*mqtt.Config)) *env {
	t.Helper()
	e := &env{t: t, fronts: map[int]*mqtt.Server{}, pending: map[*ranges.Node]*mqtt.Server{}}
	var idx int
	var idxMu sync.Mutex
	e.cluster = rangestest.Start(t, stores, rangestest.Options{
		Coprocessors: map[kvpb.Keyspace]kvstore.CoprocessorFactory{
			kvpb.Keyspace_KEYSPACE_DIST: dist.New, kvpb.Keyspace_KEYSPACE_RETAIN: retain.New,
			kvpb.Keyspace_KEYSPACE_INBOX: inbox.New,
		},
		Services: func(g *grpc.Server, n *ranges.Node) {
			idxMu.Lock()
			i := idx
			idx++
			idxMu.Unlock()
			cfg := mqtt.Config{
				ReceiverID: mqtt.NewReceiverID(n.GRPCAddr()),
				Listeners:  []listener.Config{{Kind: listener.TCP, Addr: "127.0.0.1:0"}},
				Dist:       dist.NewClient(n.Router()),
				Retain:     retain.NewClient(n.Router()),
				Inbox:      inbox.NewClient(n.Router()),
				Frontends: func() []string {
					m := n.Membership()
					if m == nil {
						return nil
					}
					var out []string
					for _, mem := range m.Members() {
						if mem.Meta.GRPC != "" {
							out = append(out, mem.Meta.GRPC)
						}
					}
					return out
				},
			}
			cfg.Logger = testLogger()
			if tune != nil {
				tune(&cfg)
			}
			s, err := mqtt.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			s.RegisterService(g)
			e.mu.Lock()
			e.fronts[i] = s
			e.pending[n] = s
			e.mu.Unlock()
		},
		// The frontend opens its listeners once its node is whole, as
		// bifrost standalone does once it is ready.
		Started: func(_ int, n *ranges.Node) {
			e.mu.Lock()
			s := e.pending[n]
			delete(e.pending, n)
			e.mu.Unlock()
			if s == nil {
				return
			}
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			// The inbox leaders' expiry and delayed wills, published
			// through the frontend, as bifrost standalone does.
			sched := inbox.NewScheduler(inbox.SchedulerConfig{Interval: 100 * time.Millisecond, Logger: testLogger(),
				Routes: dist.NewClient(n.Router()), Owners: s, OwnerCheckInterval: 200 * time.Millisecond}, n, s)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); sched.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
		},
	})
	return e
}

// addr is frontend i's TCP listener.
func (e *env) addr(i int) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fronts[i].Addrs()[0].String()
}

// rawClient speaks MQTT with the project's codec, for tests that need exact
// packets.
type rawClient struct {
	t    *testing.T
	nc   net.Conn
	r    *packet.Reader
	v    packet.Version
	w    *bufio.Writer
	wmu  sync.Mutex
	recv chan packet.Packet
	errc chan error
	// held keeps PUBLISH packets that arrived while publish waited for its
	// acknowledgement (a client may receive its own message first).
	held []packet.Packet
	// keepRel hands PUBREL packets to the test instead of answering them.
	keepRel atomic.Bool
}

func dialRaw(t *testing.T, addr string, v packet.Version) *rawClient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return newRawClient(t, nc, v)
}

// newRawClient speaks MQTT on nc, which it closes when the test ends.
func newRawClient(t *testing.T, nc net.Conn, v packet.Version) *rawClient {
	c := &rawClient{t: t, nc: nc, r: packet.NewReader(nc, 0), v: v, w: bufio.NewWriter(nc),
		recv: make(chan packet.Packet, 1024), errc: make(chan error, 1)}
	go func() {
		for {
			p, err := c.r.ReadPacket(c.v)
			if err != nil {
				c.errc <- err
				close(c.recv)
				return
			}
			if rel, ok := p.(*packet.Pubrel); ok && !c.keepRel.Load() {
				// The last step of an inbound QoS 2 flow, answered here.
				b, _ := packet.Append(nil, &packet.Pubcomp{PacketID: rel.PacketID}, c.v)
				c.wmu.Lock()
				c.sendBytes(b)
				c.wmu.Unlock()
				continue
			}
			c.recv <- p
		}
	}()
	t.Cleanup(func() { nc.Close() })
	return c
}

func (c *rawClient) send(p packet.Packet) {
	c.t.Helper()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b, err := packet.Append(nil, p, c.v)
	if err != nil {
		c.t.Fatalf("encode %s: %v", p.Type(), err)
	}
	c.sendBytes(b)
}

func (c *rawClient) sendBytes(b []byte) {
	if _, err := c.nc.Write(b); err != nil {
		c.t.Logf("write: %v", err)
	}
}

// next returns the next packet, failing the test after a timeout; nil if
// the server closed the connection.
func (c *rawClient) next() packet.Packet {
	c.t.Helper()
	if len(c.held) > 0 {
		p := c.held[0]
		c.held = c.held[1:]
		return p
	}
	select {
	case p, ok := <-c.recv:
		if !ok {
			select {
			case err := <-c.errc:
				c.t.Logf("client read: %v", err)
			default:
			}
			return nil
		}
		return p
	case <-time.After(10 * time.Second):
		c.t.Fatal("no packet from the server in 10s")
		return nil
	}
}

// expectNone checks that nothing arrives for a while.
func (c *rawClient) expectNone(d time.Duration) {
	c.t.Helper()
	if len(c.held) > 0 {
		c.t.Fatalf("unexpected %s", c.held[0].Type())
	}
	select {
	case p, ok := <-c.recv:
		if ok {
			c.t.Fatalf("unexpected %s: %+v", p.Type(), p)
		}
	case <-time.After(d):
	}
}

// closed waits until the server closes the connection, skipping packets;
// it returns the server's DISCONNECT if one came.
func (c *rawClient) closed() *packet.Disconnect {
	c.t.Helper()
	var d *packet.Disconnect
	for {
		select {
		case p, ok := <-c.recv:
			if !ok {
				return d
			}
			if dp, isD := p.(*packet.Disconnect); isD {
				d = dp
			}
		case <-time.After(10 * time.Second):
			c.t.Fatal("the server did not close the connection in 10s")
		}
	}
}

func (c *rawClient) connect(p *packet.Connect) *packet.Connack {
	c.t.Helper()
	p.Version = c.v
	p.ProtocolName = c.v.ProtocolName()
	c.send(p)
	ack, ok := c.next().(*packet.Connack)
	if !ok {
		c.t.Fatal("no CONNACK")
	}
	return ack
}

// connectCase is a CONNECT with a username and password, and the CONNACK
// code it must get.
type connectCase struct {
	v    packet.Version
	user string
	pw   string
	want packet.ReasonCode
}

// checkConnacks connects each case's client (ID "x"; no username for
// user "") and checks its CONNACK, and that a refusal closes without a
// DISCONNECT.
func checkConnacks(t *testing.T, addr string, cases []connectCase) {
	t.Helper()
	for _, tc := range cases {
		c := dialRaw(t, addr, tc.v)
		cp := &packet.Connect{ClientID: "x", CleanStart: true}
		if tc.user != "" {
			cp.UsernameFlag, cp.Username, cp.PasswordFlag, cp.Password = true, tc.user, true, []byte(tc.pw)
		}
		ack := c.connect(cp)
		if ack.ReasonCode != tc.want {
			t.Errorf("%s %q/%q: CONNACK %s, want %s", tc.v, tc.user, tc.pw, ack.ReasonCode, tc.want)
		}
		if ack.ReasonCode != 0 && c.closed() != nil {
			t.Errorf("a DISCONNECT after a refused CONNACK")
		}
	}
}

// connectRaw dials and connects with a clean session; it fails the test
// unless the server accepts.
func connectRaw(t *testing.T, addr string, v packet.Version, clientID string) *rawClient {
	t.Helper()
	c := dialRaw(t, addr, v)
	ack := c.connect(&packet.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 60})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %s", ack.ReasonCode)
	}
	return c
}

func (c *rawClient) subscribe(id uint16, subs ...packet.Subscription) *packet.Suback {
	c.t.Helper()
	c.send(&packet.Subscribe{PacketID: id, Subscriptions: subs})
	for {
		p := c.next()
		if p == nil {
			c.t.Fatal("connection closed before SUBACK")
		}
		if sa, ok := p.(*packet.Suback); ok {
			if sa.PacketID != id {
				c.t.Fatalf("SUBACK for %d, want %d", sa.PacketID, id)
			}
			return sa
		}
	}
}

// publish sends a PUBLISH and completes its QoS flow, returning the
// acknowledgement's reason code.
func (c *rawClient) publish(p *packet.Publish) packet.ReasonCode {
	c.t.Helper()
	c.send(p)
	next := func() packet.Packet {
		var held []packet.Packet
		defer func() { c.held = append(c.held, held...) }()
		for {
			q := c.next()
			if _, isPub := q.(*packet.Publish); !isPub {
				return q
			}
			held = append(held, q)
		}
	}
	switch p.QoS {
	case 1:
		a, ok := next().(*packet.Puback)
		if !ok || a.PacketID != p.PacketID {
			c.t.Fatalf("want PUBACK %d, got %+v", p.PacketID, a)
		}
		return a.ReasonCode
	case 2:
		rec, ok := next().(*packet.Pubrec)
		if !ok || rec.PacketID != p.PacketID {
			c.t.Fatalf("want PUBREC %d", p.PacketID)
		}
		c.send(&packet.Pubrel{PacketID: p.PacketID})
		if comp, ok := next().(*packet.Pubcomp); !ok || comp.PacketID != p.PacketID {
			c.t.Fatalf("want PUBCOMP %d", p.PacketID)
		}
		return rec.ReasonCode
	}
	return 0
}

// nextPublish returns the next PUBLISH, acknowledging it as a client must.
func (c *rawClient) nextPublish() *packet.Publish {
	c.t.Helper()
	for {
		p := c.next()
		if p == nil {
			c.t.Fatal("connection closed while waiting for a PUBLISH")
		}
		pub, ok := p.(*packet.Publish)
		if !ok {
			continue
		}
		switch pub.QoS {
		case 1:
			c.send(&packet.Puback{PacketID: pub.PacketID})
		case 2:
			c.send(&packet.Pubrec{PacketID: pub.PacketID})
		}
		return pub
	}
}

func listen(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

func testLogger() *slog.Logger {
	if os.Getenv("BIFROST_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
