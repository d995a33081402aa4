package main

import (
	"bytes"
	"errors"
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

// Every scenario runs end to end against a minimal in-process broker, and
// compare reads what a run wrote.
func TestRunAgainstFakeBroker(t *testing.T) {
	defer goleak.VerifyNone(t)
	b := startFakeBroker(t)
	out := filepath.Join(t.TempDir(), "out.json")
	var stdout, stderr bytes.Buffer
	args := []string{"--addr", b.ln.Addr().String(), "--pid", strconv.Itoa(os.Getpid()), "--name", "fake",
		"--json", out, "--duration", "200ms", "--warmup", "50ms", "--pause", "0", "--settle", "10ms",
		"--pairs", "2", "--fanout", "3", "--dialers", "2", "--idle", "20", "--window", "10", "--inflight", "5"}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}
	b.stop()
	rep, err := loadReport(out)
	if err != nil {
		t.Fatal(err)
	}
	var ran []string
	for _, r := range rep.Results {
		ran = append(ran, r.Scenario)
		if r.Scenario != "idle" && (r.Rate <= 0 || r.P99Ms <= 0 || r.GeneratorCPU == nil || r.BrokerCPU == nil) {
			t.Errorf("%s: %+v", r.Scenario, r)
		}
		perTopic := int64(1)
		if r.Scenario == "fanout" {
			perTopic = 3
		}
		if r.Lost != 0 || r.Sent*perTopic != r.Received {
			t.Errorf("%s: %d published, %d received, %d lost", r.Scenario, r.Sent, r.Received, r.Lost)
		}
	}
	if !slices.Equal(ran, scenarioNames()) {
		t.Errorf("ran %v, want %v", ran, scenarioNames())
	}
	stdout.Reset()
	if code := run([]string{"compare", out, out}, &stdout, &stderr); code != 0 {
		t.Fatalf("compare: exit %d: %s", code, &stderr)
	}
	if !strings.Contains(stdout.String(), "QoS 1 throughput") || !strings.Contains(stdout.String(), "1.00") {
		t.Errorf("compare printed:\n%s", &stdout)
	}
}

// fakeBroker is just enough of an MQTT 3.1.1 broker for the generator:
// exact-topic subscriptions, QoS 0 and 1, a close after DISCONNECT.
type fakeBroker struct {
	t     *testing.T
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[*fakeConn]bool
	subs  map[string][]fakeSub
}

type fakeSub struct {
	c   *fakeConn
	qos byte
}

type fakeConn struct {
	nc     net.Conn
	mu     sync.Mutex
	nextID uint16
}

func (c *fakeConn) write(p packet.Packet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pub, ok := p.(*packet.Publish); ok && pub.QoS > 0 {
		c.nextID = c.nextID%math.MaxUint16 + 1
		pub.PacketID = c.nextID
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
	b := &fakeBroker{t: t, ln: ln, conns: map[*fakeConn]bool{}, subs: map[string][]fakeSub{}}
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

func (b *fakeBroker) serve(c *fakeConn) {
	defer func() {
		c.nc.Close()
		b.mu.Lock()
		delete(b.conns, c)
		for topic, subs := range b.subs {
			b.subs[topic] = slices.DeleteFunc(subs, func(s fakeSub) bool { return s.c == c })
		}
		b.mu.Unlock()
	}()
	r := packet.NewReader(c.nc, 0)
	if _, err := r.ReadPacket(0); err != nil {
		return
	}
	c.write(&packet.Connack{})
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
			for _, s := range p.Subscriptions {
				b.subs[s.Filter] = append(b.subs[s.Filter], fakeSub{c, s.QoS})
				codes = append(codes, packet.ReasonCode(s.QoS))
			}
			b.mu.Unlock()
			c.write(&packet.Suback{PacketID: p.PacketID, ReasonCodes: codes})
		case *packet.Publish:
			b.mu.Lock()
			subs := slices.Clone(b.subs[p.Topic])
			b.mu.Unlock()
			for _, s := range subs {
				s.c.write(&packet.Publish{Topic: p.Topic, QoS: min(p.QoS, s.qos), Payload: p.Payload})
			}
			if p.QoS == 1 {
				c.write(&packet.Puback{PacketID: p.PacketID})
			}
		case *packet.Disconnect:
			return
		}
	}
}
