package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt/packet"
	"github.com/bifrost-mq/bifrost/ranges/rangestest"
)

// proc is a bifrost process started by a test.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(t *testing.T, bin string, logName string, args ...string) *proc {
	t.Helper()
	return startProcIn(t, bin, t.TempDir(), logName, args...)
}

// startProcIn is startProc with the log in dir.
func startProcIn(t *testing.T, bin, dir, logName string, args ...string) *proc {
	t.Helper()
	// Processes with a frontend serve the HTTP API on a fixed default
	// address, which many at once cannot share: off unless a test asks.
	if len(args) > 0 && (args[0] == "standalone" || args[0] == "frontend") && !slices.Contains(args, "--api") {
		args = append(args, "--api", "")
	}
	log, err := os.Create(filepath.Join(dir, logName))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); log.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("%s:\n%s", logName, lastLines(string(b), 30))
		}
	})
	return p
}

func lastLines(s string, n int) string {
	lines := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			lines++
			if lines > n {
				return s[i+1:]
			}
		}
	}
	return s
}

func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// client is a minimal MQTT 3.1.1 client on the project's codec.
type client struct {
	t  *testing.T
	nc net.Conn
	r  *packet.Reader
}

func dialMQTT(t *testing.T, addr, id string, within time.Duration) *client {
	t.Helper()
	return dialMQTTSession(t, addr, id, true, within)
}

// dialMQTTSession is dialMQTT with the clean session flag given: false
// makes a persistent session, whose messages go through its inbox.
func dialMQTTSession(t *testing.T, addr, id string, clean bool, within time.Duration) *client {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		c, err := tryMQTT(addr, id, clean)
		if err == nil {
			c.t = t
			t.Cleanup(func() { c.nc.Close() })
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect to %s: %v", addr, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tryMQTT(addr, id string, clean bool) (*client, error) {
	nc, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	c := &client{nc: nc, r: packet.NewReader(nc, 0)}
	b, _ := packet.Append(nil, &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, ClientID: id, CleanStart: clean, KeepAlive: 30}, packet.V311)
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(b); err != nil {
		nc.Close()
		return nil, err
	}
	p, err := c.r.ReadPacket(packet.V311)
	if err != nil {
		nc.Close()
		return nil, err
	}
	if ack, ok := p.(*packet.Connack); !ok || ack.ReasonCode != 0 {
		nc.Close()
		return nil, fmt.Errorf("CONNACK %+v", p)
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}

func (c *client) write(p packet.Packet) {
	c.t.Helper()
	b, err := packet.Append(nil, p, packet.V311)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) read() packet.Packet {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	p, err := c.r.ReadPacket(packet.V311)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return p
}

func (c *client) subscribe(filter string) {
	c.t.Helper()
	c.write(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: filter, QoS: 1}}})
	if sa, ok := c.read().(*packet.Suback); !ok || sa.ReasonCodes[0] != 1 {
		c.t.Fatalf("SUBACK %+v", sa)
	}
}

func (c *client) publish(topic string, id uint16, payload string) {
	c.t.Helper()
	c.write(&packet.Publish{Topic: topic, QoS: 1, PacketID: id, Payload: []byte(payload)})
	for {
		switch p := c.read().(type) {
		case *packet.Puback:
			return
		case *packet.Publish:
			c.write(&packet.Puback{PacketID: p.PacketID})
		}
	}
}

func (c *client) receive() string {
	c.t.Helper()
	for {
		if p, ok := c.read().(*packet.Publish); ok {
			c.write(&packet.Puback{PacketID: p.PacketID})
			return string(p.Payload)
		}
	}
}

// TestFrontendProcessKilled runs the real binary: a standalone store and two
// `bifrost frontend --join` processes. A client on frontend 1 reaches a
// subscriber on frontend 2; frontend 2 is killed (SIGKILL) with its client
// connected; the client reconnects to frontend 1 and carries on.
func TestFrontendProcessKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	storeGossip := rangestest.FreeAddr(t)
	startProc(t, bin, "store.log", "standalone", "--data", filepath.Join(t.TempDir(), "data"),
		"--gossip", storeGossip, "--raft", rangestest.FreeAddr(t), "--grpc", rangestest.FreeAddr(t),
		"--http", "", "--api", "", "--mqtt", rangestest.FreeAddr(t), "--mqtt-ws", "", "--raft-rtt-ms", "20")
	var mqttAddrs []string
	var fronts []*proc
	for i := 0; i < 2; i++ {
		addr := rangestest.FreeAddr(t)
		mqttAddrs = append(mqttAddrs, addr)
		fronts = append(fronts, startProc(t, bin, fmt.Sprintf("frontend%d.log", i), "frontend", "--join", storeGossip,
			"--gossip", rangestest.FreeAddr(t), "--grpc", rangestest.FreeAddr(t), "--http", "", "--api", "",
			"--mqtt", addr, "--mqtt-ws", ""))
	}
	sub := dialMQTT(t, mqttAddrs[1], "sub", 60*time.Second)
	sub.subscribe("k/#")
	pub := dialMQTT(t, mqttAddrs[0], "pub", 60*time.Second)
	pub.publish("k/1", 1, "before")
	if got := sub.receive(); got != "before" {
		t.Fatalf("before the kill: %q", got)
	}

	fronts[1].kill()
	sub = dialMQTT(t, mqttAddrs[0], "sub", 10*time.Second)
	sub.subscribe("k/#")
	for i := 0; i < 5; i++ {
		pub.publish("k/2", uint16(i+2), fmt.Sprint("after", i))
	}
	for i := 0; i < 5; i++ {
		if got := sub.receive(); got != fmt.Sprint("after", i) {
			t.Fatalf("after the kill: message %d: %q", i, got)
		}
	}
}
