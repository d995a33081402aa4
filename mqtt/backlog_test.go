package mqtt_test

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/bifrost-mq/bifrost/mqtt"
	"github.com/bifrost-mq/bifrost/mqtt/auth"
	"github.com/bifrost-mq/bifrost/mqtt/packet"
)

// TestRepliesBoundTheReader: a client that floods PINGREQs and never reads
// the PINGRESPs does not grow the broker's memory: once the replies
// waiting for its socket pass the backlog, the reader stops reading from
// it (it grew by 10 MB/s until the write timeout). Closing the client ends
// the connection.
func TestRepliesBoundTheReader(t *testing.T) {
	e := startEnv(t, 1, nil)
	nc := connectNoReader(t, e.addr(0), "flood", 60)
	_ = nc.(*net.TCPConn).SetReadBuffer(4 << 10)
	// 16 MiB of PINGREQs, never reading a PINGRESP.
	pings := bytes.Repeat([]byte{0xc0, 0x00}, 8<<20)
	written := make(chan struct{})
	go func() {
		defer close(written)
		_ = nc.SetWriteDeadline(time.Now().Add(20 * time.Second))
		_, _ = nc.Write(pings)
	}()
	s := e.fronts[0]
	most := 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if n := mqtt.BacklogOf(s, auth.DefaultTenant, "flood"); n > most {
			most = n
		}
	}
	// One read's worth of PINGRESPs may land past the limit.
	if limit := mqtt.ReplyBacklog + 64<<10; most > limit || most == 0 {
		t.Fatalf("replies waiting for the client's socket reached %d bytes (limit %d)", most, limit)
	}
	nc.Close()
	<-written
}

// TestHalfSentPacketTimesOut: a 3.1.1 client without a keep-alive that
// sends the first bytes of a packet and no more is closed once the packet
// timeout passes (it held the connection forever); one that sends nothing
// stays connected (no keep-alive asks for nothing).
func TestHalfSentPacketTimesOut(t *testing.T) {
	e := startEnv(t, 1, func(c *mqtt.Config) { c.PacketTimeout = 500 * time.Millisecond })
	half := connectNoReader(t, e.addr(0), "half", 0)
	quiet := connectNoReader(t, e.addr(0), "quiet", 0)
	// A PUBLISH's fixed header announcing 100 bytes, then 3 of them.
	if _, err := half.Write([]byte{0x30, 100, 0, 1, 't'}); err != nil {
		t.Fatal(err)
	}
	_ = half.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := half.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the half-sent packet's connection got %d bytes instead of closing", n)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection with a half-sent packet is still open after 10 s")
	}
	// The quiet one is still served.
	if _, err := quiet.Write([]byte{0xc0, 0}); err != nil {
		t.Fatal(err)
	}
	resp := make([]byte, 2)
	_ = quiet.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := quiet.Read(resp); err != nil || resp[0] != 0xd0 {
		t.Fatalf("PINGRESP to the quiet client: % x %v", resp, err)
	}
}

// connectNoReader connects a 3.1.1 client with a clean session and reads
// its CONNACK; the test reads the rest itself, or nothing (dialRaw's
// client reads everything the server sends).
func connectNoReader(t *testing.T, addr, clientID string, keepAlive uint16) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	b, _ := packet.Append(nil, &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, ClientID: clientID, CleanStart: true, KeepAlive: keepAlive}, packet.V311)
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Read(ack); err != nil || ack[0] != 0x20 {
		t.Fatalf("CONNACK: % x %v", ack, err)
	}
	return nc
}
