package main

import (
	"bytes"
	"errors"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

func TestStampRoundTrip(t *testing.T) {
	p := make([]byte, 64)
	putStamp(p, 1<<40+7, 1234567*time.Microsecond)
	seq, sent, ok := readStamp(p)
	if !ok || seq != 1<<40+7 || sent != 1234567*time.Microsecond {
		t.Fatalf("readStamp = %d, %v, %v", seq, sent, ok)
	}
	if _, _, ok := readStamp(p[:stampSize-1]); ok {
		t.Fatal("a payload shorter than a stamp was read")
	}
}

// Every value falls in the bucket whose range holds it, and buckets follow
// the values' order with no gaps.
func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<16; v++ {
		i := bucketOf(v)
		if low, width := bucketRange(i); v < low || v >= low+width {
			t.Fatalf("value %d in bucket %d = [%d, %d)", v, i, low, low+width)
		}
		if i != prev && i != prev+1 {
			t.Fatalf("value %d: bucket %d after %d", v, i, prev)
		}
		prev = i
	}
	for _, v := range []uint64{math.MaxInt64, math.MaxUint64} {
		i := bucketOf(v)
		if low, width := bucketRange(i); i >= len(histogram{}.counts) || v < low || v-low >= width {
			t.Fatalf("value %d in bucket %d = [%d, +%d)", v, i, low, width)
		}
	}
}

// quantile is the nearest-rank quantile within the histogram's precision.
func TestHistogramQuantile(t *testing.T) {
	exact := func(sorted []time.Duration, q float64) time.Duration {
		rank := max(int(math.Ceil(q*float64(len(sorted)))), 1)
		return sorted[rank-1]
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name   string
		values func() []time.Duration
	}{
		{"one value", func() []time.Duration { return []time.Duration{42 * time.Millisecond} }},
		{"small exact values", func() []time.Duration { return []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10} }},
		{"log-uniform 1us..1s", func() []time.Duration {
			v := make([]time.Duration, 10000)
			for i := range v {
				v[i] = time.Duration(math.Exp(rng.Float64()*math.Log(1e6)) * 1e3)
			}
			return v
		}},
		{"bimodal", func() []time.Duration {
			v := make([]time.Duration, 1000)
			for i := range v {
				v[i] = 100 * time.Microsecond
				if i%100 == 0 {
					v[i] = 80 * time.Millisecond
				}
			}
			return v
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			values := tc.values()
			var h histogram
			for _, v := range values {
				h.record(v)
			}
			slices.Sort(values)
			for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
				got, want := h.quantile(q), exact(values, q)
				if diff := math.Abs(float64(got - want)); diff > float64(want)/64+1 {
					t.Errorf("quantile(%v) = %v, want %v within 1/64", q, got, want)
				}
			}
		})
	}
	var empty histogram
	if got := empty.quantile(0.99); got != 0 {
		t.Errorf("empty quantile = %v, want 0", got)
	}
	var a, b histogram
	a.record(time.Millisecond)
	b.record(time.Second)
	a.merge(&b)
	if a.total != 2 || a.quantile(1) < 990*time.Millisecond {
		t.Errorf("merged: total %d, max %v", a.total, a.quantile(1))
	}
}

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and parentheses; utime 1234, stime 766.
	stat := "4242 (my (odd) broker) S 1 4242 4242 0 -1 4194560 2000 0 0 0 1234 766 0 0 20 0 9 0 5000 100000000 3000 18446744073709551615\n"
	got, err := parseStatCPU(stat)
	if err != nil || got != 20*time.Second {
		t.Fatalf("parseStatCPU = %v, %v; want 20s", got, err)
	}
	for _, bad := range []string{"", "4242 broker S 1", "4242 (b) S 1 2 3"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("parseStatCPU(%q) succeeded", bad)
		}
	}
	// This process's own line parses.
	if _, err := processCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tmosquitto\nVmPeak:\t  20000 kB\nVmRSS:\t    8604 kB\nThreads:\t1\n"
	if got, err := parseVmRSS(status); err != nil || got != 8604<<10 {
		t.Fatalf("parseVmRSS = %d, %v", got, err)
	}
	for _, bad := range []string{"Name:\tx\n", "VmRSS:\t12 MB\n", "VmRSS:\tlots kB\n"} {
		if _, err := parseVmRSS(bad); err == nil {
			t.Errorf("parseVmRSS(%q) succeeded", bad)
		}
	}
}

// fastArgs make every scenario small and short.
var fastArgs = []string{"--duration", "200ms", "--warmup", "50ms", "--pause", "0", "--settle", "10ms",
	"--pairs", "2", "--fanout", "3", "--dialers", "2", "--idle", "20", "--window", "10", "--inflight", "5",
	"--fanin-subscribers", "7", "--fanin-publishers", "2",
	"--offline-sessions", "5", "--offline-messages", "40", "--offline-publishers", "2"}

// Every scenario runs end to end against a minimal in-process broker,
// leaves no persistent session behind, and compare reads what a run wrote.
func TestRunAgainstFakeBroker(t *testing.T) {
	defer goleak.VerifyNone(t)
	b := startFakeBroker(t)
	out := filepath.Join(t.TempDir(), "out.json")
	var stdout, stderr bytes.Buffer
	args := append([]string{"--addr", b.ln.Addr().String(), "--pid", strconv.Itoa(os.Getpid()), "--name", "fake",
		"--json", out}, fastArgs...)
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	if left := b.persistentSessions(); len(left) > 0 {
		t.Errorf("persistent sessions left behind: %v", left)
	}
	b.stop()
	rep, err := loadReport(out)
	if err != nil {
		t.Fatal(err)
	}
	var ran []string
	for _, r := range rep.Results {
		ran = append(ran, r.Scenario)
		switch r.Scenario {
		case "idle":
		case "offline":
			if r.Rate <= 0 || r.DrainRate <= 0 || r.GeneratorCPU == nil || r.BrokerCPU == nil {
				t.Errorf("%s: %+v", r.Scenario, r)
			}
		default:
			if r.Rate <= 0 || r.P99Ms <= 0 || r.GeneratorCPU == nil || r.BrokerCPU == nil {
				t.Errorf("%s: %+v", r.Scenario, r)
			}
		}
		perTopic := int64(1)
		if r.Scenario == "fanout" {
			perTopic = 3
		}
		if r.Lost != 0 || r.Duplicated != 0 || r.Sent*perTopic != r.Received {
			t.Errorf("%s: %d published, %d received, %d lost, %d duplicated", r.Scenario, r.Sent, r.Received, r.Lost, r.Duplicated)
		}
		if r.Scenario == "offline" && r.Sent != 5*40 {
			t.Errorf("offline: %d published, want 200", r.Sent)
		}
	}
	if !slices.Equal(ran, scenarioNames()) {
		t.Errorf("ran %v, want %v", ran, scenarioNames())
	}
	stdout.Reset()
	if code := run([]string{"compare", out, out}, &stdout, &stderr); code != 0 {
		t.Fatalf("compare: exit %d: %s", code, &stderr)
	}
	for _, row := range []string{"QoS 1 throughput", "persistent throughput", "fan-in latency p99", "offline enqueue", "offline drain"} {
		if !strings.Contains(stdout.String(), row) {
			t.Errorf("compare printed no %q row:\n%s", row, &stdout)
		}
	}
	if !strings.Contains(stdout.String(), "1.00") {
		t.Errorf("compare printed:\n%s", &stdout)
	}
}

// The offline scenario counts what a broker loses and duplicates, and
// compare reports it.
func TestOfflineCountsLossAndDuplicates(t *testing.T) {
	defer goleak.VerifyNone(t)
	b := startFakeBroker(t)
	// The broker drops every 10th message queued for an offline session
	// and sends every 7th twice.
	b.queued = func(n int) int {
		switch {
		case n%10 == 0:
			return 0
		case n%7 == 0:
			return 2
		}
		return 1
	}
	out := filepath.Join(t.TempDir(), "out.json")
	var stdout, stderr bytes.Buffer
	args := append([]string{"--addr", b.ln.Addr().String(), "--name", "lossy", "--json", out, "--scenarios", "offline",
		"--stall-timeout", "300ms"}, fastArgs...)
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	b.stop()
	rep, err := loadReport(out)
	if err != nil {
		t.Fatal(err)
	}
	r := rep.find("offline")
	// 200 queued: 20 dropped (n = 10, 20, ..., 200), and of the others the
	// multiples of 7 not of 10 (28 of them, less 70 and 140: 26) twice.
	if r == nil || r.Sent != 200 || r.Lost != 20 || r.Duplicated != 26 || r.Received != 200-20+26 {
		t.Fatalf("offline: %+v", r)
	}
	stdout.Reset()
	if code := run([]string{"compare", out, out}, &stdout, &stderr); code != 0 {
		t.Fatalf("compare: exit %d: %s", code, &stderr)
	}
	if want := "lossy offline: 20 lost, 26 duplicated of 200 published"; !strings.Contains(stdout.String(), want) {
		t.Errorf("compare printed no %q:\n%s", want, &stdout)
	}
}

// The delivery window of a publisher that publishes round-robin over
// several topics is the prefix of its messages that every subscriber has
// reached.
func TestFlowDelivered(t *testing.T) {
	f := &flow{topics: []string{"a", "b", "c"}}
	for topic := range 3 {
		f.subs = append(f.subs, &subscriber{f: f, topic: topic})
	}
	// Messages 1, 2, 3, 4, ... go to a, b, c, a, ...
	for _, tc := range []struct {
		reached [3]uint64
		want    uint64
	}{
		{[3]uint64{0, 0, 0}, 0},
		{[3]uint64{1, 0, 0}, 1},
		{[3]uint64{1, 0, 3}, 1},
		{[3]uint64{1, 2, 3}, 3},
		{[3]uint64{7, 5, 3}, 5},
		{[3]uint64{7, 8, 6}, 8},
	} {
		for i, r := range tc.reached {
			f.subs[i].reached.Store(r)
		}
		if got := f.delivered(); got != tc.want {
			t.Errorf("reached %v: delivered %d, want %d", tc.reached, got, tc.want)
		}
	}
	// One topic: the slowest subscriber's.
	g := &flow{topics: []string{"t"}}
	for _, r := range []uint64{9, 4, 6} {
		s := &subscriber{f: g}
		s.reached.Store(r)
		g.subs = append(g.subs, s)
	}
	if got := g.delivered(); got != 4 {
		t.Errorf("one topic: delivered %d, want 4", got)
	}
}

// fakeBroker is just enough of an MQTT 3.1.1 broker for the generator:
// exact-topic subscriptions, QoS 0 and 1, a close after DISCONNECT, and
// persistent sessions (clean session 0) whose QoS 1 messages are queued
// while they are disconnected, with what was sent and not acknowledged
// queued again when the connection ends (a message routed to a subscriber
// that has sent its DISCONNECT but whose DISCONNECT the broker has not read
// yet is not lost: the run under load that showed "29 lost" was the fake's).
type fakeBroker struct {
	t  *testing.T
	ln net.Listener
	wg sync.WaitGroup
	// queued, if set, says how many times the nth message queued for an
	// offline session (counting from 1, over all sessions) is sent on
	// reconnect, for faults.
	queued func(n int) int

	mu       sync.Mutex
	conns    map[*fakeConn]bool
	sessions map[string]*fakeSession // by client ID
	subs     map[string][]fakeSub    // by topic
	nqueued  int
}

type fakeSession struct {
	persistent bool
	c          *fakeConn // nil while disconnected
	queue      []*packet.Publish
}

type fakeSub struct {
	s   *fakeSession
	qos byte
}

type fakeConn struct {
	nc     net.Conn
	mu     sync.Mutex
	nextID uint16
	// unacked holds the QoS 1 publishes sent and not acknowledged, by ID.
	unacked map[uint16]*packet.Publish
}

// takeUnacked returns the publishes sent on c and not acknowledged, in the
// order they were sent (fresh copies, to be sent again with new IDs).
func (c *fakeConn) takeUnacked() []*packet.Publish {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := slices.Sorted(maps.Keys(c.unacked))
	out := make([]*packet.Publish, 0, len(ids))
	for _, id := range ids {
		p := c.unacked[id]
		out = append(out, &packet.Publish{Topic: p.Topic, QoS: p.QoS, Payload: p.Payload})
	}
	c.unacked = nil
	return out
}

func (c *fakeConn) write(p packet.Packet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pub, ok := p.(*packet.Publish); ok && pub.QoS > 0 {
		c.nextID = c.nextID%math.MaxUint16 + 1
		pub.PacketID = c.nextID
		if c.unacked == nil {
			c.unacked = map[uint16]*packet.Publish{}
		}
		c.unacked[pub.PacketID] = pub
	}
	b, err := packet.Append(nil, p, packet.V311)
	if err != nil {
		panic(err)
	}
	c.nc.Write(b)
}

func startFakeBroker(t *testing.T) *fakeBroker {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBroker{t: t, ln: ln, conns: map[*fakeConn]bool{}, sessions: map[string]*fakeSession{}, subs: map[string][]fakeSub{}}
	b.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			c := &fakeConn{nc: nc}
			b.mu.Lock()
			b.conns[c] = true
			b.mu.Unlock()
			b.wg.Go(func() { b.serve(c) })
		}
	})
	t.Cleanup(b.stop)
	return b
}

func (b *fakeBroker) stop() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.nc.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// persistentSessions is the client IDs of the persistent sessions the broker
// keeps.
func (b *fakeBroker) persistentSessions() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ids []string
	for id, s := range b.sessions {
		if s.persistent {
			ids = append(ids, id)
		}
	}
	return ids
}

// dropSession forgets s and its subscriptions; b.mu is held.
func (b *fakeBroker) dropSession(id string, s *fakeSession) {
	delete(b.sessions, id)
	for topic, subs := range b.subs {
		b.subs[topic] = slices.DeleteFunc(subs, func(sub fakeSub) bool { return sub.s == s })
	}
}

// connect opens or resumes the session of a CONNECT on c, answers it, and
// sends what was queued for the session.
func (b *fakeBroker) connect(c *fakeConn, cn *packet.Connect) *fakeSession {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[cn.ClientID]
	if s != nil && s.c != nil {
		s.c.nc.Close() // a takeover
	}
	present := s != nil && !cn.CleanStart
	if !present {
		if s != nil {
			b.dropSession(cn.ClientID, s)
		}
		s = &fakeSession{}
		b.sessions[cn.ClientID] = s
	}
	s.persistent = !cn.CleanStart
	c.write(&packet.Connack{SessionPresent: present})
	for _, p := range s.queue {
		b.nqueued++
		times := 1
		if b.queued != nil {
			times = b.queued(b.nqueued)
		}
		for range times {
			c.write(&packet.Publish{Topic: p.Topic, QoS: p.QoS, Payload: p.Payload})
		}
	}
	s.queue, s.c = nil, c
	return s
}

func (b *fakeBroker) serve(c *fakeConn) {
	var s *fakeSession
	var id string
	defer func() {
		c.nc.Close()
		b.mu.Lock()
		delete(b.conns, c)
		if s != nil && s.c == c {
			s.c = nil
			if !s.persistent {
				b.dropSession(id, s)
			} else {
				s.queue = append(c.takeUnacked(), s.queue...)
			}
		}
		b.mu.Unlock()
	}()
	r := packet.NewReader(c.nc, 0)
	p, err := r.ReadPacket(0)
	if err != nil {
		return
	}
	cn, ok := p.(*packet.Connect)
	if !ok {
		b.t.Errorf("fake broker: %s before CONNECT", p.Type())
		return
	}
	id = cn.ClientID
	s = b.connect(c, cn)
	for {
		p, err := r.ReadPacket(packet.V311)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "EOF") && !strings.Contains(err.Error(), "reset") {
				b.t.Errorf("fake broker: %v", err)
			}
			return
		}
		switch p := p.(type) {
		case *packet.Subscribe:
			var codes []packet.ReasonCode
			b.mu.Lock()
			for _, sub := range p.Subscriptions {
				b.subs[sub.Filter] = append(b.subs[sub.Filter], fakeSub{s, sub.QoS})
				codes = append(codes, packet.ReasonCode(sub.QoS))
			}
			b.mu.Unlock()
			c.write(&packet.Suback{PacketID: p.PacketID, ReasonCodes: codes})
		case *packet.Publish:
			type delivery struct {
				c   *fakeConn
				qos byte
			}
			var online []delivery
			b.mu.Lock()
			for _, sub := range b.subs[p.Topic] {
				qos := min(p.QoS, sub.qos)
				switch {
				case sub.s.c != nil:
					online = append(online, delivery{sub.s.c, qos})
				case sub.s.persistent && qos > 0:
					sub.s.queue = append(sub.s.queue, &packet.Publish{Topic: p.Topic, QoS: qos, Payload: slices.Clone(p.Payload)})
				}
			}
			b.mu.Unlock()
			for _, d := range online {
				d.c.write(&packet.Publish{Topic: p.Topic, QoS: d.qos, Payload: p.Payload})
			}
			if p.QoS == 1 {
				c.write(&packet.Puback{PacketID: p.PacketID})
			}
		case *packet.Puback:
			c.mu.Lock()
			delete(c.unacked, p.PacketID)
			c.mu.Unlock()
		case *packet.Disconnect:
			return
		}
	}
}
